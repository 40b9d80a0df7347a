/// A report block of an SR or RR (RFC 3550 6.4.1): the reception quality of one source.
public struct ReceptionReport: Sendable, Equatable {
    public var ssrc: UInt32
    /// Fraction of packets lost since the previous report, in 1/256.
    public var fractionLost: UInt8
    /// Cumulative number of packets lost: a signed 24-bit value (duplicates can make it negative).
    public var cumulativeLost: Int32
    /// Extended highest sequence number received (cycles << 16 | seq).
    public var highestSequence: UInt32
    /// Interarrival jitter in RTP timestamp units.
    public var jitter: UInt32
    /// Middle 32 bits of the NTP timestamp of the last SR received from this source (0 if none).
    public var lastSR: UInt32
    /// Delay since that SR, in 1/65536 s.
    public var delaySinceLastSR: UInt32

    public static let size = 24

    public init(ssrc: UInt32, fractionLost: UInt8 = 0, cumulativeLost: Int32 = 0, highestSequence: UInt32 = 0, jitter: UInt32 = 0, lastSR: UInt32 = 0, delaySinceLastSR: UInt32 = 0) {
        self.ssrc = ssrc
        self.fractionLost = fractionLost
        self.cumulativeLost = max(-0x80_0000, min(0x7F_FFFF, cumulativeLost))
        self.highestSequence = highestSequence
        self.jitter = jitter
        self.lastSR = lastSR
        self.delaySinceLastSR = delaySinceLastSR
    }

    init(reading r: inout RTCPReader) throws(RTPParseError) {
        ssrc = try r.u32()
        fractionLost = try r.u8()
        let lost = try r.u24()
        cumulativeLost = lost & 0x80_0000 != 0 ? Int32(bitPattern: lost | 0xFF00_0000) : Int32(lost)
        highestSequence = try r.u32()
        jitter = try r.u32()
        lastSR = try r.u32()
        delaySinceLastSR = try r.u32()
    }

    func serialize(into out: inout [UInt8]) {
        out.append32(ssrc)
        out.append(fractionLost)
        out.append24(UInt32(bitPattern: cumulativeLost) & 0xFF_FFFF)
        out.append32(highestSequence)
        out.append32(jitter)
        out.append32(lastSR)
        out.append32(delaySinceLastSR)
    }

    /// Round-trip time in 1/65536 s from this block, given the arrival time of the report in the
    /// same "middle 32 bits of NTP" units; nil when the sender has no SR from us yet.
    public func roundTripTime(arrivalNTPMiddle: UInt32) -> UInt32? {
        guard lastSR != 0 else { return nil }
        let rtt = arrivalNTPMiddle &- delaySinceLastSR &- lastSR
        return rtt > 0x8000_0000 ? 0 : rtt  // a negative result (clock skew) counts as zero
    }
}
