/// Receiver report (RFC 3550 6.4.2, PT 201).
public struct ReceiverReport: Sendable, Equatable {
    public var ssrc: UInt32
    public var reports: [ReceptionReport]
    public var profileExtensions: [UInt8]

    public init(ssrc: UInt32, reports: [ReceptionReport] = [], profileExtensions: [UInt8] = []) {
        self.ssrc = ssrc
        self.reports = reports
        self.profileExtensions = profileExtensions
    }

    init(parsing bytes: UnsafeRawBufferPointer, header: RTCPHeader) throws(RTPParseError) {
        var r = RTCPReader(bytes, offset: 4)
        ssrc = try r.u32()
        var reports: [ReceptionReport] = []
        for _ in 0..<header.count { reports.append(try ReceptionReport(reading: &r)) }
        self.reports = reports
        profileExtensions = r.rest()
    }

    public func serialize(into out: inout [UInt8]) {
        RTCPWriter.write(&out, count: UInt8(min(reports.count, 31)), type: RTCPPacketType.receiverReport) { out in
            out.append32(ssrc)
            for report in reports.prefix(31) { report.serialize(into: &out) }
            out.append(contentsOf: profileExtensions)
        }
    }
}
