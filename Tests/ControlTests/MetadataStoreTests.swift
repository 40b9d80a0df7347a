import Foundation
import Logging
import SFU
import Testing
@testable import Control

/// The store backends the suite runs on. PostgreSQL needs the throwaway server `make test` starts
/// (SFU_TEST_POSTGRES_URL); each test gets its own schema there, its own file for SQLite.
enum StoreBackend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgresql
    var testDescription: String { rawValue }

    static let postgresURL = ProcessInfo.processInfo.environment["SFU_TEST_POSTGRES_URL"]

    func open(retryWindowSeconds: Double = 30) async throws -> (MetadataStore, String) {
        let logger = Logger(label: "store-test")
        switch self {
        case .sqlite:
            let dir = NSTemporaryDirectory() + "sfu-store-\(UUID().uuidString)"
            return (try await MetadataStore.open(databaseURL: nil, dataDir: dir, logger: logger, retryWindowSeconds: retryWindowSeconds), dir)
        case .postgresql:
            let base = try #require(Self.postgresURL, "SFU_TEST_POSTGRES_URL is not set: run `make test`, which starts a throwaway PostgreSQL")
            let schema = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
            let admin = try PostgresDatabase(url: base)
            try admin.execute("CREATE SCHEMA \(schema)")
            let url = base + (base.contains("?") ? "&" : "?") + "options=-csearch_path%3D\(schema)"
            return (try await MetadataStore.open(databaseURL: url, dataDir: "/nonexistent", logger: logger, retryWindowSeconds: retryWindowSeconds), schema)
        }
    }
}

@Suite("Metadata store (SQLite and PostgreSQL, one suite)", .serialized)
struct MetadataStoreTests {
    @Test(arguments: StoreBackend.allCases)
    func roomsLifecycle(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        #expect(store.backend == backend.rawValue)
        let a = RoomRecord(id: "room-a", name: "Consultation A", createdAt: 1_000, maxParticipants: 6, emptyTimeoutS: 300, maxDurationS: 7200, autoRecord: true)
        let b = RoomRecord(id: "room-b", name: "B ‘quoted’ ünïcode", createdAt: 2_000, maxParticipants: 2, emptyTimeoutS: 60, maxDurationS: 600, autoRecord: false)
        try await store.createRoom(a)
        try await store.createRoom(b)
        try await store.createRoom(a)  // idempotent (a retried insert must not fail)
        #expect(try await store.room(id: "room-a") == a)
        #expect(try await store.room(id: "nope") == nil)
        #expect(try await store.rooms().map(\.id) == ["room-a", "room-b"])
        try await store.closeRoom(id: "room-a", at: 5_000, reason: "closed by API")
        try await store.closeRoom(id: "room-a", at: 9_000, reason: "again")  // first close wins
        #expect(try await store.rooms().map(\.id) == ["room-b"])
        let closed = try #require(try await store.room(id: "room-a"))
        #expect(closed.closedAt == 5_000 && closed.closeReason == "closed by API")
        #expect(try await store.rooms(includeClosed: true).count == 2)
    }

    @Test(arguments: StoreBackend.allCases)
    func openRoomOccupancyCountsWhoIsInAndWhenTheLastOneLeft(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        for (id, at) in [("busy", 1), ("empty", 2), ("left", 3), ("closed", 4)] {
            try await store.createRoom(RoomRecord(id: id, name: id, createdAt: Int64(at), maxParticipants: 9, emptyTimeoutS: 60, maxDurationS: 600, autoRecord: false))
        }
        // busy: two in, one left (at 70) and came back; left: everyone gone, the last at 80.
        for (i, (room, leftAt)) in [("busy", nil), ("busy", 70), ("busy", nil), ("left", 50), ("left", 80), ("closed", nil)].enumerated() {
            try await store.recordJoin(ParticipantSessionRecord(id: "s\(i)", roomID: room, userID: "u\(i)", name: "n", role: "patient", joinedAt: 10))
            if let leftAt { try await store.recordLeave(sessionID: "s\(i)", at: Int64(leftAt), reason: "left") }
        }
        try await store.closeRoom(id: "closed", at: 99, reason: "closed by API")
        let occupancy = try await store.openRoomOccupancy()
        #expect(occupancy.map(\.room.id) == ["busy", "empty", "left"])
        #expect(occupancy.map(\.present) == [2, 0, 0])
        #expect(occupancy.map(\.lastLeftAt) == [70, nil, 80])
    }

