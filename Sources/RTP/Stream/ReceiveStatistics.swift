/// Reception statistics of one incoming RTP stream (RFC 3550 appendix A.3 and A.8): what a
/// receiver report block says about it.
package struct ReceiveStatistics: Sendable {
    package let clockRate: Int
    @usableFromInline var unwrapper = SequenceUnwrapper()
    @usableFromInline var baseSequence: Int64 = 0
    @usableFromInline var maxSequence: Int64 = -1
    /// Packets received, duplicates and retransmissions included (as RFC 3550 counts them).
    package private(set) var received: Int64 = 0
    @usableFromInline var expectedPrior: Int64 = 0
    @usableFromInline var receivedPrior: Int64 = 0
    /// Interarrival jitter in RTP timestamp units, x16 (RFC 3550 A.8 keeps it scaled this way).
    @usableFromInline var jitterQ4: Int64 = 0
    @usableFromInline var lastTransit: Int64?
    @usableFromInline var started = false
    package private(set) var bytesReceived: Int64 = 0

    /// - Parameter clockRate: the stream's RTP clock (90000 for video, 48000 for Opus).
    package init(clockRate: Int) {
        precondition(clockRate > 0)
        self.clockRate = clockRate
    }

    /// Records one received packet.
    /// - Parameters:
    ///   - arrivalNanos: arrival time on any monotonic clock, in nanoseconds.
    ///   - retransmission: packets recovered by RTX count as received but do not feed the jitter.
    package mutating func record(sequenceNumber: UInt16, rtpTimestamp: UInt32, arrivalNanos: Int64, payloadBytes: Int = 0, retransmission: Bool = false) {
        let ext = unwrapper.unwrap(sequenceNumber)
        received += 1
        bytesReceived += Int64(payloadBytes)
        if !started {
            started = true
            baseSequence = ext
            maxSequence = ext
        } else if ext > maxSequence {
            maxSequence = ext
        } else if ext < baseSequence {
            baseSequence = ext  // a reordered packet from before the first one
        }
        guard !retransmission else { return }
        // Transit time in RTP units; the arrival clock is converted to the stream's clock.
        let arrivalRTP = arrivalNanos / 1000 * Int64(clockRate) / 1_000_000
        let transit = arrivalRTP - Int64(rtpTimestamp)
        if let lastTransit {
            var d = transit - lastTransit
            // Timestamps wrap at 2^32: take the shorter way around.
            d = Int64(Int32(truncatingIfNeeded: d))
            if d < 0 { d = -d }
            jitterQ4 += d - ((jitterQ4 + 8) >> 4)
        }
        lastTransit = transit
    }

    /// Interarrival jitter in RTP timestamp units.
    package var jitter: UInt32 { UInt32(clamping: jitterQ4 >> 4) }
    /// Extended highest sequence number received (cycles << 16 | seq).
    package var extendedHighestSequence: UInt32 { UInt32(truncatingIfNeeded: max(maxSequence, 0)) }
    package var expected: Int64 { started ? maxSequence - baseSequence + 1 : 0 }
    /// Cumulative packets lost: expected - received (negative with duplicates).
    package var cumulativeLost: Int64 { expected - received }

    /// The report block for this stream, and the interval counters reset for the next one.
    /// - Parameters:
    ///   - lastSR: middle 32 bits of the NTP time of the last SR received for this stream (0 if none).
    ///   - delaySinceLastSR: time since that SR arrived, in 1/65536 s.
    package mutating func makeReport(ssrc: UInt32, lastSR: UInt32 = 0, delaySinceLastSR: UInt32 = 0) -> ReceptionReport {
        let expectedInterval = expected - expectedPrior
        let receivedInterval = received - receivedPrior
        expectedPrior = expected
        receivedPrior = received
        let lostInterval = expectedInterval - receivedInterval
        let fraction: UInt8 = expectedInterval == 0 || lostInterval <= 0 ? 0 : UInt8(clamping: (lostInterval << 8) / expectedInterval)
        return ReceptionReport(
            ssrc: ssrc, fractionLost: fraction,
            cumulativeLost: Int32(clamping: cumulativeLost),
            highestSequence: extendedHighestSequence, jitter: jitter,
            lastSR: lastSR, delaySinceLastSR: delaySinceLastSR)
    }
}
