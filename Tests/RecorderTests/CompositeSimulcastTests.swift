import DTLS
import Foundation
import Logging
import RTP
import SFU
import Testing
import TestSupport
@testable import Recorder

/// The composite as a virtual subscriber of a simulcast publisher, in memory with real VP8: it
/// decodes the layer that fits the tile, and moves to another layer (through a keyframe) when a
/// join re-lays the canvas. The participant who joins publishes nothing: it gets a name tile.
@Suite("Composite recording of a simulcast publisher, in memory", .serialized)
struct CompositeSimulcastTests {
    static let audioSSRC: UInt32 = 0x5151_5151
    static let layerSSRCs: [UInt32] = [0xD000_0001, 0xD000_0002, 0xD000_0003]
    static let rids = ["q", "h", "f"]
    static let timestampBases: [UInt32] = [7_000, 1_234_567, 4_000_000_000]
    /// The layers of a 640x360 camera, as Chromium scales them (1/4, 1/2, full).
    static let sizes: [(Int, Int)] = [(160, 90), (320, 180), (640, 360)]

    /// The room's clock as the harness advances it, for the composite's processing queue.
    final class Clock: @unchecked Sendable {
        private let lock = NSLock()
        private var value: Int64 = 0
        func set(_ v: Int64) {
            lock.lock()
            value = v
            lock.unlock()
        }
        func read() -> Int64 {
            lock.lock()
            defer { lock.unlock() }
            return value
        }
    }

    @Test func theCompositeDecodesTheLayerThatFitsItsTileAndSwitchesWhenAJoinShrinksIt() async throws {
        let h = try RoomHarness()
        let alice = try h.join("alice")
        h.publishSimulcast(alice, audioSSRC: Self.audioSSRC, rids: Self.rids)
        try #require(h.connectAll(), "transports did not connect")
        let clock = Clock()
        clock.set(h.now)
        let dir = NSTemporaryDirectory() + "composite-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A 640x360 canvas: alone, alice's tile is 636x356 (the top layer); beside bob, 316x356 (the middle one).
        let recording = try CompositeRecording(id: "rec_simulcast", directory: dir, fileID: "file_simulcast",
                                               options: .init(layout: .grid, width: 640, height: 360, fps: 15, videoBitrateBps: 300_000),
                                               nowNanos: h.now, logger: Logger(label: "test"), clock: { clock.read() })
        recording.start(in: h.room, nowNanos: h.now)

        let fps = 15, seconds = 7
        let layers = try Self.sizes.map { try TestMedia.vp8Frames(count: fps * seconds, width: $0.0, height: $0.1, keyframeEvery: fps) }
        var seqs: [UInt16] = [10, 10_000, 30_000]
        let ntpBase: UInt64 = 3_900_000_000 << 32
        var next = 0
        var bob: RoomHarness.Peer?
        for step in 0..<(seconds * 100) {
            let ms = step * 10
            while next < layers[0].count, next * 1000 / fps <= ms {
                for l in 0..<3 {
                    let data = layers[l][next].data
                    var offset = 0
                    while offset < data.count {
                        let end = min(data.count, offset + 1000)
                        var packet = RTPPacket(payloadType: 96, sequenceNumber: seqs[l], timestamp: Self.timestampBases[l] &+ UInt32(next * 90_000 / fps),
                                               ssrc: Self.layerSSRCs[l], marker: end == data.count, payload: [offset == 0 ? 0x10 : 0x00] + data[offset..<end])
                        try packet.setExtensions([RTPHeaderExtension(id: RoomHarness.ridExtensionID, value: Array(Self.rids[l].utf8)),
                                                  RTPHeaderExtension(id: ClientSDP.midExtensionID, value: Array("1".utf8))])
                        h.sendRTP(alice, packet)
                        seqs[l] &+= 1
                        offset = end
                    }
                }
                next += 1
            }
            if ms == 20 {
                // Every layer's SR maps the same instant (frame 0) to its own timestamp base, as libwebrtc's do
                // (sent once the server knows the layers' SSRCs from their first packets).
                _ = alice.publisher?.sendRTCP((0..<3).map { l in
                    .senderReport(SenderReport(ssrc: Self.layerSSRCs[l], ntpTime: ntpBase, rtpTime: Self.timestampBases[l], packetCount: 0, octetCount: 0))
                })
            }
            if ms == 3000 { bob = try h.join("bob") }
            h.run()
            clock.set(h.now)
            // The processing queue ticks every 20 ms of real time: keep the fake clock near it.
            try await Task.sleep(nanoseconds: 8_000_000)
        }
        #expect(bob != nil)
        let producer = try #require(h.room.publishedTracks().first { $0.producer.kind == .video }?.producer)
        let pending = recording.stop(in: h.room, nowNanos: h.now)
        let (file, error) = await pending.finalize()
        let stats = await pending.processor.result().stats
        #expect(error == nil)
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        // The top layer while alice was alone (reached in the first frame: the tap starts on the first
        // layer to send and climbs at each layer's keyframe), the middle one once bob's name tile took
        // half the canvas, and no other change.
        let widths = stats.decodedWidths[producer.trackID] ?? []
        #expect(Array(widths.drop { $0 != 640 }) == [640, 320], "\(stats.decodedWidths)")
        // Each switch went through a keyframe: the decoder never got a frame it could not decode.
        #expect(stats.videoFramesUndecodable == 0, "\(stats)")
        #expect(stats.videoFramesDecoded >= fps * (seconds - 3), "\(stats)")
    }
}

extension CompositeSimulcastTests {
    /// What the engine tells the room side: each source's tile, 0 x 0 for one not shown.
    @Test func tileSizesFollowTheLayout() {
        let entries: [CompositeEngine.RosterEntry] = [.init(peerID: "a", name: "A", camera: "camA", screen: "scrA"),
                                                      .init(peerID: "b", name: "B", camera: "camB", screen: nil)]
        let sharing = CompositeLayout.tiles([.init(id: "a", sharesScreen: true), .init(id: "b")], kind: .grid, width: 1280, height: 720)
        let sizes = CompositeEngine.tileSizes(entries, sharing)
        #expect(sizes["scrA"] == .init(width: 1276, height: 536))
        #expect(sizes["camA"] == .init(width: 316, height: 176) && sizes["camB"] == .init(width: 316, height: 176))
        // The share ended: the cameras split the canvas, the screen is not shown.
        let grid = CompositeLayout.tiles([.init(id: "a"), .init(id: "b")], kind: .grid, width: 1280, height: 720)
        let after = CompositeEngine.tileSizes(entries, grid)
        #expect(after["scrA"] == .init(width: 0, height: 0))
        #expect(after["camA"] == .init(width: 636, height: 716) && after["camB"] == .init(width: 636, height: 716))
    }
}
