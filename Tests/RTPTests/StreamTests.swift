import Testing
@testable import RTP

@Suite("Stream state: receive statistics, NACK, retransmission buffer, TWCC")
struct StreamTests {
    @Test func lossCountsAndFraction() {
        var s = ReceiveStatistics(clockRate: 90_000)
        for seq in 0..<100 where seq % 10 != 3 {
            s.record(sequenceNumber: UInt16(seq), rtpTimestamp: UInt32(seq * 3000), arrivalNanos: Int64(seq) * 33_333_333, payloadBytes: 1000)
        }
        #expect(s.expected == 100)
        #expect(s.received == 90)
        #expect(s.cumulativeLost == 10)
        #expect(s.bytesReceived == 90_000)
        let report = s.makeReport(ssrc: 7, lastSR: 0x1234, delaySinceLastSR: 99)
        #expect(report.fractionLost == 25)  // 10/100 * 256
        #expect(report.cumulativeLost == 10)
        #expect(report.highestSequence == 99)
        #expect(report.ssrc == 7 && report.lastSR == 0x1234 && report.delaySinceLastSR == 99)
        // Next interval: nothing lost.
        for seq in 100..<150 {
            s.record(sequenceNumber: UInt16(seq), rtpTimestamp: UInt32(seq * 3000), arrivalNanos: Int64(seq) * 33_333_333)
        }
        #expect(s.makeReport(ssrc: 7).fractionLost == 0)
    }

    @Test func extendedHighestSequenceCountsCycles() {
        var s = ReceiveStatistics(clockRate: 48_000)
        var seq: UInt16 = 65530
        for i in 0..<12 {
            s.record(sequenceNumber: seq, rtpTimestamp: UInt32(i * 960), arrivalNanos: Int64(i) * 20_000_000)
            seq &+= 1
        }
        #expect(s.extendedHighestSequence == 65536 + 5)
        #expect(s.expected == 12 && s.cumulativeLost == 0)
        // A duplicate makes cumulative loss negative, as RFC 3550 allows.
        s.record(sequenceNumber: 3, rtpTimestamp: 9 * 960, arrivalNanos: 300_000_000)
        #expect(s.cumulativeLost == -1)
        #expect(s.makeReport(ssrc: 1).fractionLost == 0)
    }

    /// RFC 3550 A.8: with arrivals alternately on time and 5 ms late, |D| = 5 ms = 240 units at
    /// 48 kHz for every pair and J converges to 240.
    @Test func interarrivalJitter() {
        var s = ReceiveStatistics(clockRate: 48_000)
        for i in 0..<400 {
            let late: Int64 = i % 2 == 0 ? 0 : 5_000_000
            s.record(sequenceNumber: UInt16(i), rtpTimestamp: UInt32(1000 + i * 960), arrivalNanos: 7_000_000_000 + Int64(i) * 20_000_000 + late)
        }
        #expect(s.jitter >= 236 && s.jitter <= 240)
        var steady = ReceiveStatistics(clockRate: 90_000)
        for i in 0..<100 {
            steady.record(sequenceNumber: UInt16(i), rtpTimestamp: UInt32(i * 3000), arrivalNanos: Int64(i) * 33_333_333)
        }
        #expect(steady.jitter <= 1)
        // Retransmissions do not feed the jitter.
        var rtx = ReceiveStatistics(clockRate: 90_000)
        rtx.record(sequenceNumber: 1, rtpTimestamp: 0, arrivalNanos: 0)
        rtx.record(sequenceNumber: 2, rtpTimestamp: 3000, arrivalNanos: 900_000_000, retransmission: true)
        #expect(rtx.jitter == 0 && rtx.received == 2)
    }

    @Test func nackRegisterAsksAndRetries() {
        var n = NACKRegister()
        let ms: Int64 = 1_000_000
        n.received(sequenceNumber: 65534, nowNanos: 0)
        n.received(sequenceNumber: 2, nowNanos: 0)  // 65535, 0, 1 missing across the wrap
        #expect(n.missingCount == 3)
        #expect(n.due(nowNanos: 0, rttNanos: 100 * ms) == [65535, 0, 1])
        #expect(n.due(nowNanos: 50 * ms, rttNanos: 100 * ms) == [])
        #expect(n.nextDeadline(rttNanos: 100 * ms) == 100 * ms)
        n.received(sequenceNumber: 0, nowNanos: 60 * ms)
        #expect(n.recovered == 1)
        #expect(n.due(nowNanos: 100 * ms, rttNanos: 100 * ms) == [65535, 1])
        // Given up after maxAge.
        #expect(n.due(nowNanos: 1_100 * ms, rttNanos: 100 * ms) == [])
        #expect(n.missingCount == 0 && n.givenUp == 2)
        #expect(n.nextDeadline(rttNanos: 100 * ms) == nil)
    }

