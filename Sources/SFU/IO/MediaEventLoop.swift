#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSFUShim
import Dispatch
import NIOConcurrencyHelpers
import NIOCore

/// A media worker's thread: an epoll loop over the worker's own descriptors that is also a NIO
/// ``EventLoop``, so the control plane reaches it with `execute`/`submit`, `NIOLoopBound` and
/// scheduled tasks as on any NIO loop.
///
/// Why not a NIO `SelectableEventLoop` with a `DatagramChannel`: the worker reads its UDP socket
/// itself with `recvmmsg` into preallocated slots and takes each datagram's kernel receive time
/// (SO_TIMESTAMPNS), which NIO's channels do not expose. Transport-wide congestion control feedback
/// must carry when a packet reached the host, not when this thread got to it: a worker delayed
/// by the scheduler would otherwise report its own delay as network queueing and make publishers
/// cut their bitrate.
///
/// Descriptor handlers are registered and called on the loop. Tasks and timers may come from any
/// thread; an eventfd wakes the loop for them.
package final class MediaEventLoop: EventLoop, @unchecked Sendable, CustomStringConvertible {
    package let name: String
    private let poller: Poller
    private let wakeFD: Int32
    private static let wakeToken = -1

    // Shared with other threads (under `lock`).
    private let lock = NIOLock()
    private var tasks: [@Sendable () -> Void] = []
    private var timers: [Timer] = []  // sorted by (deadline, id) descending: the next one is last
    private var nextTimerID: UInt64 = 0
    private var owner: pthread_t?
    private var state = State.running
    private var shutdownCallbacks: [(DispatchQueue, @Sendable (Error?) -> Void)] = []
    /// Where tasks run once the thread has stopped; counts as the loop (``inEventLoop``).
    private let afterShutdown: DispatchQueue
    private static let queueKey = DispatchSpecificKey<ObjectIdentifier>()
    /// The loop thread's scheduler slice. Its work comes in short bursts (a batch of datagrams is
    /// tens of microseconds) that must not wait behind another thread's long one on the same core
    /// (a composite recording's encode): with Linux's EEVDF scheduler (6.12+) a waking thread with
    /// a shorter slice than the running one preempts it. Its share of a contended core is set by
    /// nice values, not by this. On kernels without per-thread slices the call fails and the
    /// default applies (``sliceApplied``).
    package static let sliceNanos: UInt64 = 300_000
    /// Whether the kernel took ``sliceNanos`` for this loop's thread (nil until it started).
    package private(set) var sliceApplied: Bool? {
        get { lock.withLock { _sliceApplied } }
        set { lock.withLock { _sliceApplied = newValue } }
    }
    private var _sliceApplied: Bool?
    /// The calling thread's scheduler slice as the kernel reports it (0: default or unknown).
    package static func currentThreadSliceNanos() -> UInt64 { sfu_thread_slice_nanos() }

    // Confined to the loop.
    private var handlers: [Int32: (_ readable: Bool, _ writable: Bool) -> Void] = [:]
    private var running: [@Sendable () -> Void] = []

    private enum State { case running, stopping, stopped }

    private struct Timer {
        let deadline: NIODeadline
        let id: UInt64
        let run: @Sendable () -> Void
        let fail: @Sendable (Error) -> Void
        func before(_ other: Timer) -> Bool { deadline < other.deadline || (deadline == other.deadline && id < other.id) }
    }

    package var description: String { "MediaEventLoop(\(name))" }

    /// Starts the loop's thread.
    package init(name: String) throws {
        self.name = name
        afterShutdown = DispatchQueue(label: "\(name).stopped")
        poller = try Poller(maxEvents: 64)
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw MediaWorkerError.socket("eventfd", errno) }
        do {
            try poller.add(wakeFD, token: Self.wakeToken)
        } catch {
            Glibc.close(wakeFD)
            throw error
        }
        let started = DispatchSemaphore(value: 0)
        let box = Unmanaged.passRetained(ThreadBody { [self] in
            lock.withLock { owner = pthread_self() }
            sfu_set_thread_name(name)
            sliceApplied = sfu_set_thread_slice_nanos(Self.sliceNanos) == 0
            started.signal()
            run()
        })
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            guard let raw else { return nil }
            Unmanaged<ThreadBody>.fromOpaque(raw).takeRetainedValue().body()
            return nil
        }, box.toOpaque())
        guard created == 0 else {
            box.release()
            Glibc.close(wakeFD)
            throw MediaWorkerError.socket("pthread_create", created)
        }
        pthread_detach(thread)
        afterShutdown.setSpecific(key: Self.queueKey, value: ObjectIdentifier(self))
        started.wait()
    }

    deinit { Glibc.close(wakeFD) }

    private final class ThreadBody {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    // MARK: descriptors (on the loop)

    /// Calls `handler(readable, writable)` on the loop whenever `fd` is ready (level-triggered).
    package func register(_ fd: Int32, writable: Bool = false, handler: @escaping (_ readable: Bool, _ writable: Bool) -> Void) throws {
        preconditionInEventLoop()
        try poller.add(fd, token: Int(fd), writable: writable)
        handlers[fd] = handler
    }

    /// Watches `fd` for writability too, or stops doing so.
    package func watchWritable(_ fd: Int32, _ on: Bool) {
        preconditionInEventLoop()
        poller.modify(fd, token: Int(fd), writable: on)
    }

    package func deregister(_ fd: Int32) {
        preconditionInEventLoop()
        guard handlers.removeValue(forKey: fd) != nil else { return }
        poller.remove(fd)
    }

    // MARK: EventLoop

    package var inEventLoop: Bool {
        let me = pthread_self()
        if lock.withLock({ owner.map { pthread_equal($0, me) != 0 } ?? false }) { return true }
        return DispatchQueue.getSpecific(key: Self.queueKey) == ObjectIdentifier(self)
    }

    package func execute(_ task: @escaping @Sendable () -> Void) {
        let accepted = lock.withLock { () -> Bool in
            guard state != .stopped else { return false }
            tasks.append(task)
            return true
        }
        guard accepted else {
            // After shutdown, on a serial queue: futures of this loop (a request racing the server's
            // shutdown) still complete instead of leaving their waiters hanging.
            afterShutdown.async(execute: task)
            return
        }
        if !inEventLoop { wake() }
    }

    package func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise: EventLoopPromise<T> = makePromise()
        let run: @Sendable () -> Void = {
            // On the loop: the result need not be Sendable.
            do { promise.assumeIsolated().succeed(try task()) } catch { promise.fail(error) }
        }
        let id = lock.withLock { () -> UInt64? in
            guard state != .stopped else { return nil }
            nextTimerID += 1
            let t = Timer(deadline: deadline, id: nextTimerID, run: run, fail: { promise.fail($0) })
            var i = timers.count
            while i > 0 && timers[i - 1].before(t) { i -= 1 }  // keep the earliest last
            timers.insert(t, at: i)
            return nextTimerID
        }
        guard let id else {
            promise.fail(EventLoopError.shutdown)
            return Scheduled(promise: promise, cancellationTask: {})
        }
        if !inEventLoop { wake() }
        return Scheduled(promise: promise) { [self] in
            let removed = lock.withLock { () -> Bool in
                guard let i = timers.firstIndex(where: { $0.id == id }) else { return false }
                timers.remove(at: i)
                return true
            }
            if removed { promise.fail(EventLoopError.cancelled) }
        }
    }

    package func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        scheduleTask(deadline: .now() + delay, task)
    }

    package func preconditionInEventLoop(file: StaticString = #file, line: UInt = #line) {
        precondition(inEventLoop, "not on \(name)", file: file, line: line)
    }

    package func preconditionNotInEventLoop(file: StaticString = #file, line: UInt = #line) {
        precondition(!inEventLoop, "on \(name)", file: file, line: line)
    }

    /// Stops the loop once the tasks already queued have run; timers not yet due fail with
    /// `EventLoopError.shutdown`. Tasks queued afterwards run on a serial queue.
    package func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable (Error?) -> Void) {
        let done = lock.withLock { () -> Bool in
            if state == .stopped { return true }
            state = .stopping
            shutdownCallbacks.append((queue, callback))
            return false
        }
        if done {
            queue.async { callback(nil) }
        } else {
            wake()
        }
    }

    // MARK: the loop

    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    private func run() {
        while true {
            poller.wait(timeoutMillis: timeoutMillis()) { token, readable, writable in
                if token == Self.wakeToken {
                    var value: UInt64 = 0
                    _ = Glibc.read(wakeFD, &value, 8)
                } else {
                    handlers[Int32(truncatingIfNeeded: token)]?(readable, writable)
                }
            }
            runDueTimers()
            runTasks()
            let stop = lock.withLock { () -> [Timer]? in
                guard state == .stopping, tasks.isEmpty else { return nil }
                state = .stopped
                owner = nil  // the thread's id may be reused once it exits
                defer { timers.removeAll() }
                return timers
            }
            if let stop {
                for timer in stop { timer.fail(EventLoopError.shutdown) }
                break
            }
        }
        let callbacks = lock.withLock { () -> [(DispatchQueue, @Sendable (Error?) -> Void)] in
            defer { shutdownCallbacks.removeAll() }
            return shutdownCallbacks
        }
        handlers.removeAll()  // the eventfd stays open until deinit: other threads may still write it
        for (queue, callback) in callbacks { queue.async { callback(nil) } }
    }

    /// 0 when tasks are waiting, else until the next timer (rounded up to a millisecond), else forever.
    private func timeoutMillis() -> Int32 {
        lock.withLock {
            if !tasks.isEmpty || state == .stopping { return 0 }
            guard let next = timers.last else { return -1 }
            let now = NIODeadline.now()
            if next.deadline <= now { return 0 }
            return Int32(clamping: (next.deadline.uptimeNanoseconds - now.uptimeNanoseconds) / 1_000_000 + 1)
        }
    }

    private func runDueTimers() {
        let now = NIODeadline.now()
        while true {
            let due = lock.withLock { () -> Timer? in
                guard let t = timers.last, t.deadline <= now else { return nil }
                return timers.removeLast()
            }
            guard let due else { return }
            due.run()
        }
    }

    /// Runs the queued tasks, including those they queue, a bounded number of rounds so that
    /// descriptors are not starved by tasks that keep rescheduling themselves.
    private func runTasks() {
        for _ in 0..<4 {
            lock.withLock { swap(&tasks, &running) }
            if running.isEmpty { return }
            for task in running { task() }
            running.removeAll(keepingCapacity: true)
        }
    }
}
