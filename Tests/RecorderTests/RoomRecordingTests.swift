import DTLS
import Foundation
import RTP
import SFU
import Testing
import TestSupport
@testable import Recorder
import WebRTCClient

/// A recording of a real in-memory room (RoomHarness: real transports, fake clock): what the file
/// holds, and where it places audio and video from the publisher's sender reports.
@Suite("Room recording, in memory", .serialized)
struct RoomRecordingTests {
    static let audioSSRC: UInt32 = 0xA0A0_A0A0
    static let videoSSRC: UInt32 = 0xB0B0_B0B0

    /// RTP packets (≤ 1000-byte payloads) of one VP8 frame.
    static func packetize(_ frame: [UInt8], seq: inout UInt16, ts: UInt32) -> [RTPPacket] {
        var out: [RTPPacket] = []
        var offset = 0
        while offset < frame.count {
            let end = min(frame.count, offset + 1000)
            out.append(RTPPacket(payloadType: 96, sequenceNumber: seq, timestamp: ts, ssrc: videoSSRC, marker: end == frame.count,
                                 payload: [offset == 0 ? 0x10 : 0x00] + frame[offset..<end]))
            seq &+= 1
            offset = end
        }
        return out
    }

    @Test func recordsBothTracksOnTheSenderReportTimeline() async throws {
        let h = try RoomHarness()
        let pub = try h.join("pub")
        h.publish(pub, streams: [.init(kind: .audio, ssrc: Self.audioSSRC), .init(kind: .video, ssrc: Self.videoSSRC)])
        try #require(h.connectAll(), "transports did not connect")
        // The publisher's clock: at NTP 5000.25 s, audio RTP is 10 000; at 5000.75 s video RTP is 700 000
        // + 45 000 (so at 5000.25 s it was 700 000): the fractions of the NTP times matter.
        let ntp: UInt64 = 5000 << 32 | 1 << 30
        pub.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: Self.audioSSRC, ntpTime: ntp, rtpTime: 10_000, packetCount: 0, octetCount: 0)),
                                 .senderReport(SenderReport(ssrc: Self.videoSSRC, ntpTime: ntp + (1 << 31), rtpTime: 745_000, packetCount: 0, octetCount: 0))])
        h.run(steps: 5)
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_test", directory: dir)
        recording.start(in: h.room)
        #expect(pub.signals.contains(.recordingStarted(id: "rec_test")))

        // 3 s of audio from NTP 5000.0 and video from NTP 5000.5 (it starts half a second later),
        // the audio muted between 1.5 s and 2.0 s. The video also arrives 150 ms later than its
        // timestamps say (another path, a slower encoder): only the SR mapping puts it at 500 ms.
        let video = try TestMedia.vp8Frames(count: 75, width: 160, height: 120, keyframeEvery: 30)
        let audio = try TestMedia.opusPackets(count: 150)
        var videoSeq: UInt16 = 1000
        var nextVideo = 0, nextAudio = 0
        for step in 0..<330 {
            let ms = step * 10
            if ms == 1500 { #expect(h.room.setEnabled(peerID: pub.info.peerID, kind: .audio, enabled: false, nowNanos: h.now) == .applied) }
            if ms == 2000 { #expect(h.room.setEnabled(peerID: pub.info.peerID, kind: .audio, enabled: true, nowNanos: h.now) == .applied) }
            while nextAudio < audio.count, nextAudio * 20 <= ms {
                h.sendRTP(pub, RTPPacket(payloadType: 111, sequenceNumber: UInt16(nextAudio), timestamp: 10_000 + UInt32(nextAudio) * 960,
                                         ssrc: Self.audioSSRC, payload: audio[nextAudio]))
                nextAudio += 1
            }
            while nextVideo < video.count, 650 + nextVideo * 100 / 3 <= ms {
                let ts = 700_000 + 45_000 + UInt32(nextVideo) * 3000
                for p in Self.packetize(video[nextVideo].data, seq: &videoSeq, ts: ts) { h.sendRTP(pub, p) }
                nextVideo += 1
            }
            h.run()
        }
        let pending = recording.stop(in: h.room)
        #expect(pub.signals.contains(.recordingStopped(id: "rec_test")))
        try #require(pending.count == 1)
        let (file, error) = await pending[0].finalize()
        #expect(error == nil)
        #expect(file.trackKinds == ["video", "audio"] && file.width == 160 && file.height == 120)
        #expect(file.videoFrames == 75)
        #expect(file.audioFrames == 150 - 25, "the 0.5 s of mute is not recorded")

        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        // Packet times (ms): audio from 0, video from 500; after the mute, audio resumes at 2000.
        let packets = runTool(["ffprobe", "-v", "error", "-show_entries", "packet=stream_index,pts", "-of", "csv=p=0", file.path]).output
            .split(separator: "\n").compactMap { line -> (Int, Int)? in
                let f = line.split(separator: ",")
                guard f.count == 2, let s = Int(f[0]), let t = Int(f[1]) else { return nil }
                return (s, t)
            }
        let videoTimes = packets.filter { $0.0 == 0 }.map(\.1)
        let audioTimes = packets.filter { $0.0 == 1 }.map(\.1)
        // Opus shows its 6.5 ms pre-skip as a -7 ms shift in ffprobe.
        #expect(audioTimes.first.map { abs($0 + 7) <= 1 } == true, "\(audioTimes.prefix(3))")
        #expect(videoTimes.first.map { abs($0 - 500) <= 1 } == true, "\(videoTimes.prefix(3))")
        #expect(zip(videoTimes, videoTimes.dropFirst()).allSatisfy { $1 - $0 >= 33 && $1 - $0 <= 34 })
        let resumed = audioTimes.first { $0 > 1480 }
        #expect(resumed.map { abs($0 + 7 - 2000) <= 1 } == true, "audio after the mute at \(resumed ?? -1)")
    }

    /// The publisher's clock steps by an hour mid-recording (NTP resync, sleep/wake, or forged SRs
    /// that agree with each other): the sender-report filter takes the new mapping after three SRs,
    /// and the file's timeline must not jump with it (it read 289,562,766 s once).
    @Test func aPublisherClockStepDoesNotMoveTheTimeline() async throws {
        let h = try RoomHarness()
        let pub = try h.join("pub")
        h.publish(pub, streams: [.init(kind: .audio, ssrc: Self.audioSSRC)])
        try #require(h.connectAll(), "transports did not connect")
        let ntp: UInt64 = 9000 << 32
        func sr(atMs ms: Int, stepSeconds: UInt64) {
            let ntpTime = ntp &+ (stepSeconds << 32) &+ (UInt64(ms) << 32) / 1000
            pub.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: Self.audioSSRC, ntpTime: ntpTime, rtpTime: UInt32(ms * 48),
                                                                packetCount: 0, octetCount: 0))])
        }
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_step", directory: dir)
        recording.start(in: h.room)
        let audio = try TestMedia.opusPackets(count: 200)
        for step in 0..<400 {
            let ms = step * 10
            if ms % 20 == 0 {
                let i = ms / 20
                h.sendRTP(pub, RTPPacket(payloadType: 111, sequenceNumber: UInt16(i), timestamp: UInt32(i) * 960, ssrc: Self.audioSSRC, payload: audio[i]))
            }
            // SRs every 500 ms on the old clock, then every 250 ms an hour ahead (taken at the third).
            if ms < 2000, ms % 500 == 0 { sr(atMs: ms, stepSeconds: 0) }
            if ms >= 2000, ms % 250 == 0 { sr(atMs: ms, stepSeconds: 3600) }
            h.run()
        }
        let pending = recording.stop(in: h.room)
        try #require(pending.count == 1)
        let (file, error) = await pending[0].finalize()
        #expect(error == nil)
        #expect(file.audioFrames == 200)
        #expect(file.durationMs >= 3900 && file.durationMs <= 4100, "duration \(file.durationMs) ms")
        let times = runTool(["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "packet=pts", "-of", "csv=p=0", file.path])
            .output.split(separator: "\n").compactMap { Int($0) }
        #expect(times.count == 200)
        let gaps = zip(times, times.dropFirst()).map { $1 - $0 }
        #expect(gaps.allSatisfy { $0 >= 19 && $0 <= 21 }, "gaps outside 20 ms: \(gaps.filter { $0 < 19 || $0 > 21 })")
    }

    /// A participant that starts with audio only and turns its camera on during the recording: the
    /// file has both (the header declares a video track for anyone who may publish).
    @Test func aCameraTurnedOnLaterIsRecorded() async throws {
        let h = try RoomHarness()
        let pub = try h.join("pub")
        h.publish(pub, streams: [.init(kind: .audio, ssrc: Self.audioSSRC)])
        try #require(h.connectAll(), "transports did not connect")
        let ntp: UInt64 = 7000 << 32
        pub.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: Self.audioSSRC, ntpTime: ntp, rtpTime: 0, packetCount: 0, octetCount: 0))])
        h.run(steps: 3)
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_late", directory: dir)
        recording.start(in: h.room)
        let audio = try TestMedia.opusPackets(count: 150)
        let video = try TestMedia.vp8Frames(count: 45, width: 160, height: 120, keyframeEvery: 45)
        var videoSeq: UInt16 = 1
        var nextVideo = 0
        for step in 0..<300 {
            let ms = step * 10
            if ms % 20 == 0 {
                let i = ms / 20
                h.sendRTP(pub, RTPPacket(payloadType: 111, sequenceNumber: UInt16(i), timestamp: UInt32(i) * 960, ssrc: Self.audioSSRC, payload: audio[i]))
            }
            if ms == 1000 {
                // The camera: a re-offer with a video section, and its first SR (NTP 7001 s = RTP 90 000).
                h.publish(pub, streams: [.init(kind: .audio, ssrc: Self.audioSSRC), .init(kind: .video, ssrc: Self.videoSSRC)])
                pub.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: Self.videoSSRC, ntpTime: ntp + (1 << 32), rtpTime: 90_000,
                                                                    packetCount: 0, octetCount: 0))])
            }
            while ms >= 1500, nextVideo < video.count, 1500 + nextVideo * 100 / 3 <= ms {
                for p in Self.packetize(video[nextVideo].data, seq: &videoSeq, ts: 90_000 + 45_000 + UInt32(nextVideo) * 3000) { h.sendRTP(pub, p) }
                nextVideo += 1
            }
            h.run()
        }
        let pending = recording.stop(in: h.room)
        try #require(pending.count == 1)
        let (file, error) = await pending[0].finalize()
        #expect(error == nil)
        #expect(file.trackKinds == ["video", "audio"] && file.videoFrames == 45, "\(file)")
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        let first = runTool(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts", "-of", "csv=p=0", file.path])
            .output.split(separator: "\n").first.flatMap { Int($0) }
        #expect(first.map { abs($0 - 1500) <= 1 } == true, "the first video frame at \(first ?? -1) ms, expected 1500")
    }

    /// A room that requires consent (docs/RECORDING.md "Consent"): of two audio publishers, the one
    /// that never consented has no file; the other's first file ends where it withdrew (1 s in) and
    /// a second one starts where it granted again (2 s in); everyone was told each answer.
    @Test func consentRequiredRecordsOnlyWhileGranted() async throws {
        let h = try RoomHarness()
        h.room.recordingConsentRequired = true
        let yes = try h.join("yes"), never = try h.join("never")
        let ssrcs: [UInt32] = [0xA1A1_A1A1, 0xA2A2_A2A2]
        for (peer, ssrc) in zip([yes, never], ssrcs) { h.publish(peer, streams: [.init(kind: .audio, ssrc: ssrc)]) }
        try #require(h.connectAll(), "transports did not connect")
        for (peer, ssrc) in zip([yes, never], ssrcs) {
            peer.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: ssrc, ntpTime: 7000 << 32, rtpTime: 0, packetCount: 0, octetCount: 0))])
        }
        h.run(steps: 3)
        #expect(!h.room.mayRecord(yes.info) && !h.room.mayRecord(never.info))
        let granted = h.room.setRecordingConsent(peerID: yes.info.peerID, granted: true, atMillis: 1_000, nowNanos: h.now)
        #expect(granted == RecordingConsent(userID: "yes", granted: true, atMillis: 1_000))
        #expect(h.room.setRecordingConsent(peerID: yes.info.peerID, granted: true, atMillis: 1_001, nowNanos: h.now) == nil, "a repeated answer changes nothing")
        #expect(never.signals.contains(.recordingConsent(recordingID: nil, userID: "yes", granted: true)))
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_consent", directory: dir)
        recording.start(in: h.room)
        let audio = try TestMedia.opusPackets(count: 150)
        for step in 0..<300 {
            let ms = step * 10
            if ms == 1000 { h.room.setRecordingConsent(peerID: yes.info.peerID, granted: false, atMillis: 2_000, nowNanos: h.now) }
            if ms == 2000 { h.room.setRecordingConsent(peerID: yes.info.peerID, granted: true, atMillis: 3_000, nowNanos: h.now) }
            if ms % 20 == 0 {
                let i = ms / 20
                for (peer, ssrc) in zip([yes, never], ssrcs) {
                    h.sendRTP(peer, RTPPacket(payloadType: 111, sequenceNumber: UInt16(i), timestamp: UInt32(i) * 960, ssrc: ssrc, payload: audio[i]))
                }
            }
            h.run()
        }
        #expect(never.signals.contains(.recordingConsent(recordingID: "rec_consent", userID: "yes", granted: false)))
        let pending = recording.stop(in: h.room)
        var files: [RecordedFile] = []
        for p in pending { files.append(await p.finalize().0) }
        #expect(files.allSatisfy { $0.userID == "yes" }, "\(files.map(\.userID))")
        try #require(files.count == 2, "\(files)")
        #expect(Set(files.map(\.path)).count == 2, "two files, two names: \(files.map(\.fileName))")
        let frames = files.map(\.audioFrames).sorted()
        #expect(frames[0] >= 45 && frames[0] <= 52, "the file before the withdrawal: \(frames)")
        #expect(frames[1] >= 45 && frames[1] <= 52, "the file after the new grant: \(frames)")
        guard case .joined(_, _, _, _, let consents)? = h.room.joinedSignal(peerID: never.info.peerID) else {
            Issue.record("no joined signal")
            return
        }
        #expect(consents == [RecordingConsent(userID: "yes", granted: true, atMillis: 3_000)])
    }

    /// A simulcast camera (two layers, RTP timestamps on different bases) whose top layer stops for
    /// 1.7 s and comes back mid-GOP: the recording moves to the low layer once the top one has been
    /// silent for a second (from the low layer's next keyframe), and back to the top one at its
    /// next keyframe; every frame sits at its capture time, each stream placed by its own SRs.
    @Test func followsASimulcastCameraDownAndBackUp() async throws {
        let h = try RoomHarness()
        let pub = try h.join("pub")
        h.publishSimulcast(pub, audioSSRC: Self.audioSSRC, rids: ["q", "f"])
        try #require(h.connectAll(), "transports did not connect")
        let ssrcs: [UInt32] = [0xC000_0001, 0xC000_0002]
        let bases: [UInt32] = [1_000_000, 3_000_000_000]
        let frames = try [(160, 120), (320, 240)].map { try TestMedia.vp8Frames(count: 120, width: $0.0, height: $0.1, keyframeEvery: 15) }
        var seqs: [UInt16] = [100, 30_000]
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_sim", directory: dir)
        recording.start(in: h.room)
        // Frame i (30 fps) is captured at NTP 9000 s + i/30 s, RTP base + 3000 i on each layer.
        func senderReports(frame i: Int) {
            let ntp = (UInt64(9000) << 32) + UInt64(i) * (UInt64(1) << 32) / 30
            pub.publisher?.sendRTCP((0..<2).map { .senderReport(SenderReport(ssrc: ssrcs[$0], ntpTime: ntp, rtpTime: bases[$0] &+ UInt32(i) * 3000,
                                                                                packetCount: 1, octetCount: 1)) })
        }
        let topAbsent = 30..<80  // 1.0 s to 2.67 s; frame 80 is not a keyframe (they are every 15)
        func topLayerRequests() -> Int {
            pub.publisherRTCP.reduce(0) { n, p in if case .pli(let r) = p, r.mediaSSRC == ssrcs[1] { n + 1 } else { n } }
        }
        var requestsBeforeReturn = 0
        var next = 0
        for step in 0..<400 {
            let ms = step * 10
            while next < 120, next * 100 / 3 <= ms {
                if next == topAbsent.upperBound { requestsBeforeReturn = topLayerRequests() }
                for layer in 0..<2 where !(layer == 1 && topAbsent.contains(next)) {
                    let data = frames[layer][next].data
                    var offset = 0
                    while offset < data.count {
                        let end = min(data.count, offset + 1000)
                        var packet = RTPPacket(payloadType: 96, sequenceNumber: seqs[layer], timestamp: bases[layer] &+ UInt32(next) * 3000,
                                               ssrc: ssrcs[layer], marker: end == data.count, payload: [offset == 0 ? 0x10 : 0x00] + data[offset..<end])
                        try packet.setExtensions([RTPHeaderExtension(id: RoomHarness.ridExtensionID, value: Array(["q", "f"][layer].utf8)),
                                                  RTPHeaderExtension(id: ClientSDP.midExtensionID, value: Array("1".utf8))])
                        h.sendRTP(pub, packet)
                        seqs[layer] &+= 1
                        offset = end
                    }
                }
                if next % 30 == 0 { senderReports(frame: next) }
                next += 1
            }
            h.run()
        }
        // The top layer came back mid-GOP: the recorder asked for its keyframe.
        #expect(topLayerRequests() > requestsBeforeReturn)
        let pending = recording.stop(in: h.room)
        try #require(pending.count == 1)
        let (file, error) = await pending[0].finalize()
        #expect(error == nil)
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        let decoded = runTool(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=pts,width", "-of", "csv=p=0", file.path]).output
            .split(separator: "\n").compactMap { line -> (pts: Int, width: Int)? in
                let f = line.split(separator: ",")
                guard f.count == 2, let t = Int(f[0]), let w = Int(f[1]) else { return nil }
                return (t, w)
            }
        // Top layer frames 0-29, the low layer from its keyframe at frame 60 (2 s; the top layer
        // counts as stopped at 1.97 s), the top layer again from its keyframe at frame 90 (3 s).
        let expected = (0..<30).map { ($0, 320) } + (60..<90).map { ($0, 160) } + (90..<120).map { ($0, 320) }
        #expect(decoded.count == expected.count, "\(decoded.count) frames decoded")
        for (got, want) in zip(decoded, expected) {
            #expect(got.width == want.1 && abs(got.pts - want.0 * 100 / 3) <= 1, "frame \(want.0): \(got.width) px at \(got.pts) ms")
        }
    }
}
