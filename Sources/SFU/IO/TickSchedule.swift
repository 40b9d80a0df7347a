/// When each of a worker's sessions is next due for a tick (sans-IO: the worker passes its clock).
/// Due times sit side by side in one array, so the 20 ms scan touches only the sessions that are
/// due (most subscriber connections every 250 ms, publisher connections every tick). A session is
/// due at once when added; after its tick it is asked when next (`nextDue`).
/// Sessions are objects (compared by identity); the type is generic so that a test can schedule its
/// own objects (the worker's are `any WorkerSession`, an existential Swift does not let stand for a
/// generic `AnyObject` parameter).
struct TickSchedule<Session> {
    private var entries: [(due: Int64, session: Session)] = []
    /// Taken by ``takeDue(nowNanos:into:)``, waiting for ``reschedule(nowNanos:nextDue:)``.
    private static var taken: Int64 { .max }

    var count: Int { entries.count }

    mutating func add(_ session: Session) { entries.append((0, session)) }

    mutating func remove(_ session: Session) {
        let id = Self.identity(session)
        entries.removeAll { Self.identity($0.session) == id }
    }

    private static func identity(_ session: Session) -> ObjectIdentifier { ObjectIdentifier(session as AnyObject) }

    /// Appends the sessions due at `nowNanos` to `due` (in the order they were added) and marks them
    /// taken: they are not due again until rescheduled.
    mutating func takeDue(nowNanos: Int64, into due: inout [Session]) {
        for i in entries.indices where entries[i].due <= nowNanos {
            entries[i].due = Self.taken
            due.append(entries[i].session)
        }
    }

    /// Asks each taken session (still here) when it is next due.
    mutating func reschedule(nowNanos: Int64, nextDue: (Session, Int64) -> Int64) {
        for i in entries.indices where entries[i].due == Self.taken {
            entries[i].due = nextDue(entries[i].session, nowNanos)
        }
    }

    /// When `session` is next due (nil: not scheduled, or taken).
    func due(_ session: Session) -> Int64? {
        let id = Self.identity(session)
        return entries.first { Self.identity($0.session) == id }.flatMap { $0.due == Self.taken ? nil : $0.due }
    }
}