    @Test func nackRegisterStopsAfterMaxRetriesAndBoundsItsList() {
        var config = NACKRegister.Configuration()
        config.maxRetries = 3
        config.maxMissing = 100
        var n = NACKRegister(configuration: config)
        n.received(sequenceNumber: 0, nowNanos: 0)
        n.received(sequenceNumber: 2, nowNanos: 0)
        var asks = 0
        for t in 0..<10 { asks += n.due(nowNanos: Int64(t) * 30_000_000, rttNanos: 20_000_000).count }
        #expect(asks == 3)
        #expect(n.missingCount == 0)
        // A gap larger than the list: give up and ask for a keyframe instead.
        n.received(sequenceNumber: 500, nowNanos: 0)
        #expect(n.needsKeyframe && n.missingCount == 0)
        n.keyframeHandled()
        #expect(!n.needsKeyframe)
        // Many small gaps overflow the list: the oldest are dropped.
        var seq: UInt16 = 500
        for _ in 0..<80 {
            seq &+= 3
            n.received(sequenceNumber: seq, nowNanos: 0)
        }
        #expect(n.missingCount == 100)
        #expect(n.needsKeyframe)
        #expect(n.due(nowNanos: 0, rttNanos: 0).first == 591)  // entries for 500+3k-2 and -1, k = 31...80
    }

    @Test func retransmissionBufferKeepsRecentPacketsOnly() {
        var b = RetransmissionBuffer(capacity: 100, slotSize: 64)
        #expect(b.capacity == 128)
        for seq in 0..<200 {
            let packet = [UInt8](repeating: UInt8(seq % 256), count: 10 + seq % 40)
            packet.withUnsafeBytes { raw in _ = b.store(raw, sequenceNumber: UInt16(seq), nowNanos: Int64(seq) * 1_000_000) }
        }
        #expect(b.packet(sequenceNumber: 199, nowNanos: 200_000_000) == [UInt8](repeating: 199, count: 10 + 199 % 40))
        #expect(b.packet(sequenceNumber: 72, nowNanos: 200_000_000) == [UInt8](repeating: 72, count: 10 + 72 % 40))
        #expect(b.packet(sequenceNumber: 71, nowNanos: 200_000_000) == nil)  // overwritten by 199
        #expect(b.packet(sequenceNumber: 150, nowNanos: 3_000_000_000) == nil)  // too old
        #expect(b.packet(sequenceNumber: 60_000, nowNanos: 200_000_000) == nil)
        let big = [UInt8](repeating: 1, count: 65)
        #expect(!big.withUnsafeBytes { b.store($0, sequenceNumber: 5, nowNanos: 0) })
    }

    @Test func twccFeedbackReportsArrivalsAndLosses() throws {
        var rec = TWCCRecorder(senderSSRC: 1, mediaSSRC: 2)
        var arrivals: [UInt16: Int64] = [:]
        var t: Int64 = 1_000_000_123
        for i in 0..<100 {
            let seq = UInt16(65500) &+ UInt16(i)
            t += Int64(i % 7) * 1_300 + 200
            if i % 13 == 5 { continue }  // lost
            rec.record(sequenceNumber: seq, arrivalMicros: t)
            arrivals[seq] = t
        }
        rec.record(sequenceNumber: 65510, arrivalMicros: t + 10)  // duplicate: first arrival kept
        let feedback = rec.buildFeedback()
        #expect(feedback.count == 1)
        let fb = try #require(feedback.first)
        #expect(fb.baseSequenceNumber == 65500 && fb.packetStatusCount == 100)
        var bytes: [UInt8] = []
        fb.serialize(into: &bytes)
        guard case .transportCC(let parsed) = try RTCPCompound.parse(bytes).first else { Issue.record("not twcc"); return }
        #expect(parsed == fb)
        let results = parsed.packetResults
        #expect(results.count == 100)
        let first = try #require(arrivals[65500])
        for r in results {
            if let expected = arrivals[r.sequenceNumber] {
                let got = try #require(r.arrivalMicros, "seq \(r.sequenceNumber) reported lost")
                // Times are relative to the reference time; compare deltas from the first packet, 250 us resolution.
                #expect(abs((got - results[0].arrivalMicros!) - (expected - first)) <= 250)
            } else {
                #expect(r.arrivalMicros == nil, "seq \(r.sequenceNumber) should be lost")
            }
        }
        // The next feedback starts after the last reported number; late arrivals of reported numbers are ignored.
        rec.record(sequenceNumber: 65505, arrivalMicros: t + 100)
        #expect(rec.pendingCount == 0)
        rec.record(sequenceNumber: 66, arrivalMicros: t + 50_000)  // reported up to 63; 64 and 65 lost
        let next = rec.buildFeedback()
        #expect(next.count == 1 && next[0].baseSequenceNumber == 64 && next[0].statuses == [0, 0, 1])
        #expect(next[0].feedbackPacketCount == fb.feedbackPacketCount &+ 1)
        #expect(rec.buildFeedback().isEmpty)
    }

    @Test func twccSplitsWhenDeltasDoNotFit() throws {
        var rec = TWCCRecorder(senderSSRC: 1, mediaSSRC: 2)
        rec.record(sequenceNumber: 1, arrivalMicros: 0)
        rec.record(sequenceNumber: 2, arrivalMicros: 20_000_000)  // 20 s later: beyond a 16-bit delta
        let fb = rec.buildFeedback()
        #expect(fb.count == 2)
        #expect(fb.map(\.baseSequenceNumber) == [1, 2])
        #expect(fb[1].referenceTime == 20_000_000 / 64_000)
        let chunks = TWCCRecorder.encodeChunks([1, 1, 0, 2, 1] + [UInt8](repeating: 0, count: 20))
        #expect(chunks == [.statusVector(twoBit: true, statuses: [1, 1, 0, 2, 1, 0, 0]), .runLength(status: 0, length: 18)])
    }
}
