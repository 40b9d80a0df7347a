/// A token bucket on a caller-supplied clock: `rate` tokens a second, at most `burst` saved up.
/// Starts full. Used to bound what one peer's input can make the server do (RTCP processing,
/// retransmissions), so a hostile or broken peer cannot take its room's loop from the others.
package struct TokenBucket {
    package private(set) var tokens: Double
    private var lastNanos: Int64?

    package init(burst: Double) { tokens = burst }

    /// Takes `cost` tokens if there are that many. - Returns: whether it did.
    package mutating func take(_ cost: Double, rate: Double, burst: Double, nowNanos: Int64) -> Bool {
        if let last = lastNanos { tokens = min(tokens + Double(max(0, nowNanos - last)) / 1e9 * rate, burst) } else { tokens = min(tokens, burst) }
        lastNanos = nowNanos
        guard tokens >= cost else { return false }
        tokens -= cost
        return true
    }
}
