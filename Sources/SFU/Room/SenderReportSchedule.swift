import RTP

/// A subscriber connection's own RTCP: when its reports are due, what each compound carries, and
/// the round trip read back from the client's reception reports (RFC 3550 6.4.1, A.8). Pure: the
/// connection passes in its consumers' sender reports and the clock, and sends what comes out.
struct SenderReportSchedule {
    /// One report per stream a second (libwebrtc sends about that often for video).
    static let intervalNanos: Int64 = 1_000_000_000
    /// SRs in one compound with their SDES: ten SRs (28 bytes each) and ten CNAME packets stay
    /// well under a 1,200-byte MTU.
    static let reportsPerCompound = 10
    /// Sent reports remembered for the round trip (a client answers the newest it has seen).
    static let rememberedReports = 64
    /// A round trip beyond this is not a measurement (the peer's LSR/DLSR are its own to choose).
    static let maxRTTNanos: Int64 = 5_000_000_000

    /// A stream's report and the CNAME its receiver synchronises by.
    struct Stream {
        var report: SenderReport
        var cname: String
    }

    /// The SSRC of our receiver report when there is no stream to report on.
    let ssrc: UInt32
    private(set) var lastNanos: Int64 = 0
    /// Our SR times by their NTP middle 32 bits (what a reception report's LSR echoes).
    private(set) var sent: [(middle: UInt32, nanos: Int64)] = []

    init(ssrc: UInt32 = .random(in: 1...UInt32.max)) {
        self.ssrc = ssrc
    }

    /// When the next reports are due.
    var nextNanos: Int64 { lastNanos + Self.intervalNanos }

    /// The compounds to send now (nil before they are due): the streams' SRs in batches of
    /// ``reportsPerCompound``, each SR's CNAME as an SDES packet of its own (aiortc's parser does
    /// not skip a chunk's padding, so a multi-chunk SDES made it drop the whole compound); an empty
    /// receiver report when there is no stream.
    mutating func compounds(_ streams: [Stream], nowNanos: Int64) -> [[RTCPPacket]]? {
        guard nowNanos - lastNanos >= Self.intervalNanos else { return nil }
        lastNanos = nowNanos
        for s in streams { sent.append((UInt32(truncatingIfNeeded: s.report.ntpTime >> 16), nowNanos)) }
        if sent.count > Self.rememberedReports { sent.removeFirst(sent.count - Self.rememberedReports) }
        guard !streams.isEmpty else { return [[.receiverReport(ReceiverReport(ssrc: ssrc))]] }
        return stride(from: 0, to: streams.count, by: Self.reportsPerCompound).map { start in
            let batch = streams[start..<min(start + Self.reportsPerCompound, streams.count)]
            return batch.map { RTCPPacket.senderReport($0.report) }
                + batch.map { .sourceDescription(SourceDescription(ssrc: $0.report.ssrc, cname: $0.cname)) }
        }
    }

    /// The round trip a reception report tells (now, minus when the SR it echoes went out, minus
    /// how long the client held it), nil when it echoes no SR of ours or is implausible.
    func roundTrip(_ r: ReceptionReport, nowNanos: Int64) -> Int64? {
        guard r.lastSR != 0, let sentAt = sent.last(where: { $0.middle == r.lastSR })?.nanos else { return nil }
        let held = Int64(r.delaySinceLastSR) * 1_000_000_000 / 65536
        let rtt = nowNanos - sentAt - held
        return rtt >= 0 && rtt <= Self.maxRTTNanos ? rtt : nil
    }
}
