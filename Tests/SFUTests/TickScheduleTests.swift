import Testing
@testable import SFU

/// The worker's tick schedule on a fake clock: which sessions a 20 ms tick touches, exactly.
/// (This replaced a test that slept on a real worker and could only bound its counts.)
@Suite("Tick schedule: sessions are ticked when due, on a fake clock")
struct TickScheduleTests {
    /// A session due every `interval` (nil: every tick, the default).
    final class Session {
        let interval: Int64?
        var ticks: [Int64] = []
        init(interval: Int64?) { self.interval = interval }
        func nextDue(after now: Int64) -> Int64 { interval.map { now + $0 } ?? now }
    }

    static let tick: Int64 = 20_000_000

    /// What the worker does every 20 ms: tick what is due, then ask each ticked session when next.
    static func run(_ schedule: inout TickSchedule<Session>, from start: Int64, to end: Int64, ticking: (Session, Int64) -> Void = { $0.ticks.append($1) }) {
        var due: [Session] = []
        for now in stride(from: start, through: end, by: Int(Self.tick)) {
            due.removeAll()
            schedule.takeDue(nowNanos: now, into: &due)
            for s in due { ticking(s, now) }
            schedule.reschedule(nowNanos: now) { s, now in s.nextDue(after: now) }
        }
    }

    @Test func eachSessionIsTickedWhenItIsDueAndNotOtherwise() {
        var schedule = TickSchedule<Session>()
        let every = Session(interval: nil)
        let sparse = Session(interval: 200_000_000)
        let odd = Session(interval: 250_000_000)
        for s in [every, sparse, odd] { schedule.add(s) }
        Self.run(&schedule, from: 0, to: 1_100_000_000)
        // 0, 20, ..., 1100 ms: 56 ticks; a session due every 200 ms at 0, 200, ..., 1000; one due
        // every 250 ms at the first tick at or after its time (0, 260, 520, 780, 1040).
        #expect(every.ticks.count == 56)
        #expect(sparse.ticks == Array(stride(from: Int64(0), through: 1_000_000_000, by: 200_000_000)))
        #expect(odd.ticks == [0, 260_000_000, 520_000_000, 780_000_000, 1_040_000_000])
        #expect(schedule.due(sparse) == 1_200_000_000)
    }

    @Test func aRemovedSessionIsNotTickedAgain() {
        var schedule = TickSchedule<Session>()
        let kept = Session(interval: nil)
        let removed = Session(interval: nil)
        schedule.add(kept)
        schedule.add(removed)
        Self.run(&schedule, from: 0, to: 200_000_000)
        #expect(removed.ticks.count == 11)
        schedule.remove(removed)
        #expect(schedule.count == 1 && schedule.due(removed) == nil)
        Self.run(&schedule, from: 220_000_000, to: 1_100_000_000)
        #expect(removed.ticks.count == 11)
        #expect(kept.ticks.count == 56)
    }

    /// A session removed by another's tick (a participant leaving takes both its connections) is
    /// not rescheduled; one added meanwhile is due at once.
    @Test func removalAndAdditionDuringATick() {
        var schedule = TickSchedule<Session>()
        let a = Session(interval: nil)
        let b = Session(interval: nil)
        schedule.add(a)
        schedule.add(b)
        let late = Session(interval: 100_000_000)
        var due: [Session] = []
        schedule.takeDue(nowNanos: 0, into: &due)
        #expect(due.count == 2 && schedule.due(a) == nil, "taken sessions are not due until rescheduled")
        schedule.remove(b)
        schedule.add(late)
        schedule.reschedule(nowNanos: 0) { s, now in s.nextDue(after: now) }
        #expect(schedule.count == 2 && schedule.due(a) == 0 && schedule.due(late) == 0)
        due.removeAll()
        schedule.takeDue(nowNanos: 20_000_000, into: &due)
        #expect(due.map(ObjectIdentifier.init) == [ObjectIdentifier(a), ObjectIdentifier(late)])
    }
}
