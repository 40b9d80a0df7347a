import RTP

/// Decides whether a publisher's sender report becomes its stream's RTP <-> NTP mapping.
///
/// Everything mapped through that pair moves with it: the sender reports we send subscribers, the
/// timestamps of a simulcast layer switch, and the recorder's timeline. An SR is taken only while it
/// agrees with the last one taken: its NTP time advanced by what our clock did (within
/// ``toleranceNanos`` plus 5% of the time between them, for network jitter) and its RTP time by
/// what its NTP time did. A crafted SR (NTP times years apart) is therefore dropped. A real client's
/// clock step (NTP resync, sleep/wake) persists: ``stepConfirmations`` SRs in a row that agree
/// with each other but not with the old mapping are taken as the new one.
struct SenderReportFilter {
    typealias Report = (ntp: UInt64, rtp: UInt32, arrivalNanos: Int64)

    private(set) var accepted: Report?
    /// Rejected SRs that agree with each other (a clock step, if it keeps up).
    private var stepCandidates: [Report] = []
    /// SRs not taken (counted for metrics and tests).
    private(set) var rejected = 0

    static let toleranceNanos: Int64 = 500_000_000
    static let stepConfirmations = 3

    /// Offers `report`; returns true when it is the stream's mapping from now on.
    mutating func offer(_ report: Report, clockRate: Int) -> Bool {
        guard let last = accepted else {
            accepted = report
            return true
        }
        if Self.agree(last, report, clockRate: clockRate) {
            accepted = report
            stepCandidates.removeAll()
            return true
        }
        rejected += 1
        if let previous = stepCandidates.last, Self.agree(previous, report, clockRate: clockRate) {
            stepCandidates.append(report)
        } else {
            stepCandidates = [report]
        }
        guard stepCandidates.count >= Self.stepConfirmations else { return false }
        accepted = report
        stepCandidates.removeAll()
        return true
    }

    /// Whether `b` continues `a`'s mapping: NTP advanced with our clock, RTP with NTP.
    static func agree(_ a: Report, _ b: Report, clockRate: Int) -> Bool {
        let elapsed = b.arrivalNanos - a.arrivalNanos
        let tolerance = toleranceNanos + abs(elapsed) / 20
        guard let ntpElapsed = MediaClock.difference(b.ntp, a.ntp, limitNanos: abs(elapsed) + tolerance) else { return false }
        guard abs(ntpElapsed - elapsed) <= tolerance else { return false }
        let rtpElapsed = Int64(Int32(bitPattern: b.rtp &- a.rtp))
        let expected = MediaClock.ticks(nanos: ntpElapsed, clockRate: clockRate)
        return abs(rtpElapsed - expected) <= MediaClock.ticks(nanos: tolerance, clockRate: clockRate)
    }
}
