import DTLS
import Foundation
import Logging
import RTP
import SFU
import Testing
import TestSupport
@testable import Recorder
import WebRTCClient

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

    /// Alice publishing a 3-layer simulcast camera (real VP8, a keyframe a second on each layer) in a
    /// composite recording of `seconds` on a 640x360/15 canvas; `at(ms)` runs before each 10 ms step.
    /// - Returns: the finished file, the engine's figures and alice's video track id.
    static func record(seconds: Int, at: (Int, RoomHarness, RoomHarness.Peer) throws -> Void) async throws
        -> (file: RecordedFile, error: String?, stats: CompositeEngine.Stats, track: String) {
        let h = try RoomHarness()
        let alice = try h.join("alice")
        h.publishSimulcast(alice, audioSSRC: Self.audioSSRC, rids: Self.rids)
        try #require(h.connectAll(), "transports did not connect")
        let clock = Clock()
        clock.set(h.now)
        let dir = NSTemporaryDirectory() + "composite-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let recording = try CompositeRecording(id: "rec_simulcast", directory: dir, fileID: "file_simulcast",
                                               options: .init(layout: .grid, width: 640, height: 360, fps: 15, videoBitrateBps: 300_000),
                                               nowNanos: h.now, logger: Logger(label: "test"), clock: { clock.read() })
        recording.start(in: h.room, nowNanos: h.now)

        let fps = 15
        let layers = try Self.sizes.map { try TestMedia.vp8Frames(count: fps * seconds, width: $0.0, height: $0.1, keyframeEvery: fps) }
        var seqs: [UInt16] = [10, 10_000, 30_000]
        let ntpBase: UInt64 = 3_900_000_000 << 32
        var next = 0
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
            try at(ms, h, alice)
            h.run()
            clock.set(h.now)
            // The processing queue ticks every 20 ms of real time: keep the fake clock near it.
            try await Task.sleep(nanoseconds: 8_000_000)
        }
        let track = try #require(h.room.publishedTracks().first { $0.producer.kind == .video }?.producer.trackID)
        let pending = recording.stop(in: h.room, nowNanos: h.now)
        let (file, error) = await pending.finalize()
        let stats = await pending.processor.result().stats
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        return (file, error, stats, track)
    }

    @Test func theCompositeDecodesTheLayerThatFitsItsTileAndSwitchesWhenAJoinShrinksIt() async throws {
        var bob: RoomHarness.Peer?
        let (file, error, stats, track) = try await Self.record(seconds: 7) { ms, h, _ in
            if ms == 3000 { bob = try h.join("bob") }
        }
        defer { try? FileManager.default.removeItem(atPath: (file.path as NSString).deletingLastPathComponent) }
        #expect(bob != nil && error == nil)
        // The top layer while alice was alone (reached in the first frame: the tap starts on the first
        // layer to send and climbs at each layer's keyframe), the middle one once bob's name tile took
        // half the canvas, and no other change.
        let widths = stats.decodedWidths[track] ?? []
        #expect(Array(widths.drop { $0 != 640 }) == [640, 320], "\(stats.decodedWidths)")
        // Each switch went through a keyframe: the decoder never got a frame it could not decode.
        #expect(stats.videoFramesUndecodable == 0, "\(stats)")
        #expect(stats.videoFramesDecoded >= 15 * 4, "\(stats)")
    }

    /// Alice's clock steps an hour ahead after 2 s (NTP resync, sleep/wake, or a forged SR): every
    /// layer's later SRs say so. The composite keeps its timeline: the file lasts the recording's
    /// real length and keeps decoding her picture, instead of placing her frames an hour away.
    @Test func aPublisherClockStepDoesNotMoveItsFramesOnTheCanvas() async throws {
        let ntpBase: UInt64 = 3_900_000_000 << 32
        let (file, error, stats, _) = try await Self.record(seconds: 5) { ms, _, alice in
            guard ms >= 2000, ms % 250 == 0 else { return }
            _ = alice.publisher?.sendRTCP((0..<3).map { l in
                .senderReport(SenderReport(ssrc: Self.layerSSRCs[l], ntpTime: ntpBase &+ (3600 << 32) &+ (UInt64(ms) << 32) / 1000,
                                           rtpTime: Self.timestampBases[l] &+ UInt32(ms * 90), packetCount: 0, octetCount: 0))
            })
        }
        defer { try? FileManager.default.removeItem(atPath: (file.path as NSString).deletingLastPathComponent) }
        #expect(error == nil)
        #expect(file.durationMs >= 4000 && file.durationMs <= 5500, "duration \(file.durationMs) ms")
        // Her frames kept reaching the canvas after the step (15 fps over ~4 s of output).
        #expect(stats.videoFramesDecoded >= 15 * 3, "\(stats)")
        let pictures = try Self.pictures(file.path)
        let late = pictures.filter { $0.ms >= 3000 }
        #expect(!late.isEmpty && late.allSatisfy { !Self.showsNameTile($0.picture) }, "\(late.count) pictures after 3 s")
    }

    /// The output pictures of a composite file with their times (ms).
    static func pictures(_ path: String) throws -> [(ms: Int64, picture: I420Image)] {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let decoder = try VP8Decoder()
        var out: [(Int64, I420Image)] = []
        for block in CompositeEngineTests.blocks(bytes) where block.track == 1 {
            if case .picture(let p) = decoder.decode(block.data) { out.append((block.ms, p)) }
        }
        return out
    }

    /// A name tile's background at three points of the top-left of the canvas, where the moving
    /// gradient has three different lumas.
    static func showsNameTile(_ p: I420Image) -> Bool {
        [(20, 20), (200, 20), (20, 100)].allSatisfy { x, y in
            let c = p.pixel(x: x, y: y), b = NameTileRenderer.background
            return abs(Int(c.y) - Int(b.y)) <= 6 && abs(Int(c.u) - Int(b.u)) <= 6 && abs(Int(c.v) - Int(b.v)) <= 6
        }
    }

    @Test func aMutedCameraShowsTheNameTileAtOnceAndItsPictureAgainAfterTheUnmute() async throws {
        let (file, error, _, _) = try await Self.record(seconds: 6) { ms, h, alice in
            if ms == 2000 { _ = h.room.setEnabled(peerID: alice.info.peerID, kind: .video, enabled: false, nowNanos: h.now) }
            if ms == 4000 { _ = h.room.setEnabled(peerID: alice.info.peerID, kind: .video, enabled: true, nowNanos: h.now) }
        }
        defer { try? FileManager.default.removeItem(atPath: (file.path as NSString).deletingLastPathComponent) }
        #expect(error == nil)
        let pictures = try Self.pictures(file.path)
        try #require(pictures.count >= 80, "\(pictures.count) pictures")
        // (From 1 s: before alice's first picture her tile shows her name too.)
        let named = pictures.filter { $0.ms >= 1000 && Self.showsNameTile($0.picture) }.map(\.ms)
        // The name from the mute on (not the last picture for 1.5 s), until the camera's first picture after the unmute.
        let first = try #require(named.first, "no name tile")
        #expect(first >= 1900 && first <= 2200, "name tile from \(first) ms: \(named)")
        #expect(named.allSatisfy { $0 >= first && $0 < 4700 }, "\(named)")
        #expect(pictures.filter { $0.ms > 2200 && $0.ms < 4000 }.allSatisfy { Self.showsNameTile($0.picture) })
        #expect(pictures.filter { $0.ms >= 1000 && $0.ms < 1900 }.allSatisfy { !Self.showsNameTile($0.picture) })
        #expect(pictures.last.map { !Self.showsNameTile($0.picture) } == true, "the camera did not come back")
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
