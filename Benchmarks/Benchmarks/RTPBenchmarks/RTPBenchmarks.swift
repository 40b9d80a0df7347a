// Hot-path costs of the RTP library, per packet: parse, rewrite, feedback building.
// Run: make bench (or `cd Benchmarks && swift package --disable-sandbox benchmark`).
import Benchmark
import RTP

/// A Chromium-like VP8 video packet: one-byte extensions (abs-send-time id 2, transport-cc id 3,
/// mid id 4), VP8 descriptor with 15-bit picture id, TL0PICIDX and TID, 1100 bytes of payload.
func videoPacket() -> [UInt8] {
    var p = RTPPacket(payloadType: 96, sequenceNumber: 4242, timestamp: 123_456, ssrc: 0x1234_5678, marker: false,
                      payload: [0x90, 0xE0, 0x92, 0x34, 0x05, 0x20] + [UInt8](repeating: 0x5A, count: 1100))
    try? p.setExtensions([
        RTPHeaderExtension(id: 2, value: [0x12, 0x34, 0x56]),
        RTPHeaderExtension(id: 3, value: [0x00, 0x9b]),
        RTPHeaderExtension(id: 4, value: Array("0".utf8)),
    ])
    return p.serialized()
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )

    Benchmark("RTP header + extensions parse") { benchmark in
        let packet = videoPacket()
        packet.withUnsafeBytes { raw in
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                guard let header = try? RTPHeader(parsing: raw) else { fatalError("bad packet") }
                var sum = Int(header.sequenceNumber) &+ Int(header.ssrc)
                for element in header.extensions(in: raw) { sum &+= Int(element.id) &+ element.range.count }
                if let twcc = header.extensionValue(id: 3, in: raw) { sum &+= Int(TransportWideSequence.decode(twcc) ?? 0) }
                blackHole(sum)
            }
        }
    }

    Benchmark("VP8 payload descriptor parse") { benchmark in
        let packet = videoPacket()
        packet.withUnsafeBytes { raw in
            guard let header = try? RTPHeader(parsing: raw) else { fatalError("bad packet") }
            let payload = UnsafeRawBufferPointer(rebasing: raw[header.payloadRange])
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                guard let d = try? VP8Descriptor(parsing: payload) else { fatalError("bad descriptor") }
                blackHole(d.isKeyframeStart(payload: payload))
                blackHole(d.pictureID)
            }
        }
    }

    Benchmark("Consumer rewrite (seq, ts, ssrc, pt, VP8 picture id, in place)") { benchmark in
        runConsumerRewrite(benchmark)
    }

    Benchmark("RTCP SR+SDES compound parse", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let bytes = RTCPCompound.serialize([
            .senderReport(SenderReport(ssrc: 1, ntpTime: 0xDA8B_D1FC_DDDD_DDDD, rtpTime: 90_000, packetCount: 88, octetCount: 6672,
                                       reports: [ReceptionReport(ssrc: 2, fractionLost: 1, cumulativeLost: 5, highestSequence: 3000)])),
            .sourceDescription(SourceDescription(ssrc: 1, cname: "0123456789abcdef")),
        ])
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try? RTCPCompound.parse(bytes))
        }
    }

    Benchmark("TWCC feedback for 100 packets (record + build + serialize)", configuration: .init(scalingFactor: .one)) { benchmark in
        var recorder = TWCCRecorder(senderSSRC: 1, mediaSSRC: 2)
        var seq: UInt16 = 0
        var now: Int64 = 1_000_000
        var out: [UInt8] = []
        out.reserveCapacity(1500)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            for i in 0..<100 {
                seq &+= 1
                now += 1_000 + Int64(i % 5) * 300
                if i % 17 == 3 { continue }  // a few losses
                recorder.record(sequenceNumber: seq, arrivalMicros: now)
            }
            out.removeAll(keepingCapacity: true)
            for packet in recorder.buildFeedback() { packet.serialize(into: &out) }
            blackHole(out.count)
        }
    }
}

/// What a consumer does to each forwarded packet: map seq, timestamp and picture id through its
/// rewriters and write them, with its SSRC and payload type, into the packet in place.
struct ConsumerRewriteState {
    var seq = SeqRewriter<UInt16>(bits: 16)
    var ts = SeqRewriter<UInt32>(bits: 32)
    var pid = SeqRewriter<UInt16>(bits: 15)

    @inline(__always)
    mutating func rewrite(_ raw: UnsafeMutableRawBufferPointer, header: RTPHeader) -> Bool {
        guard let s = seq.input(header.sequenceNumber), let t = ts.input(header.timestamp) else { return false }
        RTPRewrite.setSequenceNumber(s, in: raw)
        RTPRewrite.setTimestamp(t, in: raw)
        RTPRewrite.setSSRC(0xCAFE_BABE, in: raw)
        RTPRewrite.setPayloadType(100, in: raw)
        let payload = UnsafeMutableRawBufferPointer(rebasing: raw[header.payloadRange])
        guard let d = try? VP8Descriptor(parsing: UnsafeRawBufferPointer(payload)), let p = d.pictureID else { return false }
        d.rewrite(pictureID: pid.input(p), tl0PicIdx: nil, in: payload)
        return true
    }
}

func runConsumerRewrite(_ benchmark: Benchmark) {
    var packet = videoPacket()
    var state = ConsumerRewriteState()
    state.seq.sync(input: 4242, output: 1000)
    state.ts.sync(input: 123_456, output: 9_000)
    state.pid.sync(input: 0x1234, output: 7)
    guard var header = try? RTPHeader(parsing: packet) else { fatalError("bad packet") }
    var inSeq: UInt16 = 4242
    var inTs: UInt32 = 123_456
    packet.withUnsafeMutableBytes { raw in
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            // A new input packet each time (as parsed from the wire), rewritten for one consumer.
            inSeq &+= 1
            inTs &+= 3000
            header.sequenceNumber = inSeq
            header.timestamp = inTs
            blackHole(state.rewrite(raw, header: header))
        }
        benchmark.stopMeasurement()
    }
}
