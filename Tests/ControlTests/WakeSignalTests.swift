import Foundation
import Testing
@testable import Control

/// The wait the outbox and uploader workers share: a wake is never lost, a timer ends only its own sleep.
@Suite("Wake signal")
struct WakeSignalTests {
    static func elapsed(_ body: () async -> Void) async -> Double {
        let start = ContinuousClock.now
        await body()
        let d = ContinuousClock.now - start
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }

    // A lost wake would leave a sleep of ten minutes waiting: the time limit fails the test then.
    // (No upper bound on how soon a wake lands: under a loaded test run the waking task itself
    // may wait seconds for a thread.)
    @Test(.timeLimit(.minutes(1))) func aWakeBeforeTheSleepEndsItAtOnceAndOnlyOnce() async {
        let s = WakeSignal()
        s.wake()
        s.wake()
        await s.sleep(millis: 600_000)
        // The two wakes were one: the next sleep runs to its time.
        #expect(await Self.elapsed { await s.sleep(millis: 200) } >= 0.19)
    }

    @Test(.timeLimit(.minutes(1))) func aWakeEndsASleepEarly() async {
        let s = WakeSignal()
        Task {
            try? await Task.sleep(for: .milliseconds(100))
            s.wake()
        }
        await s.sleep(millis: 600_000)
    }

    @Test func aSleepsTimerDoesNotEndALaterSleep() async {
        let s = WakeSignal()
        // A short sleep ended by a wake; its 300 ms timer would fire during the next sleep.
        Task { s.wake() }
        await s.sleep(millis: 300)
        #expect(await Self.elapsed { await s.sleep(millis: 800) } >= 0.79)
    }
}
