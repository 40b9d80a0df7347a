/// Conversions between nanoseconds, RTP clock ticks and NTP 32.32 fixed-point times that cannot
/// trap on any input. The operands come from the network (sender reports, RTP timestamps, SDP
/// clock rates) or from long-lived state (an SR a day old), so the straightforward
/// `nanos * clockRate / 1e9` overflows Int64 after ~28 hours at 90 kHz, and `nanos << 32` silently
/// loses the high bits after ~4.3 s.
package enum MediaClock {
    /// Clock rates are kept within this range (SDP allows any number; no codec uses more than 192 kHz).
    package static let clockRateRange = 1...1_000_000

    /// RTP ticks in `nanos` at `clockRate` Hz (negative for negative durations), exact to the tick,
    /// for any Int64 `nanos`. Split into whole seconds and the rest so no product overflows.
    package static func ticks(nanos: Int64, clockRate: Int) -> Int64 {
        let rate = Int64(min(max(clockRate, clockRateRange.lowerBound), clockRateRange.upperBound))
        let seconds = nanos / 1_000_000_000
        let rest = nanos % 1_000_000_000
        // |seconds| <= 9.3e9 and rate <= 1e6: the product stays below 9.3e15.
        return seconds * rate + rest * rate / 1_000_000_000
    }

    /// Nanoseconds in `ticks` RTP ticks at `clockRate` Hz.
    package static func nanos(ticks: Int64, clockRate: Int) -> Int64 {
        let rate = Int64(min(max(clockRate, clockRateRange.lowerBound), clockRateRange.upperBound))
        let seconds = ticks / rate
        let rest = ticks % rate
        // |seconds| <= 9.2e18 / 1: clamp so the multiplication cannot overflow.
        let clamped = min(max(seconds, -9_000_000_000), 9_000_000_000)
        return clamped * 1_000_000_000 + rest * 1_000_000_000 / rate
    }

    /// An NTP 32.32 duration for `nanos` (negative counts as zero), wrapping modulo 2^64 like NTP times.
    package static func ntpDuration(nanos: Int64) -> UInt64 {
        let n = UInt64(max(0, nanos))
        let seconds = n / 1_000_000_000
        let fraction = ((n % 1_000_000_000) << 32) / 1_000_000_000
        return (seconds &<< 32) &+ fraction
    }

    /// Nanoseconds since the NTP epoch (1900) for an NTP 32.32 time. Never overflows: the largest
    /// NTP time is ~4.3e18 ns.
    package static func nanos(ntp: UInt64) -> Int64 {
        Int64(ntp >> 32) * 1_000_000_000 + Int64(((ntp & 0xFFFF_FFFF) * 1_000_000_000) >> 32)
    }

    /// The signed difference `a - b` of two NTP times in nanoseconds, or nil when it is beyond
    /// `limitNanos` (the two are not from one sane clock, or far apart in time).
    package static func difference(_ a: UInt64, _ b: UInt64, limitNanos: Int64) -> Int64? {
        let delta = Int64(bitPattern: a &- b)  // 32.32 fixed point, wrapping
        // |delta| < 2^63; limit the seconds part before scaling.
        let seconds = delta >> 32  // arithmetic shift: floor
        guard seconds > -(limitNanos / 1_000_000_000) - 2, seconds < limitNanos / 1_000_000_000 + 2 else { return nil }
        let fraction = delta & 0xFFFF_FFFF
        let nanos = seconds * 1_000_000_000 + (fraction * 1_000_000_000) >> 32
        guard abs(nanos) <= limitNanos else { return nil }
        return nanos
    }
}
