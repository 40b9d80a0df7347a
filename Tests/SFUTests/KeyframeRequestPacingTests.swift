import Testing
@testable import SFU

/// Keyframe requests to a simulcast producer, on a fake clock: one per second per stream, and at
/// most one per 350 ms for the whole producer (libwebrtc drops a request within 300 ms of the last
/// one it honoured: one encoder makes every layer).
@Suite("Keyframe request pacing")
struct KeyframeRequestPacingTests {
    static func producer() -> (Producer, Box) {
        let section = PublishedSection(mid: "1", kind: .video, codec: .vp8, payloadType: 96, clockRate: 90_000, rtxPayloadType: 97,
                                       ssrc: nil, rtxSSRC: nil,
                                       encodings: [SimulcastEncoding(rid: "q", ssrc: 1), SimulcastEncoding(rid: "h", ssrc: 2),
                                                   SimulcastEncoding(rid: "f", ssrc: 3)],
                                       sending: true, transportCC: true)
        let producer = Producer(trackID: "tr", peerID: "pe", section: section, source: .camera)
        let box = Box()
        producer.sendKeyframeRequest = { stream, now in box.sent.append((stream.spatial, now)) }
        return (producer, box)
    }

    final class Box {
        var sent: [(spatial: Int, nanos: Int64)] = []
    }

    /// Drives the producer's timer every 20 ms from `from` to `to`.
    static func tick(_ p: Producer, from: Int64, to: Int64) {
        var now = from
        while now <= to {
            p.tick(nowNanos: now)
            now += 20_000_000
        }
    }

    @Test func aRequestForAnotherLayerSoonAfterOneWaitsUntilTheEncoderTakesItAgain() {
        let (p, box) = Self.producer()
        let t0: Int64 = 10_000_000_000
        // The switch up asks for the mid layer; 130 ms later the estimate drops and the switch asks for the low one.
        p.requestKeyframe(stream: p.streams[1], nowNanos: t0)
        p.requestKeyframe(stream: p.streams[0], nowNanos: t0 + 130_000_000)
        #expect(box.sent.map(\.spatial) == [1], "the second request would be ignored by the encoder: it waits")
        Self.tick(p, from: t0 + 140_000_000, to: t0 + 340_000_000)
        #expect(box.sent.count == 1)
        Self.tick(p, from: t0 + 360_000_000, to: t0 + 400_000_000)
        #expect(box.sent.map(\.spatial) == [1, 0])
        #expect(box.sent.last.map { $0.nanos - t0 } == 360_000_000, "sent at the first tick 350 ms after the last one")
        #expect(p.keyframeRequestsSent == 2 && p.keyframeRequestsThrottled == 1)
    }

    @Test func oneStreamStaysAtOneRequestPerSecond() {
        let (p, box) = Self.producer()
        let t0: Int64 = 10_000_000_000
        p.requestKeyframe(stream: p.streams[0], nowNanos: t0)
        p.requestKeyframe(stream: p.streams[0], nowNanos: t0 + 400_000_000)
        Self.tick(p, from: t0 + 420_000_000, to: t0 + 980_000_000)
        #expect(box.sent.count == 1)
        Self.tick(p, from: t0 + 1_000_000_000, to: t0 + 1_100_000_000)
        #expect(box.sent.map { $0.nanos - t0 } == [0, 1_000_000_000])
    }
}
