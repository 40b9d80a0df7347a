import Foundation
import RTP
import Testing
import TestSupport
@testable import SFU
import WebRTCClient

/// A tap that sets a size (the composite recording) sees the simulcast stream that fits it, and
/// moves between streams only at a keyframe; other taps (per-participant recordings) keep the top.
@Suite("Per-tap simulcast layer, in memory", .serialized)
struct TapLayerTests {
    /// Each layer's keyframe size, as Chromium sends for a 1280x720 camera.
    static let sizes: [(Int, Int)] = [(320, 180), (640, 360), (1280, 720)]

    /// Records which stream each packet came from and whether it started a keyframe.
    final class Tap: ProducerTap {
        var packets: [(layer: Int, keyframe: Bool)] = []
        func producer(_ producer: Producer, didReceive packet: UnsafeRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
            let layer = SimulcastTests.layerSSRCs.firstIndex(of: header.ssrc) ?? -1
            let payload = UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])
            // layeredVP8: a 6-byte descriptor, then the VP8 frame tag (bit 0 clear on a keyframe).
            packets.append((layer, payload.count > 6 && payload[6] & 1 == 0))
        }

        /// The layers in the order seen, one entry per run, with whether the run began at a keyframe.
        var runs: [(layer: Int, startsAtKeyframe: Bool)] {
            var out: [(Int, Bool)] = []
            for p in packets where out.last?.0 != p.layer { out.append((p.layer, p.keyframe)) }
            return out
        }
    }

    final class Publisher {
        let h: RoomHarness
        let peer: RoomHarness.Peer
        var frame = 0
        var seqs: [UInt16] = [100, 20000, 40000]
        var pictureIDs: [UInt16] = [10, 5000, 32000]
        var sending: Set<Int> = [0, 1, 2]
        /// Each layer's size in its keyframes (a publisher's CPU adaptation scales them down).
        var sizes = TapLayerTests.sizes

        init(h: RoomHarness, peer: RoomHarness.Peer) {
            self.h = h
            self.peer = peer
        }

        /// One frame on every sending layer (a keyframe on `keyframes`, with its layer's size), 10 ms.
        func step(keyframes: Set<Int> = []) {
            for layer in sending.sorted() {
                let key = keyframes.contains(layer)
                var payload = layeredVP8(keyframe: key, pictureID: pictureIDs[layer], tl0: UInt8(truncatingIfNeeded: frame), tid: 0, sync: false,
                                         fill: UInt8(0xA0 + layer))
                if key {
                    let (w, hgt) = sizes[layer]
                    payload[12] = UInt8(w & 0xFF)
                    payload[13] = UInt8(w >> 8)
                    payload[14] = UInt8(hgt & 0xFF)
                    payload[15] = UInt8(hgt >> 8)
                }
                var packet = RTPPacket(payloadType: 96, sequenceNumber: seqs[layer], timestamp: SimulcastTests.timestampBases[layer] &+ UInt32(frame) * 3000,
                                       ssrc: SimulcastTests.layerSSRCs[layer], marker: true, payload: payload)
                try? packet.setExtensions([RTPHeaderExtension(id: RoomHarness.ridExtensionID, value: Array(SimulcastTests.rids[layer].utf8)),
                                           RTPHeaderExtension(id: ClientSDP.midExtensionID, value: Array("1".utf8))])
                h.sendRTP(peer, packet)
                seqs[layer] &+= 1
                pictureIDs[layer] = (pictureIDs[layer] &+ 1) & 0x7FFF
            }
            frame += 1
            h.run()
        }
    }

    static func setUp() throws -> (RoomHarness, Publisher, Producer) {
        let (h, simulcastPublisher, _, track) = try SimulcastTests.room()
        let pubPeer = simulcastPublisher.peer
        let pub = Publisher(h: h, peer: pubPeer)
        pub.step(keyframes: [0, 1, 2])
        for _ in 0..<5 { pub.step() }
        let producer = try #require(h.room.participant(pubPeer.info.peerID)?.producers.first { $0.trackID == track })
        #expect(producer.streams.map { $0.resolution?.width } == [320, 640, 1280])
        return (h, pub, producer)
    }

    @Test func aSizedTapTakesTheLayerThatFitsItsTileAndSwitchesAtKeyframes() throws {
        let (h, pub, producer) = try Self.setUp()
        let whole = Tap(), sized = Tap()
        producer.taps.append(whole)
        producer.taps.append(sized)
        pub.step(keyframes: [0, 1, 2])
        for _ in 0..<3 { pub.step() }
        // A 640x360 tile (a 2x2 grid on a 1280x720 canvas, minus the gaps): the middle layer.
        producer.setTapSize(sized, width: 636, height: 356, nowNanos: h.now)
        // The switch asks for a keyframe of the middle layer (now, or once the pacing allows).
        #expect(producer.streams[1].lastKeyframeRequestNanos == h.now || producer.streams[1].keyframeWanted)
        // Until that keyframe comes the tap stays on the top layer (no half-stream of the middle one).
        for _ in 0..<10 { pub.step() }
        #expect(producer.stream(for: sized).spatial == 2)
        pub.step(keyframes: [0, 1, 2])
        for _ in 0..<10 { pub.step() }
        #expect(producer.stream(for: sized).spatial == 1)
        // The tile grows to the whole canvas (the others left): the top layer, again at its keyframe.
        producer.setTapSize(sized, width: 1276, height: 716, nowNanos: h.now)
        for _ in 0..<10 { pub.step() }
        #expect(producer.stream(for: sized).spatial == 1)
        pub.step(keyframes: [2])
        for _ in 0..<5 { pub.step() }
        // Not shown at all: the lowest.
        producer.setTapSize(sized, width: 0, height: 0, nowNanos: h.now)
        pub.step(keyframes: [0])
        for _ in 0..<5 { pub.step() }

        let runs = sized.runs
        #expect(runs.map(\.layer) == [2, 1, 2, 0], "\(runs)")
        #expect(runs.dropFirst().allSatisfy { $0.startsAtKeyframe }, "a switch not at a keyframe: \(runs)")
        // The per-participant recording's tap keeps the top layer throughout.
        #expect(whole.runs.map(\.layer) == [2])
        #expect(whole.packets.count == 1 + 3 + 10 + 1 + 10 + 10 + 1 + 5 + 1 + 5)
        producer.removeTap(sized)
        #expect(producer.taps.count == 1 && producer.stream(for: sized).spatial == 2)
    }

    @Test func aSizedTapWhoseLayerStopsMovesToTheNextThatFitsAtOnce() throws {
        let (h, pub, producer) = try Self.setUp()
        let sized = Tap()
        producer.taps.append(sized)
        producer.setTapSize(sized, width: 316, height: 176, nowNanos: h.now)
        pub.step(keyframes: [0, 1, 2])
        for _ in 0..<5 { pub.step() }
        #expect(producer.stream(for: sized).spatial == 0)
        // The publisher drops its lowest layer (bandwidth): after a second without it the tap takes
        // the smallest that still fits, the middle one, without waiting (its assembler waits for the keyframe).
        pub.sending = [1, 2]
        for _ in 0..<110 { pub.step() }
        #expect(producer.stream(for: sized).spatial == 1)
        #expect(sized.runs.map(\.layer) == [0, 1], "\(sized.runs)")
    }

    /// A publisher short of CPU drops its top layer for a while and brings it back: the tap moves
    /// down at once, but back up only once the layer has been sending again for 2 s
    /// (`Producer.tapSettleNanos`), not at its first keyframe: a layer that comes and goes would
    /// otherwise cost the composite's decoder a keyframe each way every time.
    @Test func aSizedTapWaitsForAResumedLayerToSettle() throws {
        let (h, pub, producer) = try Self.setUp()
        let sized = Tap()
        producer.taps.append(sized)
        for _ in 0..<250 { pub.step(keyframes: pub.frame % 100 == 0 ? [0, 1, 2] : []) }  // every layer sending for 2.5 s
        producer.setTapSize(sized, width: 1276, height: 716, nowNanos: h.now)
        pub.step(keyframes: [0, 1, 2])
        #expect(producer.stream(for: sized).spatial == 2)
        // The top layer stops for 1.2 s: the tap moves to the middle one at once.
        pub.sending = [0, 1]
        for _ in 0..<120 { pub.step(keyframes: pub.frame % 50 == 0 ? [0, 1] : []) }
        #expect(producer.stream(for: sized).spatial == 1)
        // It comes back, with a keyframe every half second.
        pub.sending = [0, 1, 2]
        var backAfter: Int?
        for i in 0..<300 {
            pub.step(keyframes: i % 50 == 0 ? [0, 1, 2] : [])
            if backAfter == nil, producer.stream(for: sized).spatial == 2 { backAfter = i }
        }
        let after = try #require(backAfter, "never back on the top layer")
        #expect(after >= 200, "back on the top layer \(after * 10) ms after it resumed")
        #expect(sized.runs.map(\.layer) == [2, 1, 2], "\(sized.runs)")
        #expect(sized.runs.last?.startsAtKeyframe == true, "back up not at a keyframe")
    }

    /// The publisher scales its middle layer to 3/4 (480x270) for a while: a 640x360 tile keeps it
    /// (no switch to the top layer and back); at half size (320x180) it takes the top layer.
    @Test func aSizedTapKeepsItsLayerWhenThePublisherScalesItByAQuarter() throws {
        let (h, pub, producer) = try Self.setUp()
        let sized = Tap()
        producer.taps.append(sized)
        for _ in 0..<250 { pub.step(keyframes: pub.frame % 100 == 0 ? [0, 1, 2] : []) }
        producer.setTapSize(sized, width: 636, height: 356, nowNanos: h.now)
        pub.step(keyframes: [0, 1, 2])
        for _ in 0..<5 { pub.step() }
        #expect(producer.stream(for: sized).spatial == 1)
        pub.sizes[1] = (480, 270)
        for i in 0..<200 { pub.step(keyframes: i % 50 == 0 ? [0, 1, 2] : []) }
        #expect(producer.stream(for: sized).spatial == 1)
        pub.sizes[1] = (320, 180)
        for i in 0..<200 { pub.step(keyframes: i % 50 == 0 ? [0, 1, 2] : []) }
        #expect(producer.stream(for: sized).spatial == 2)
        #expect(sized.runs.map(\.layer) == [2, 1, 2], "\(sized.runs)")
    }
}
