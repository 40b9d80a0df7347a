import DTLS
import Foundation
import RTP
import SFU
import Testing
import TestSupport
@testable import Recorder
import WebRTCClient

/// A participant who shares its screen during a `tracks` recording: the screen share goes to a file
/// of its own (video only, `source: "screen"`), beside its camera and microphone file.
@Suite("Screen share recording, in memory", .serialized)
struct ScreenRecordingTests {
    static let audioSSRC: UInt32 = 0xA1A1_A1A1
    static let cameraSSRC: UInt32 = 0xB1B1_B1B1
    static let screenSSRC: UInt32 = 0xC1C1_C1C1

    static func packetize(_ frame: [UInt8], ssrc: UInt32, seq: inout UInt16, ts: UInt32) -> [RTPPacket] {
        var out: [RTPPacket] = []
        var offset = 0
        while offset < frame.count {
            let end = min(frame.count, offset + 1000)
            out.append(RTPPacket(payloadType: 96, sequenceNumber: seq, timestamp: ts, ssrc: ssrc, marker: end == frame.count,
                                 payload: [offset == 0 ? 0x10 : 0x00] + frame[offset..<end]))
            seq &+= 1
            offset = end
        }
        return out
    }

    @Test func aScreenShareGetsItsOwnFile() async throws {
        let h = try RoomHarness()
        let pub = try h.join("doc")
        let camera: [ClientSDP.Stream] = [.init(kind: .audio, ssrc: Self.audioSSRC), .init(kind: .video, ssrc: Self.cameraSSRC)]
        h.publish(pub, streams: camera)
        try #require(h.connectAll(), "transports did not connect")
        let ntp: UInt64 = 6000 << 32
        pub.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: Self.audioSSRC, ntpTime: ntp, rtpTime: 0, packetCount: 0, octetCount: 0)),
                                 .senderReport(SenderReport(ssrc: Self.cameraSSRC, ntpTime: ntp, rtpTime: 0, packetCount: 0, octetCount: 0))])
        h.run(steps: 3)
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_screen", directory: dir)
        recording.start(in: h.room)

        let audio = try TestMedia.opusPackets(count: 150)
        let cameraFrames = try TestMedia.vp8Frames(count: 90, width: 160, height: 120, keyframeEvery: 30)
        let screenFrames = try TestMedia.vp8Frames(count: 45, width: 320, height: 240, keyframeEvery: 45)
        var cameraSeq: UInt16 = 1, screenSeq: UInt16 = 5000
        var nextCamera = 0, nextScreen = 0
        for step in 0..<300 {
            let ms = step * 10
            if ms % 20 == 0 {
                let i = ms / 20
                h.sendRTP(pub, RTPPacket(payloadType: 111, sequenceNumber: UInt16(i), timestamp: UInt32(i) * 960, ssrc: Self.audioSSRC, payload: audio[i]))
            }
            while nextCamera < cameraFrames.count, nextCamera * 100 / 3 <= ms {
                for p in Self.packetize(cameraFrames[nextCamera].data, ssrc: Self.cameraSSRC, seq: &cameraSeq, ts: UInt32(nextCamera) * 3000) { h.sendRTP(pub, p) }
                nextCamera += 1
            }
            if ms == 1000 {
                // As a client shares its screen: `screen_share {enabled: true}`, then a re-offer with a new video section.
                h.room.screenShare(peerID: pub.info.peerID, enabled: true)
                h.publish(pub, streams: camera + [.init(kind: .video, ssrc: Self.screenSSRC)])
            }
            while ms >= 1500, nextScreen < screenFrames.count, 1500 + nextScreen * 100 / 3 <= ms {
                for p in Self.packetize(screenFrames[nextScreen].data, ssrc: Self.screenSSRC, seq: &screenSeq, ts: 77_000 + UInt32(nextScreen) * 3000) {
                    h.sendRTP(pub, p)
                }
                nextScreen += 1
            }
            h.run()
        }
        let screenTrack = h.room.publishedTracks().first { $0.1.source == .screen }
        #expect(screenTrack != nil, "the server did not take the new video section as the screen")
        let pending = recording.stop(in: h.room)
        try #require(pending.count == 2, "\(pending.map(\.file))")
        var files: [String: RecordedFile] = [:]
        for p in pending {
            let (file, error) = await p.finalize()
            #expect(error == nil)
            files[file.source] = file
        }
        let cam = try #require(files["camera"]), screen = try #require(files["screen"])
        #expect(cam.trackKinds == ["video", "audio"] && cam.width == 160 && cam.videoFrames == 90 && cam.audioFrames == 150, "\(cam)")
        #expect(cam.fileName == "doc-pe_doc.webm")
        #expect(screen.trackKinds == ["video"] && screen.width == 320 && screen.height == 240 && screen.videoFrames == 45, "\(screen)")
        #expect(screen.fileName == "doc-pe_doc-screen.webm" && screen.format == "webm" && screen.videoCodec == "vp8" && screen.audioCodec == nil)
        for file in [cam, screen] {
            let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
            #expect(decode.status == 0 && decode.output.isEmpty, "\(file.fileName): \(decode.output)")
        }
        // The screen file holds one video stream only, 320 px wide.
        let streams = runTool(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,width", "-of", "csv=p=0", screen.path]).output
        #expect(streams.split(separator: "\n") == ["video,320"], "\(streams)")
    }
}

