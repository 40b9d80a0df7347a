import Foundation
import Logging
import Testing
@testable import Recorder

/// The composite's processing thread: a serial executor below the media workers' priority.
@Suite("Processing thread (the composite's, nicer than the server)")
struct ProcessingThreadTests {
    final class Box<T: Sendable>: @unchecked Sendable {
        private let lock = NSLock()
        private var value: T
        init(_ value: T) { self.value = value }
        func with<R>(_ body: (inout T) -> R) -> R { lock.withLock { body(&value) } }
        var current: T { with { $0 } }
    }

    /// Waits for `thread` to run everything queued before this call.
    static func drain(_ thread: ProcessingThread) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in thread.async { c.resume() } }
    }

    static func until(_ seconds: Double, _ condition: () -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            if Date() > deadline { return false }
            try await Task.sleep(nanoseconds: 5_000_000)
        }
        return true
    }

    @Test func jobsRunInOrderAndTicksBetweenThemUntilStopped() async throws {
        let thread = ProcessingThread(name: "test-proc", niceIncrement: 10)
        defer { thread.stop() }
        let order = Box<[Int]>([])
        for i in 0..<200 { thread.async { order.with { $0.append(i) } } }
        await Self.drain(thread)
        #expect(order.current == Array(0..<200))

        let ticks = Box(0)
        thread.startTicking(everyNanos: 5_000_000) { ticks.with { $0 += 1 } }
        #expect(try await Self.until(10) { ticks.current >= 5 }, "ticks: \(ticks.current)")
        thread.stopTicking()
        await Self.drain(thread)  // a tick under way when it stopped has finished
        let stopped = ticks.current
        try await Task.sleep(nanoseconds: 60_000_000)
        await Self.drain(thread)
        #expect(ticks.current == stopped)
    }

    @Test func aSuspendedThreadHoldsItsJobsAndTicksUntilResumed() async throws {
        let thread = ProcessingThread(name: "test-proc", niceIncrement: 10)
        defer { thread.stop() }
        let ran = Box(false), ticks = Box(0)
        thread.suspend()
        thread.async { ran.with { $0 = true } }
        thread.startTicking(everyNanos: 2_000_000) { ticks.with { $0 += 1 } }
        try await Task.sleep(nanoseconds: 60_000_000)
        #expect(!ran.current && ticks.current == 0)
        thread.resume()
        #expect(try await Self.until(10) { ran.current && ticks.current > 0 })
    }

    @Test func itRunsNicerThanTheProcess() async throws {
        let base = ProcessingThread.processNice()
        let caller = ProcessingThread.currentThreadNice()
        let thread = ProcessingThread(name: "test-proc", niceIncrement: 10)
        defer { thread.stop() }
        let nice = Box<Int32?>(nil)
        thread.async { nice.with { $0 = ProcessingThread.currentThreadNice() } }
        await Self.drain(thread)
        #expect(thread.niceApplied == true)
        #expect(nice.current == min(19, base + 10))
        // The test's own thread is untouched (nice is per thread on Linux).
        #expect(ProcessingThread.currentThreadNice() == caller)
    }

    /// Made from a thread that is itself nicer (a dispatch or Swift concurrency thread can carry a
    /// QoS nice), it still runs at the process's nice + its increment, not at the maker's + it.
    @Test func itsNiceDoesNotDependOnTheThreadThatMadeIt() async throws {
        let outer = ProcessingThread(name: "test-outer", niceIncrement: 5)
        defer { outer.stop() }
        let seen = Box<(maker: Int32, inner: Int32?)?>(nil)
        outer.async {
            let inner = ProcessingThread(name: "test-inner", niceIncrement: 10)
            let nice = Box<Int32?>(nil)
            let done = DispatchSemaphore(value: 0)
            inner.async {
                nice.with { $0 = ProcessingThread.currentThreadNice() }
                done.signal()
            }
            done.wait()
            inner.stop()
            seen.with { $0 = (ProcessingThread.currentThreadNice(), nice.current) }
        }
        await Self.drain(outer)
        let base = ProcessingThread.processNice()
        #expect(seen.current?.maker == min(19, base + 5))
        #expect(seen.current?.inner == min(19, base + 10))
    }

    @Test func stopEndsTheThreadAfterTheQueuedJobs() async throws {
        let ran = Box(0)
        weak var gone: ProcessingThread?
        do {
            let thread = ProcessingThread(name: "test-proc", niceIncrement: 10)
            gone = thread
            thread.suspend()
            for _ in 0..<10 { thread.async { ran.with { $0 += 1 } } }
            thread.stop()
            thread.resume()
        }
        // The thread held the last reference until its loop ended.
        #expect(try await Self.until(10) { gone == nil })
        #expect(ran.current == 10)
    }
}

extension ProcessingThreadTests {
    @Test func schedIdleOnlyWhenAskedFor() async throws {
        let idle = ProcessingThread(name: "test-idle", niceIncrement: 0, schedIdle: true)
        let plain = ProcessingThread(name: "test-plain", niceIncrement: 0)
        defer {
            idle.stop()
            plain.stop()
        }
        let seen = Box<[Bool]>([])
        idle.async { seen.with { $0.append(ProcessingThread.currentThreadIsSchedIdle()) } }
        await Self.drain(idle)
        plain.async { seen.with { $0.append(ProcessingThread.currentThreadIsSchedIdle()) } }
        await Self.drain(plain)
        #expect(seen.current == [true, false])
        #expect(idle.schedIdleApplied == true && plain.schedIdleApplied == nil)
    }
}

@Suite("Composite processing priority")
struct CompositeProcessingPriorityTests {
    /// SCHED_IDLE (any other thread that wakes on its core preempts it) on the composite's thread,
    /// the nice value beside it as the fallback.
    @Test func theCompositeEncodesOnASchedIdleThreadNicerThanTheServer() async throws {
        let dir = NSTemporaryDirectory() + "composite-nice-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var options = CompositeEngine.Options()
        options.width = 320
        options.height = 180
        let processor = try CompositeProcessor(id: "rec_nice", options: options, originNanos: 0, path: dir + "/c.webm",
                                               inbox: CompositeInbox(maxVideoBacklog: 8), logger: Logger(label: "test"), clock: { 0 })
        processor.start()
        #expect(await processor.threadNiceForTesting() == min(19, ProcessingThread.processNice() + CompositeProcessor.threadNiceIncrement))
        #expect(await processor.threadIsSchedIdleForTesting())
        // Only that thread: the test's own keeps its policy.
        #expect(!ProcessingThread.currentThreadIsSchedIdle())
        processor.finish(endNanos: 0)
        _ = await processor.result()
    }
}