    @Test(arguments: StoreBackend.allCases)
    func participantsEventsAndQuality(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        try await store.createRoom(RoomRecord(id: "r", name: "r", createdAt: 1, maxParticipants: 4, emptyTimeoutS: 1, maxDurationS: 1, autoRecord: false))
        try await store.recordJoin(ParticipantSessionRecord(id: "s1", roomID: "r", userID: "dr-house", name: "Dr House", role: "doctor", joinedAt: 10))
        try await store.recordJoin(ParticipantSessionRecord(id: "s2", roomID: "r", userID: "pat-1", name: "Patient", role: "patient", joinedAt: 20))
        try await store.recordLeave(sessionID: "s2", at: 90, reason: "signal closed")
        let sessions = try await store.participantSessions(roomID: "r")
        #expect(sessions.map(\.userID) == ["dr-house", "pat-1"])
        #expect(sessions[1].leftAt == 90 && sessions[1].leaveReason == "signal closed" && sessions[0].leftAt == nil)
        for (i, kind) in ["participant_joined", "track_published", "recording_started"].enumerated() {
            try await store.appendEvent(RoomEvent(id: "e\(i)", roomID: "r", at: Int64(100 + i), kind: kind, userID: "dr-house", detail: "{\"n\":\(i)}"))
        }
        #expect(try await store.events(roomID: "r").map(\.kind) == ["participant_joined", "track_published", "recording_started"])
        let q = QualitySample(roomID: "r", participantSessionID: "s1", at: 200, rttMs: 23.5, lossFraction: 0.02, jitterMs: 4.25, bitrateBps: 1_500_000)
        try await store.addQualitySample(q)
        try await store.addQualitySample(QualitySample(roomID: "r", participantSessionID: "s1", at: 201, rttMs: nil, lossFraction: nil, jitterMs: nil, bitrateBps: nil))
        // Read back with the user of the session each sample belongs to.
        var withUser = q
        withUser.userID = "dr-house"
        #expect(try await store.qualitySamples(roomID: "r") == [withUser, QualitySample(roomID: "r", participantSessionID: "s1", at: 201, rttMs: nil,
                                                                                         lossFraction: nil, jitterMs: nil, bitrateBps: nil,
                                                                                         userID: "dr-house")])
    }

    @Test(arguments: StoreBackend.allCases)
    func snapshotsByRoom(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        for room in ["r1", "r2"] {
            try await store.createRoom(RoomRecord(id: room, name: room, createdAt: 1, maxParticipants: 4, emptyTimeoutS: 1, maxDurationS: 1, autoRecord: false))
        }
        let a = SnapshotRecord(id: "snap_a", roomID: "r1", userID: "pt", source: "camera", takenAt: 1_000, width: 320, height: 240, format: "jpeg",
                               sizeBytes: 4_000, path: "/data/recordings/snapshots/snap_a.jpg")
        var b = a
        (b.id, b.takenAt, b.source, b.format, b.path) = ("snap_b", 2_000, "screen", "png", "/data/recordings/snapshots/snap_b.png")
        var c = a
        (c.id, c.roomID) = ("snap_c", "r2")
        for s in [a, b, c] { try await store.addSnapshot(s) }
        #expect(try await store.snapshots(roomID: "r1") == [b, a])
        #expect(try await store.snapshots(roomID: nil).map(\.id) == ["snap_b", "snap_a", "snap_c"])
        #expect(try await store.snapshot(id: "snap_b") == b)
        #expect(try await store.snapshot(id: "snap_x") == nil)
    }

    @Test(arguments: StoreBackend.allCases)
    func recordingsWithFiles(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        try await store.createRoom(RoomRecord(id: "r", name: "r", createdAt: 1, maxParticipants: 4, emptyTimeoutS: 1, maxDurationS: 1, autoRecord: false))
        try await store.createRecording(RecordingRecord(id: "rec1", roomID: "r", mode: "tracks", status: .recording, startedAt: 1_000))
        try await store.createRecording(RecordingRecord(id: "rec2", roomID: "r", mode: "tracks", status: .recording, startedAt: 2_000))
        let file = RecordingFileRecord(id: "f1", recordingID: "rec1", userID: "dr-house", trackKinds: ["audio", "video"], fileName: "dr-house.webm",
                                       path: "/data/recordings/rec1/dr-house.webm", sizeBytes: 1_234_567, videoCodec: "vp8", audioCodec: "opus",
                                       resolution: "640x480", durationMs: 20_000)
        try await store.addRecordingFile(file)
        var updated = file
        updated.sizeBytes = 2_000_000
        try await store.addRecordingFile(updated)  // upsert: the final size lands
        let screen = RecordingFileRecord(id: "f2", recordingID: "rec1", userID: "dr-house", trackKinds: ["video"], fileName: "dr-house-screen.mkv",
                                         path: "/data/recordings/rec1/dr-house-screen.mkv", sizeBytes: 99, source: "screen", format: "mkv",
                                         videoCodec: "h264", audioCodec: nil, resolution: "1280x720", durationMs: 5_000)
        try await store.addRecordingFile(screen)
        try await store.finishRecording(id: "rec1", status: .completed, endedAt: 21_000, durationMs: 20_000, failureReason: nil)
        try await store.finishRecording(id: "rec2", status: .failed, endedAt: 3_000, durationMs: nil, failureReason: "server crashed; nothing on disk")
        let rec1 = try #require(try await store.recording(id: "rec1"))
        #expect(rec1.status == .completed && rec1.durationMs == 20_000 && rec1.files == [updated, screen])
        #expect(rec1.files.map(\.source) == ["camera", "screen"])
        #expect(try await store.recordings().map(\.id) == ["rec2", "rec1"])
        #expect(try await store.recordings(status: .failed).map(\.id) == ["rec2"])
        #expect(try await store.recordings(roomID: "r", status: .completed).map(\.id) == ["rec1"])
        #expect(try await store.recordings(roomID: "other").isEmpty)
        #expect(try await store.recording(id: "rec2")?.failureReason == "server crashed; nothing on disk")
        // Consent lines come back in their writer's order, whatever their times.
        try await store.addRecordingConsents(recordingID: "rec1", [(1, RecordingConsent(userID: "pat", granted: true, atMillis: 900)),
                                                                   (2, RecordingConsent(userID: "dr-house", granted: false, atMillis: 1_000))])
        try await store.addRecordingConsents(recordingID: "rec1", [(3, RecordingConsent(userID: "pat", granted: false, atMillis: 800))])
        #expect(try await store.recording(id: "rec1")?.consents.map(\.userID) == ["pat", "dr-house", "pat"])
        #expect(try await store.recording(id: "rec1")?.consents.last == RecordingConsent(userID: "pat", granted: false, atMillis: 800))
        #expect(try await store.recording(id: "rec2")?.consents == [])
        // A room's consent rule is kept.
        try await store.createRoom(RoomRecord(id: "rq", name: "rq", createdAt: 2, maxParticipants: 4, emptyTimeoutS: 1, maxDurationS: 1, autoRecord: false,
                                              consentRequired: true))
        // (Read back from the database, not the room cache: the call history's rows.)
        let history = try await store.roomHistory(RoomHistoryQuery()).map(\.room)
        #expect(history.first { $0.id == "rq" }?.consentRequired == true)
        #expect(history.first { $0.id == "r" }?.consentRequired == false)
    }

    /// The webhook outbox: an event and its deliveries land together; each URL's deliveries come
    /// back in the order written, until delivered or given up; ended ones are purged.
    @Test(arguments: StoreBackend.allCases)
    func webhookOutbox(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        func deliveries(_ id: String, at: Int64) -> [OutboxDelivery] {
            ["http://a/hook", "http://b/hook"].map { OutboxDelivery(id: id, url: $0, roomID: "rm_x", event: "room_started", body: #"{"id":"\#(id)"}"#, createdAt: at) }
        }
        try await store.appendEvent(RoomEvent(roomID: "rm_x", at: 1_000, kind: "room_created", actor: "api", subject: "room:rm_x"),
                                    outbox: deliveries("wh_2", at: 1_000))
        try await store.appendEvent(nil, outbox: deliveries("wh_1", at: 1_001))
        try await store.appendEvent(nil, outbox: deliveries("wh_3", at: 999))
        #expect(try await store.events(roomID: "rm_x").map(\.kind) == ["room_created"])
        let a = try await store.pendingDeliveries(url: "http://a/hook", limit: 10)
        #expect(a.map(\.id) == ["wh_2", "wh_1", "wh_3"], "written order, whatever the ids and times")
        #expect(a.first?.body == #"{"id":"wh_2"}"# && a.first?.attempts == 0 && a.first?.nextAttemptAt == 1_000 && a.first?.roomID == "rm_x")
        #expect(try await store.pendingDeliveryCount() == 6)
        try await store.recordAttempt(id: "wh_2", url: "http://a/hook", attempts: 1, nextAttemptAt: 5_000, error: "answered 500")
        let retried = try await store.pendingDeliveries(url: "http://a/hook", limit: 1)
        #expect(retried.map(\.id) == ["wh_2"] && retried.first?.attempts == 1 && retried.first?.nextAttemptAt == 5_000)
        try await store.recordAttempt(id: "wh_2", url: "http://a/hook", attempts: 2, deliveredAt: 6_000)
        try await store.recordAttempt(id: "wh_1", url: "http://a/hook", attempts: 9, givenUpAt: 7_000, error: "too old")
        #expect(try await store.pendingDeliveries(url: "http://a/hook", limit: 10).map(\.id) == ["wh_3"])
        #expect(try await store.pendingDeliveries(url: "http://b/hook", limit: 10).map(\.id) == ["wh_2", "wh_1", "wh_3"], "each URL on its own")
        #expect(try await store.pendingDeliveryCount() == 4)
        try await store.purgeDeliveries(endedBefore: 6_500)
        try await store.purgeDeliveries(endedBefore: 6_500)
        // The delivered one is gone, the given-up one (ended after the bound) and the pending ones stay.
        try await store.recordAttempt(id: "wh_2", url: "http://a/hook", attempts: 2)
        #expect(try await store.pendingDeliveries(url: "http://a/hook", limit: 10).map(\.id) == ["wh_3"], "a purged row is not pending again")
        #expect(try await store.pendingDeliveryCount() == 4)
    }

    @Test(arguments: StoreBackend.allCases)
    func migrationsRunOnceAndReopenKeepsData(backend: StoreBackend) async throws {
        guard backend == .sqlite else {
            // PostgreSQL: reopening the same schema.
            let (store, schema) = try await backend.open()
            try await store.createRoom(RoomRecord(id: "keep", name: "k", createdAt: 1, maxParticipants: 1, emptyTimeoutS: 1, maxDurationS: 1, autoRecord: false))
            await store.close()
            let base = try #require(StoreBackend.postgresURL)
            let again = try await MetadataStore.open(databaseURL: base + "?options=-csearch_path%3D\(schema)", dataDir: "/nonexistent", logger: Logger(label: "t"))
            #expect(try await again.room(id: "keep") != nil)
            await again.close()
            return
        }
        let (store, dir) = try await backend.open()
        try await store.createRoom(RoomRecord(id: "keep", name: "k", createdAt: 1, maxParticipants: 1, emptyTimeoutS: 1, maxDurationS: 1, autoRecord: false))
        await store.close()
        let again = try await MetadataStore.open(databaseURL: nil, dataDir: dir, logger: Logger(label: "t"))
        #expect(try await again.room(id: "keep") != nil)
        await again.close()
        #expect(FileManager.default.fileExists(atPath: dir + "/sfu.sqlite"))
    }

    @Test func unsupportedURLIsAClearError() async throws {
        await #expect(throws: SQLError.self) {
            _ = try await MetadataStore.open(databaseURL: "mysql://x", dataDir: NSTemporaryDirectory(), logger: Logger(label: "t"))
        }
        await #expect(throws: SQLError.self) {
            _ = try await MetadataStore.open(databaseURL: "postgres://nobody@127.0.0.1:1/none", dataDir: NSTemporaryDirectory(), logger: Logger(label: "t"))
        }
    }

    /// A PostgreSQL restart while writes are in flight: every write is retried and lands.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SFU_TEST_POSTGRES_DIR"] != nil,
                   "needs SFU_TEST_POSTGRES_DIR: the throwaway PostgreSQL that `make test` starts"))
    func postgresRestartLosesNoWrite() async throws {
        let (store, _) = try await StoreBackend.postgresql.open()
        defer { Task { await store.close() } }
        try await store.createRoom(RoomRecord(id: "r", name: "r", createdAt: 1, maxParticipants: 4, emptyTimeoutS: 1, maxDurationS: 1, autoRecord: false))
        let dir = try #require(ProcessInfo.processInfo.environment["SFU_TEST_POSTGRES_DIR"])
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/pg-throwaway.sh").path
        // posix_spawn + waitpid: Foundation's Process does not reliably notice the child's exit
        // from a Swift concurrency thread here.
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(script), strdup("restart"), strdup(dir), nil]
        defer { for p in argv { free(p) } }
        let spawned = posix_spawn(&pid, script, nil, nil, argv, environ)
        try #require(spawned == 0, "posix_spawn: \(spawned)")
        for i in 0..<60 {
            try await store.appendEvent(RoomEvent(id: "e\(i)", roomID: "r", at: Int64(i), kind: "tick"))
            try await Task.sleep(for: .milliseconds(25))
        }
        var status: Int32 = 0
        var reaped: pid_t = 0
        for _ in 0..<600 {
            reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        try #require(reaped == pid, "pg-throwaway.sh restart did not finish")
        #expect(status == 0)
        let events = try await store.events(roomID: "r")
        #expect(events.count == 60)
        #expect(events.map(\.id) == (0..<60).map { "e\($0)" })
    }
}
