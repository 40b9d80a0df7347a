import SFU

/// The connection grade of a participant (docs/API.md, "Quality"): the worst of what each known
/// figure says, by these thresholds (a figure not known yet does not count):
///
/// | figure | excellent | good | fair | poor |
/// |---|---|---|---|---|
/// | loss, the worse of uplink and downlink | < 1 % | < 3 % | < 8 % | more |
/// | round-trip time | < 150 ms | < 300 ms | < 500 ms | more |
/// | jitter | < 20 ms | < 40 ms | < 80 ms | more |
/// | available downlink, when it receives video | >= 1.5 Mbit/s | >= 600 kbit/s | >= 250 kbit/s | less, or a video paused for bandwidth |
///
/// Loss and delay say how the connection behaves; the downlink says what it can carry: a 500 kbit/s
/// link gets no HD video, and a viewer on one sees a smaller picture than on an open path.
enum QualityGrade: String, Sendable, CaseIterable, Comparable {
    case excellent, good, fair, poor

    static func < (a: QualityGrade, b: QualityGrade) -> Bool { a.rank < b.rank }
    private var rank: Int { Self.allCases.firstIndex(of: self) ?? 0 }

    /// The grade for `value` against `limits` (excellent, good, fair bounds; below each is better).
    static func below(_ value: Double, _ limits: (Double, Double, Double)) -> QualityGrade {
        value < limits.0 ? .excellent : value < limits.1 ? .good : value < limits.2 ? .fair : .poor
    }

    static func of(_ q: QualityFigures, subscriptions: [SubscriptionSnapshot]) -> QualityGrade {
        var grade = QualityGrade.excellent
        if let loss = [q.uplinkLoss, q.downlinkLoss].compactMap({ $0 }).max() { grade = max(grade, below(loss, (0.01, 0.03, 0.08))) }
        if let rtt = q.rttMs { grade = max(grade, below(rtt, (150, 300, 500))) }
        if let jitter = q.jitterMs { grade = max(grade, below(jitter, (20, 40, 80))) }
        let video = subscriptions.filter { $0.kind == .video }
        if !video.isEmpty {
            if video.contains(where: \.paused) { grade = .poor }
            if let available = q.downlinkEstimate {
                let mbps = Double(available) / 1_000_000
                grade = max(grade, mbps >= 1.5 ? .excellent : mbps >= 0.6 ? .good : mbps >= 0.25 ? .fair : .poor)
            }
        }
        return grade
    }
}
