#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSFUShim

/// The two clocks the media path reads: monotonic for timers and the transports, real time to
/// convert the kernel's SO_TIMESTAMPNS receive times (CLOCK_REALTIME) into monotonic ones.
package enum SystemClock {
    package static var monotonicNanos: Int64 { read(CLOCK_MONOTONIC) }
    package static var realtimeNanos: Int64 { read(CLOCK_REALTIME) }

    static func read(_ clock: clockid_t) -> Int64 {
        var ts = timespec()
        clock_gettime(clock, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
}
