import Testing
@testable import RTP

@Suite("MediaClock: conversions that cannot trap")
struct MediaClockTests {
    @Test(arguments: [
        // (nanos, clock rate, ticks)
        (Int64(1_000_000_000), 90000, Int64(90000)),
        (Int64(20_000_000), 48000, Int64(960)),
        (Int64(-1_000_000_000), 90000, Int64(-90000)),
        (Int64(30 * 3600) * 1_000_000_000, 90000, Int64(30 * 3600) * 90000),  // 30 h: the naive product overflows Int64
        (Int64.max, 90000, Int64.max / 1_000_000_000 * 90000 + (Int64.max % 1_000_000_000) * 90000 / 1_000_000_000),
        (Int64.min, 90000, Int64.min / 1_000_000_000 * 90000 + (Int64.min % 1_000_000_000) * 90000 / 1_000_000_000),
        (Int64(1_000_000_000), Int.max, Int64(1_000_000)),  // clock rate clamped
        (Int64(1_000_000_000), 0, Int64(1)),
    ])
    func ticks(nanos: Int64, rate: Int, expected: Int64) {
        #expect(MediaClock.ticks(nanos: nanos, clockRate: rate) == expected)
    }

    @Test func ntpDurationKeepsTheSecondsPastFourSeconds() {
        // The old `(nanos << 32) / 1e9` lost the high bits after 2^32 ns (~4.3 s).
        #expect(MediaClock.ntpDuration(nanos: 10_000_000_000) == 10 << 32)
        #expect(MediaClock.ntpDuration(nanos: 1_500_000_000) == (1 << 32) + (1 << 31))
        #expect(MediaClock.ntpDuration(nanos: -5) == 0)
        _ = MediaClock.ntpDuration(nanos: .max)
    }

    @Test func differenceIsSignedAndBounded() {
        let a: UInt64 = 3_900_000_000 << 32
        #expect(MediaClock.difference(a + (2 << 32), a, limitNanos: 10_000_000_000) == 2_000_000_000)
        #expect(MediaClock.difference(a, a + (1 << 31), limitNanos: 10_000_000_000) == -500_000_000)
        #expect(MediaClock.difference(a, 0, limitNanos: 60_000_000_000) == nil)
        #expect(MediaClock.difference(0, .max, limitNanos: 60_000_000_000) == 0)  // 1/2^32 s apart, wrapping
        for (a, b) in [(UInt64.max, UInt64(0)), (0, .max), (1 << 63, 0), (0, 1 << 63), (.max / 3, .max / 7)] {
            _ = MediaClock.difference(a, b, limitNanos: .max)
            _ = MediaClock.difference(a, b, limitNanos: 0)
        }
    }

    @Test func nanosOfTicksRoundTrip() {
        #expect(MediaClock.nanos(ticks: 90000, clockRate: 90000) == 1_000_000_000)
        #expect(MediaClock.nanos(ticks: -960, clockRate: 48000) == -20_000_000)
        _ = MediaClock.nanos(ticks: .max, clockRate: 1)
        _ = MediaClock.nanos(ticks: .min, clockRate: 1)
    }
}