extension ScreenRecordingTests {
    /// A share stopped and started again (a new producer: other SSRC, other RTP clock) goes on in
    /// the same screen file, each part at its own time.
    @Test func aShareStartedAgainGoesOnInTheSameFile() async throws {
        let h = try RoomHarness()
        let pub = try h.join("doc")
        let camera: [ClientSDP.Stream] = [.init(kind: .audio, ssrc: Self.audioSSRC)]
        h.publish(pub, streams: camera)
        try #require(h.connectAll(), "transports did not connect")
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_reshare", directory: dir)
        recording.start(in: h.room)
        let frames = try TestMedia.vp8Frames(count: 30, width: 320, height: 240, keyframeEvery: 30)
        var seq: UInt16 = 1
        // Part 1: 0.0-1.0 s on SSRC A; part 2: 2.0-3.0 s on SSRC B with an unrelated RTP base.
        for (part, ssrc, base) in [(0, Self.screenSSRC, UInt32(1000)), (1, Self.screenSSRC &+ 1, UInt32(2_000_000_000))] {
            h.room.screenShare(peerID: pub.info.peerID, enabled: true)
            h.publish(pub, streams: camera + [.init(kind: .video, ssrc: ssrc)])
            h.run(steps: 2)
            for (i, f) in frames.enumerated() {
                for p in Self.packetize(f.data, ssrc: ssrc, seq: &seq, ts: base &+ UInt32(i) * 3000) { h.sendRTP(pub, p) }
                h.run(steps: i % 3 == 2 ? 4 : 3)  // 33.3 ms a frame
            }
            h.room.screenShare(peerID: pub.info.peerID, enabled: false)
            h.publish(pub, streams: camera)
            h.run(steps: part == 0 ? 100 : 5)
        }
        let pending = recording.stop(in: h.room)
        let screen = try #require(pending.first { $0.file.source == "screen" })
        let (file, error) = await screen.finalize()
        #expect(error == nil && file.videoFrames == 60, "\(file)")
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        let pts = runTool(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts", "-of", "csv=p=0", file.path])
            .output.split(separator: "\n").compactMap { Int($0) }
        try #require(pts.count == 60)
        // The second part starts about 2 s after the first (1 s of share, 1 s without), not on top of it.
        #expect(abs(pts[30] - pts[0] - 2020) <= 60, "part 2 at \(pts[30] - pts[0]) ms")
        #expect(zip(pts, pts.dropFirst()).allSatisfy { $1 > $0 })
    }
}

/// A participant that leaves during a recording gets its file closed at once (issue 19 item 10).
@Suite("Recording: departed participants", .serialized)
struct DepartedParticipantTests {
    /// Descriptors of this process open on files under `dir`.
    static func openFiles(under dir: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) ?? "").hasPrefix(dir) }.count
    }

    /// The count once it reaches `expected` or after 2 s: files are opened and closed on the
    /// sink's own queue, a moment after the room's loop asked for it.
    static func openFiles(under dir: String, settlingAt expected: Int) async -> Int {
        for _ in 0..<200 {
            if openFiles(under: dir) == expected { return expected }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return openFiles(under: dir)
    }

    @Test func thirtyJoinLeaveCyclesLeaveNoFileOpen() async throws {
        let h = try RoomHarness(maxParticipants: 40)
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_cycles", directory: dir)
        recording.start(in: h.room)
        let frames = try TestMedia.vp8Frames(count: 3, width: 64, height: 48, keyframeEvery: 30)
        let stay = try h.join("stay")
        h.publish(stay, streams: [.init(kind: .video, ssrc: 0xE000_0000)])
        try #require(h.connectAll(), "transports did not connect")
        stay.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: 0xE000_0000, ntpTime: 9000 << 32, rtpTime: 0, packetCount: 0, octetCount: 0))])
        h.run(steps: 3)
        // A second of video, past the 400 ms hold window: the staying participant's file is open.
        var staySeq: UInt16 = 1
        for (i, f) in try TestMedia.vp8Frames(count: 30, width: 64, height: 48, keyframeEvery: 30).enumerated() {
            for p in ScreenRecordingTests.packetize(f.data, ssrc: 0xE000_0000, seq: &staySeq, ts: UInt32(i) * 3000) { h.sendRTP(stay, p) }
            h.run(steps: 3)
        }
        #expect(await Self.openFiles(under: dir, settlingAt: 1) == 1)
        for cycle in 0..<30 {
            let ssrc = 0xE000_0100 + UInt32(cycle)
            let peer = try h.join("cycle\(cycle)")
            h.publish(peer, streams: [.init(kind: .video, ssrc: ssrc)])
            try #require(h.connectAll(), "cycle \(cycle): transports did not connect")
            var seq: UInt16 = 1
            for (i, f) in frames.enumerated() {
                for p in ScreenRecordingTests.packetize(f.data, ssrc: ssrc, seq: &seq, ts: UInt32(i) * 3000) { h.sendRTP(peer, p) }
            }
            h.run(steps: 5)
            #expect(h.room.remove(userID: "cycle\(cycle)", reason: .removedByApplication, message: "cycle"))
            h.silent.insert(peer.info.peerID)
            h.run(steps: 2)
        }
        // The departed files are written and closed on their sink queues: give them a moment. (Both
        // conditions: one open file is also what the directory shows before the last file exists;
        // a full `make test` once listed 30.)
        var open = Self.openFiles(under: dir)
        var names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        for _ in 0..<250 where open != 1 || names.count != 31 {
            usleep(20_000)
            open = Self.openFiles(under: dir)
            names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        }
        #expect(open == 1, "only the participant still in the room has its file open, not the 30 that left")
        #expect(names.count == 31, "\(names.count) files")
        let pending = recording.stop(in: h.room)
        #expect(pending.count == 31)
        var frameCounts: [Int] = []
        for p in pending {
            let (file, error) = await p.finalize()
            #expect(error == nil)
            frameCounts.append(file.videoFrames)
        }
        #expect(frameCounts.sorted() == [Int](repeating: 3, count: 30) + [30], "\(frameCounts)")
        #expect(await Self.openFiles(under: dir, settlingAt: 0) == 0)
        let last = try #require(pending.first { $0.file.userID == "cycle29" })
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", last.file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
    }
}
