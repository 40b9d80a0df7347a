import Foundation
import Logging
import RTP
import SFU
import Testing
import TestSupport
@testable import Recorder

/// A composite whose processing queue is starved for a while (a busy machine) while the room keeps
/// sending: the room side refuses video once the bounds are full, the processing side catches up
/// when it runs again, and the participant's picture comes back. The publisher here behaves like a
/// browser: it sends a keyframe only when asked (PLI), never on its own.
@Suite("Composite recording catches up after a stall", .serialized)
struct CompositeCatchUpTests {
    static let audioSSRC: UInt32 = 0x6161_0001
    static let videoSSRC: UInt32 = 0x6161_0002
    static let fps = 15

    @Test func aStarvedCompositeAsksForAKeyframeAndShowsThePictureAgain() async throws {
        let h = try RoomHarness()
        let alice = try h.join("alice")
        h.publish(alice, streams: [.init(kind: .audio, ssrc: Self.audioSSRC), .init(kind: .video, ssrc: Self.videoSSRC)])
        try #require(h.connectAll(), "transports did not connect")
        let clock = CompositeSimulcastTests.Clock()
        clock.set(h.now)
        let dir = NSTemporaryDirectory() + "composite-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = try CompositeRecording(id: "rec_catchup", directory: dir, fileID: "file_catchup",
                                               options: .init(layout: .grid, width: 320, height: 180, fps: Self.fps, videoBitrateBps: 300_000),
                                               nowNanos: h.now, logger: Logger(label: "test"), clock: { clock.read() })
        recording.start(in: h.room, nowNanos: h.now)

        // Alice's camera: a keyframe first and whenever a PLI asks, deltas otherwise.
        let encoder = try VP8Encoder(.init(width: 320, height: 180, fps: Self.fps, bitrateBps: 300_000))
        var picture = I420Image(width: 320, height: 180)
        var seq: UInt16 = 100
        var plisAnswered = 0
        var keyframesSent = 0
        var next = 0
        var stalled = false
        for step in 0..<900 {  // 9 s
            let ms = step * 10
            while next * 1000 / Self.fps <= ms {
                let plis = alice.publisherRTCP.filter { if case .pli(let p) = $0 { p.mediaSSRC == Self.videoSSRC } else { false } }.count
                let key = next == 0 || plis > plisAnswered
                plisAnswered = plis
                for y in 0..<picture.height {
                    for x in 0..<picture.width { picture.y[y * picture.width + x] = UInt8(truncatingIfNeeded: x + y + next * 4) }
                }
                for f in try encoder.encode(picture, pts: Int64(next), forceKeyframe: key) {
                    if f.keyframe { keyframesSent += 1 }
                    var offset = 0
                    while offset < f.data.count {
                        let end = min(f.data.count, offset + 1000)
                        h.sendRTP(alice, RTPPacket(payloadType: 96, sequenceNumber: seq, timestamp: 5_000 &+ UInt32(next * 90_000 / Self.fps),
                                                   ssrc: Self.videoSSRC, marker: end == f.data.count, payload: [offset == 0 ? 0x10 : 0x00] + f.data[offset..<end]))
                        seq &+= 1
                        offset = end
                    }
                }
                next += 1
            }
            if ms == 20 {
                _ = alice.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: Self.videoSSRC, ntpTime: 3_900_000_000 << 32, rtpTime: 5_000, packetCount: 0, octetCount: 0))])
            }
            // The processing queue gets no CPU from 2 s to 6 s.
            if ms == 2000 { recording.processor.suspendForTesting(); stalled = true }
            if ms == 6000 { recording.processor.resumeForTesting(); stalled = false }
            h.run()
            clock.set(h.now)
            try await Task.sleep(nanoseconds: 8_000_000)
        }
        if stalled { recording.processor.resumeForTesting() }
        let pending = recording.stop(in: h.room, nowNanos: h.now)
        let (file, error) = await pending.finalize()
        let stats = await pending.processor.result().stats
        #expect(error == nil)
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")

        // The room side refused video while the queue was stalled (and asked for a keyframe), the
        // processing side skipped the output frames it had missed instead of encoding all of them.
        #expect(stats.outputVideoFramesSkipped > 0, "\(stats)")
        #expect(keyframesSent >= 2, "keyframes sent: \(keyframesSent)")
        #expect(stats.videoFramesUndecodable == 0, "\(stats)")
        // Alice's picture is back within a second or two of the queue running again (6 s on the
        // room's clock, 5 s on the file's: the output runs 1 s behind), and stays.
        let pictures = try CompositeSimulcastTests.pictures(file.path)
        let late = pictures.filter { $0.ms >= 6500 }
        #expect(late.count >= 15, "\(pictures.count) pictures, \(late.count) after 6.5 s")
        #expect(late.allSatisfy { !CompositeSimulcastTests.showsNameTile($0.picture) },
                "name tiles at \(late.filter { CompositeSimulcastTests.showsNameTile($0.picture) }.map(\.ms)) ms")
        #expect(pictures.filter { $0.ms < 1500 && $0.ms >= 500 }.allSatisfy { !CompositeSimulcastTests.showsNameTile($0.picture) })
    }
}
