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

    @Test func aWakeBeforeTheSleepEndsItAtOnceAndOnlyOnce() async {
        let s = WakeSignal()
        s.wake()
        s.wake()
        #expect(await Self.elapsed { await s.sleep(millis: 10_000) } < 1)
        // The two wakes were one: the next sleep runs to its time.
        #expect(await Self.elapsed { await s.sleep(millis: 200) } >= 0.19)
    }

    @Test func aWakeEndsASleepEarly() async {
        let s = WakeSignal()
        Task {
            try? await Task.sleep(for: .milliseconds(100))
            s.wake()
        }
        #expect(await Self.elapsed { await s.sleep(millis: 10_000) } < 5)
    }

    @Test func aSleepsTimerDoesNotEndALaterSleep() async {
        let s = WakeSignal()
        // A short sleep ended by a wake; its 300 ms timer would fire during the next sleep.
        Task { s.wake() }
        await s.sleep(millis: 300)
        #expect(await Self.elapsed { await s.sleep(millis: 800) } >= 0.79)
    }
}
