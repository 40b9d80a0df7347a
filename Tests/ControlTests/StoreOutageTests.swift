import Foundation
import Logging
import Testing
@testable import Control

/// The store while its database is unreachable (PostgreSQL stopped): joins keep finding their rooms
/// (cached), and writes made meanwhile are retried in order until the database answers again.
@Suite("Metadata store during a database outage")
struct StoreOutageTests {
    /// SQLite that fails every statement with a connection error while `down`, as libpq does when
    /// the server is stopped.
    final class FlakyDatabase: SQLDatabase, @unchecked Sendable {
        let inner: SQLiteDatabase
        private let lock = NSLock()
        private var isDown = false
        var down: Bool {
            get { lock.withLock { isDown } }
            set { lock.withLock { isDown = newValue } }
        }
        var backend: String { inner.backend }

        init(path: String) throws { inner = try SQLiteDatabase(path: path) }

        func execute(_ sql: String, _ parameters: [SQLValue]) throws(SQLError) -> [SQLRow] {
            if down { throw .connection("server closed the connection unexpectedly (test outage)") }
            return try inner.execute(sql, parameters)
        }

        func reconnect() throws(SQLError) {
            if down { throw .connection("connection refused (test outage)") }
        }
    }

    @Test func joinsReadCachedRoomsAndWritesLandAfterTheOutage() async throws {
        let path = NSTemporaryDirectory() + "sfu-outage-\(UUID().uuidString).sqlite"
        defer { unlink(path) }
        let db = try FlakyDatabase(path: path)
        let store = try await MetadataStore.open(database: db, logger: Logger(label: "outage-test"), retryWindowSeconds: 20)
        let room = RoomRecord(id: "room-o", name: "Outage", createdAt: 1, maxParticipants: 4, emptyTimeoutS: 300, maxDurationS: 3600, autoRecord: false)
        try await store.createRoom(room)

        db.down = true
        // Writes during the outage (a join's audit rows): the store's thread retries the first.
        let join = Task {
            try await store.recordJoin(ParticipantSessionRecord(id: "pe_1", roomID: "room-o", userID: "u1", name: "U", role: "patient", joinedAt: 5))
        }
        try await Task.sleep(for: .milliseconds(200))
        let event = Task { try await store.appendEvent(RoomEvent(id: "ev_1", roomID: "room-o", at: 6, kind: "participant_joined", userID: "u1")) }
        try await Task.sleep(for: .milliseconds(200))
        // A join looks its room up: from the cache, without queueing behind the retrying write.
        let start = ContinuousClock.now
        #expect(try await store.room(id: "room-o") == room)
        #expect(ContinuousClock.now - start < .milliseconds(200))
        // A close is seen by the next lookup at once, while its write waits for the database.
        let close = Task { try await store.closeRoom(id: "room-o", at: 7, reason: "api") }
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await store.room(id: "room-o")?.closedAt == 7)

        try await Task.sleep(for: .seconds(1))
        db.down = false
        try await join.value
        try await event.value
        try await close.value
        // Every write landed.
        #expect(try await store.participantSessions(roomID: "room-o").map(\.id) == ["pe_1"])
        #expect(try await store.events(roomID: "room-o").map(\.id) == ["ev_1"])
        #expect(try db.inner.execute("SELECT closed_at FROM rooms WHERE id = 'room-o'").first?["closed_at"].int == 7)
        await store.close()
    }

    /// An unknown room is still looked up in the database (and cached once found).
    @Test func uncachedRoomsComeFromTheDatabase() async throws {
        let path = NSTemporaryDirectory() + "sfu-outage-\(UUID().uuidString).sqlite"
        defer { unlink(path) }
        let db = try FlakyDatabase(path: path)
        try db.inner.execute("CREATE TABLE IF NOT EXISTS x (a INTEGER)")
        let store = try await MetadataStore.open(database: db, logger: Logger(label: "outage-test"), retryWindowSeconds: 1)
        try db.inner.execute("""
            INSERT INTO rooms (id, name, created_at, max_participants, empty_timeout_s, max_duration_s, auto_record)
            VALUES ('room-db', 'From the database', 1, 2, 60, 600, 0)
            """)
        #expect(try await store.room(id: "room-db")?.name == "From the database")
        #expect(try await store.room(id: "nope") == nil)
        db.down = true
        #expect(try await store.room(id: "room-db")?.name == "From the database")
        await #expect(throws: SQLError.self) { try await store.room(id: "nope") }
        await store.close()
    }
}
