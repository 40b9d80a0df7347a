import CSFUShim
import Foundation

/// A serial executor on a thread of its own, below the rest of the process in the scheduler: work
/// that must never take CPU from the media workers (a composite recording's decoding, composing and
/// encoding) runs here.
///
/// With `schedIdle` the thread runs under Linux's SCHED_IDLE policy: a media worker (or any other
/// thread) that wakes on its core preempts it at once, whatever is left of its slice, and it runs
/// in the time the others leave. A nice value alone was not enough: with the composite 10 nicer
/// than the server on the server's one core, `make bench`'s (b) forwarded with a p99 latency of
/// 1.15-1.93 ms against 0.56-1.45 ms without a recording (12 pairs); under SCHED_IDLE, 0.60-1.21 ms
/// (8 runs, median 0.66; docs/BENCHMARKS.md). The price: on a core that other processes keep busy the thread gets
/// almost nothing, and the composite falls behind and drops video frames, which it is built to do
/// (``CompositeProcessor``). The nice value is still set: it is what applies if the kernel refuses
/// SCHED_IDLE.
///
/// Jobs run in order; a repeating tick runs between them when due (a late tick is not repeated:
/// the next one is an interval after it). All state is guarded by `condition`, which is what makes
/// the `@unchecked Sendable` hold. The thread ends after ``stop()`` once the queued jobs have run.
final class ProcessingThread: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var suspensions = 0
    private var tick: (interval: Int64, next: Int64, handler: @Sendable () -> Void)?
    private var stopping = false
    /// How much nicer than the process (its main thread: the nice it was started with) this thread
    /// runs, capped at 19. Not relative to the thread that made it: a Swift concurrency or dispatch
    /// thread can carry a nice of its own from its QoS.
    let niceIncrement: Int32
    private let baseNice: Int32
    private var niceResult: Bool?
    /// Whether the thread asks for SCHED_IDLE.
    let schedIdle: Bool
    private var schedIdleResult: Bool?

    init(name: String, niceIncrement: Int32, schedIdle: Bool = false) {
        self.niceIncrement = niceIncrement
        self.schedIdle = schedIdle
        baseNice = sfu_process_nice()
        let thread = Thread { [self] in run(name: name) }
        thread.start()
    }

    static func nowNanos() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds) }

    /// The calling thread's nice value.
    static func currentThreadNice() -> Int32 { sfu_thread_nice() }
    /// The process's nice value (its main thread's).
    static func processNice() -> Int32 { sfu_process_nice() }
    /// Whether the calling thread runs under SCHED_IDLE.
    static func currentThreadIsSchedIdle() -> Bool { sfu_thread_is_sched_idle() }

    /// Runs `job` after the jobs queued before it.
    func async(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Runs `handler` every `intervalNanos`, the first time `intervalNanos` from now (replaces any tick).
    func startTicking(everyNanos intervalNanos: Int64, _ handler: @escaping @Sendable () -> Void) {
        condition.lock()
        tick = (intervalNanos, Self.nowNanos() + intervalNanos, handler)
        condition.signal()
        condition.unlock()
    }

    func stopTicking() {
        condition.lock()
        tick = nil
        condition.unlock()
    }

    /// Holds jobs and ticks (a running one finishes) until as many ``resume()`` calls.
    func suspend() {
        condition.lock()
        suspensions += 1
        condition.unlock()
    }

    func resume() {
        condition.lock()
        suspensions = max(0, suspensions - 1)
        condition.signal()
        condition.unlock()
    }

    /// Ends the thread once the jobs queued so far have run; ticks stop at once.
    func stop() {
        condition.lock()
        stopping = true
        tick = nil
        condition.signal()
        condition.unlock()
    }

    /// Whether the nice value was applied (nil until the thread has started; false: the thread
    /// runs at the priority of the thread that made it, logged by the owner).
    var niceApplied: Bool? {
        condition.lock()
        defer { condition.unlock() }
        return niceResult
    }

    /// Whether SCHED_IDLE was applied (nil until the thread has started, or when not asked for).
    var schedIdleApplied: Bool? {
        condition.lock()
        defer { condition.unlock() }
        return schedIdleResult
    }

    private func run(name: String) {
        sfu_set_thread_name(name)
        let applied = sfu_set_thread_nice(min(19, baseNice + niceIncrement)) == 0
        let idle = schedIdle ? sfu_set_thread_sched_idle() == 0 : nil
        condition.lock()
        niceResult = applied
        schedIdleResult = idle
        while true {
            if suspensions == 0, !jobs.isEmpty {
                let batch = jobs
                jobs.removeAll(keepingCapacity: true)
                condition.unlock()
                for job in batch { job() }
                condition.lock()
                continue
            }
            if stopping, jobs.isEmpty { break }
            let now = Self.nowNanos()
            if suspensions == 0, let t = tick, now >= t.next {
                let next = t.next + t.interval
                tick?.next = next > now ? next : now + t.interval
                condition.unlock()
                t.handler()
                condition.lock()
                continue
            }
            if suspensions == 0, let t = tick {
                _ = condition.wait(until: Date(timeIntervalSinceNow: Double(t.next - now) / 1e9))
            } else {
                condition.wait()
            }
        }
        condition.unlock()
    }
}
