/// Sender report (RFC 3550 6.4.1, PT 200).
public struct SenderReport: Sendable, Equatable {
    public var ssrc: UInt32
    /// 64-bit NTP timestamp (seconds since 1900 in the upper half, fraction in the lower).
    public var ntpTime: UInt64
    public var rtpTime: UInt32
    public var packetCount: UInt32
    public var octetCount: UInt32
    public var reports: [ReceptionReport]
    /// Profile-specific extension bytes after the report blocks.
    public var profileExtensions: [UInt8]

    public init(ssrc: UInt32, ntpTime: UInt64, rtpTime: UInt32, packetCount: UInt32, octetCount: UInt32, reports: [ReceptionReport] = [], profileExtensions: [UInt8] = []) {
        self.ssrc = ssrc
        self.ntpTime = ntpTime
        self.rtpTime = rtpTime
        self.packetCount = packetCount
        self.octetCount = octetCount
        self.reports = reports
        self.profileExtensions = profileExtensions
    }

    init(parsing bytes: UnsafeRawBufferPointer, header: RTCPHeader) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        ssrc = try r.u32()
        ntpTime = try r.u64()
        rtpTime = try r.u32()
        packetCount = try r.u32()
        octetCount = try r.u32()
        var reports: [ReceptionReport] = []
        for _ in 0..<header.count { reports.append(try ReceptionReport(reading: &r)) }
        self.reports = reports
        profileExtensions = r.rest()
    }

    /// The middle 32 bits of the NTP time, as echoed in the LSR field of reports.
    public var ntpMiddle: UInt32 { UInt32(truncatingIfNeeded: ntpTime >> 16) }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: UInt8(min(reports.count, 31)), type: RTCPPacketType.senderReport) { out in
            out.append32(ssrc)
            out.append64(ntpTime)
            out.append32(rtpTime)
            out.append32(packetCount)
            out.append32(octetCount)
            for report in reports.prefix(31) { report.serialize(into: &out) }
            out.append(contentsOf: profileExtensions)
        }
    }
}
