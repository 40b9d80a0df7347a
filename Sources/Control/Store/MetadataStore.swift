import DTLS
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix
import SFU

// MARK: records (PROTOCOL.md names; times are milliseconds since the Unix epoch)

package struct RoomRecord: Sendable, Equatable {
    package var id: String
    package var name: String
    package var createdAt: Int64
    package var closedAt: Int64?
    package var closeReason: String?
    package var maxParticipants: Int
    package var emptyTimeoutS: Int
    package var maxDurationS: Int
    package var autoRecord: Bool
    /// The app's `metadata` (a JSON object's text), as given at creation.
    package var metadata: String?
    /// `recording_consent: "required"`: a participant is recorded only once it consented.
    package var consentRequired: Bool

    package init(id: String, name: String, createdAt: Int64, closedAt: Int64? = nil, closeReason: String? = nil,
                maxParticipants: Int, emptyTimeoutS: Int, maxDurationS: Int, autoRecord: Bool, metadata: String? = nil,
                consentRequired: Bool = false) {
        self.metadata = metadata
        self.consentRequired = consentRequired
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.closedAt = closedAt
        self.closeReason = closeReason
        self.maxParticipants = maxParticipants
        self.emptyTimeoutS = emptyTimeoutS
        self.maxDurationS = maxDurationS
        self.autoRecord = autoRecord
    }
}

/// An open room, how many participants are in it, and when the last one left (nil: nobody has yet).
package struct RoomOccupancy: Sendable, Equatable {
    package var room: RoomRecord
    package var present: Int
    package var lastLeftAt: Int64?
}

package struct ParticipantSessionRecord: Sendable, Equatable {
    package var id: String
    package var roomID: String
    package var userID: String
    package var name: String
    package var role: String
    package var joinedAt: Int64
    package var leftAt: Int64?
    package var leaveReason: String?

    package init(id: String, roomID: String, userID: String, name: String, role: String, joinedAt: Int64, leftAt: Int64? = nil, leaveReason: String? = nil) {
        self.id = id
        self.roomID = roomID
        self.userID = userID
        self.name = name
        self.role = role
        self.joinedAt = joinedAt
        self.leftAt = leftAt
        self.leaveReason = leaveReason
    }
}

package struct RecordingFileRecord: Sendable, Equatable {
    package var id: String
    package var recordingID: String
    package var userID: String
    package var trackKinds: [String]
    package var fileName: String
    package var path: String
    package var sizeBytes: Int64
    /// "camera" (camera and microphone), "screen", or "composite" (the whole room).
    package var source: String
    package var format: String
    package var videoCodec: String?
    package var audioCodec: String?
    package var resolution: String?
    package var durationMs: Int64
    /// The object's key once the file is in S3 storage (its local copy is then gone).
    package var objectKey: String?

    package init(id: String, recordingID: String, userID: String, trackKinds: [String], fileName: String, path: String, sizeBytes: Int64,
                source: String = "camera", format: String = "webm", videoCodec: String?, audioCodec: String?, resolution: String?, durationMs: Int64,
                objectKey: String? = nil) {
        self.objectKey = objectKey
        self.id = id
        self.recordingID = recordingID
        self.userID = userID
        self.trackKinds = trackKinds
        self.fileName = fileName
        self.path = path
        self.sizeBytes = sizeBytes
        self.source = source
        self.format = format
        self.videoCodec = videoCodec
        self.audioCodec = audioCodec
        self.resolution = resolution
        self.durationMs = durationMs
    }
}

package struct RecordingRecord: Sendable, Equatable {
    /// `deleted`: its files are gone (`DELETE /v1/recordings/{id}` or retention), its metadata kept.
    package enum Status: String, Sendable { case recording, processing, completed, failed, deleted }
    package var id: String
    package var roomID: String
    package var mode: String
    package var status: Status
    package var startedAt: Int64
    package var endedAt: Int64?
    package var durationMs: Int64?
    package var storage: String
    package var failureReason: String?
    package var files: [RecordingFileRecord]
    /// The composite's layout (grid or speaker); nil for `tracks`.
    package var layout: String?
    /// When its files were deleted (status `deleted`).
    package var deletedAt: Int64?
    /// The app's `metadata` (a JSON object's text), as given at the start.
    package var metadata: String?
    /// In a room with consent required: each participant's answer when the recording started or
    /// it joined, and every change while recording, in time order (PROTOCOL.md `consents`).
    package var consents: [RecordingConsent] = []

    package init(id: String, roomID: String, mode: String, status: Status, startedAt: Int64, endedAt: Int64? = nil, durationMs: Int64? = nil,
                storage: String = "local", failureReason: String? = nil, files: [RecordingFileRecord] = [], layout: String? = nil,
                deletedAt: Int64? = nil, metadata: String? = nil, consents: [RecordingConsent] = []) {
        self.consents = consents
        self.deletedAt = deletedAt
        self.metadata = metadata
        self.id = id
        self.roomID = roomID
        self.mode = mode
        self.status = status
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.durationMs = durationMs
        self.storage = storage
        self.failureReason = failureReason
        self.files = files
        self.layout = layout
    }
}

/// One webhook delivery in the outbox (docs/API.md "Webhooks"): an event for one URL, kept until the
/// receiver accepted it or its retry time ran out. `seq` orders the deliveries to a URL (events in
/// the order they were written).
package struct OutboxDelivery: Sendable, Equatable {
    /// The event's id (`wh_...`, the body's `id` and `X-SFU-Delivery`): the same for every URL.
    package var id: String
    package var url: String
    package var seq: Int64 = 0
    package var roomID: String?
    package var event: String
    package var body: String
    package var createdAt: Int64
    package var attempts = 0
    package var nextAttemptAt: Int64
    package init(id: String, url: String, roomID: String?, event: String, body: String, createdAt: Int64) {
        self.id = id
        self.url = url
        self.roomID = roomID
        self.event = event
        self.body = body
        self.createdAt = createdAt
        self.nextAttemptAt = createdAt
    }
}

/// A recording file's upload to S3 storage (docs/RECORDING.md "S3 storage"): kept in the store so
/// that an upload cut by a restart goes on (a multipart upload from the parts S3 already has).
package struct StorageUpload: Sendable, Equatable {
    package enum State: String, Sendable { case pending, done, failed }
    package var fileID: String
    package var recordingID: String
    package var path: String
    package var objectKey: String
    /// The multipart upload's id once one was created.
    package var uploadID: String?
    package var attempts = 0
    package var nextAttemptAt: Int64
    package var state = State.pending
    package var lastError: String?
    package var createdAt: Int64

    package init(fileID: String, recordingID: String, path: String, objectKey: String, uploadID: String? = nil, attempts: Int = 0,
                 nextAttemptAt: Int64, state: State = .pending, lastError: String? = nil, createdAt: Int64) {
        self.fileID = fileID
        self.recordingID = recordingID
        self.path = path
        self.objectKey = objectKey
        self.uploadID = uploadID
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.state = state
        self.lastError = lastError
        self.createdAt = createdAt
    }
}

/// A still image of a participant's video (PROTOCOL.md snapshots).
package struct SnapshotRecord: Sendable, Equatable {
    package var id: String
    package var roomID: String
    package var userID: String
    package var source: String
    package var takenAt: Int64
    package var width: Int
    package var height: Int
    package var format: String
    package var sizeBytes: Int64
    package var path: String

    package init(id: String, roomID: String, userID: String, source: String, takenAt: Int64, width: Int, height: Int, format: String,
                sizeBytes: Int64, path: String) {
        self.id = id
        self.roomID = roomID
        self.userID = userID
        self.source = source
        self.takenAt = takenAt
        self.width = width
        self.height = height
        self.format = format
        self.sizeBytes = sizeBytes
        self.path = path
    }
}

/// The audit log: who joined, left, published, started or stopped a recording, and when.
/// A chat message as stored (`GET /v1/rooms/{id}/messages`).
package struct ChatMessageRecord: Sendable, Equatable {
    package var id: String
    package var roomID: String
    package var peerID: String
    package var userID: String
    package var message: String
    package var at: Int64
    package init(id: String, roomID: String, peerID: String, userID: String, message: String, at: Int64) {
        self.id = id
        self.roomID = roomID
        self.peerID = peerID
        self.userID = userID
        self.message = message
        self.at = at
    }
}

/// A position in a list ordered by (time, id): the last item of a page, where the next one starts.
package struct ListPosition: Sendable, Equatable, Hashable {
    package var at: Int64
    package var id: String
    package init(at: Int64, id: String) {
        self.at = at
        self.id = id
    }
}

/// A page of rooms for the call history (`GET /v1/rooms`), newest first.
package struct RoomHistoryQuery: Sendable, Equatable {
    package enum Status: String, Sendable { case open, closed, all }
    package var status: Status = .open
    /// Rooms created at or after `from` and before `to` (milliseconds).
    package var fromMillis: Int64?
    package var toMillis: Int64?
    package var limit = 100
    /// The last room of the previous page.
    package var after: ListPosition?
    package init() {}
}

/// One room of the call history with what its sessions and recordings say about it.
package struct RoomHistoryEntry: Sendable, Equatable {
    package var room: RoomRecord
    /// Distinct users that joined, sessions (joins, resumes not counted), most at once.
    package var totalParticipants: Int
    package var sessions: Int
    package var peakParticipants: Int
    package var recordingIDs: [String]
}

/// One entry of the audit trail (append-only: written once, never changed or deleted by any
/// route). `kind` is the contract's `type`; `actor` who did it and `subject` what it was done to,
/// as `<kind>:<id>` (`user:<user_id>`, `room:`, `recording:`, `snapshot:`, `message:`) or `api`
/// (the control API's key holder), `server` (the server itself: a timeout, a limit), `demo`;
/// `data` the event's particulars. Rows written before actors existed (migration 7) read back
/// with `user_id` as both actor and subject, `detail` as `data.detail`.
package struct RoomEvent: Sendable, Equatable {
    package var id: String
    package var roomID: String
    package var at: Int64
    package var kind: String
    package var userID: String?
    package var detail: String?
    package var actor: String?
    package var subject: String?
    package var data: [String: String]

    package init(id: String = ResourceID.event.make(), roomID: String, at: Int64, kind: String, userID: String? = nil, detail: String? = nil,
                 actor: String? = nil, subject: String? = nil, data: [String: String] = [:]) {
        self.id = id
        self.roomID = roomID
        self.at = at
        self.kind = kind
        self.userID = userID
        self.detail = detail
        self.actor = actor
        self.subject = subject
        self.data = data
    }

    /// Who did it, as served: the stored actor, else the legacy user id, else `server`.
    package var effectiveActor: String { actor ?? userID.map { "user:" + $0 } ?? "server" }
    /// What it was done to: the stored subject, else the legacy user id, else the room.
    package var effectiveSubject: String { subject ?? userID.map { "user:" + $0 } ?? "room:" + roomID }
    /// The particulars, with a legacy `detail` under that name.
    package var effectiveData: [String: String] {
        var d = data
        if let detail, d["detail"] == nil { d["detail"] = detail }
        return d
    }

    /// `data` as stored: a JSON object of strings, keys sorted.
    static func encode(_ data: [String: String]) -> String? {
        guard !data.isEmpty, let json = try? JSONSerialization.data(withJSONObject: data, options: [.sortedKeys]) else { return nil }
        return String(decoding: json, as: UTF8.self)
    }

    static func decode(_ text: String?) -> [String: String] {
        guard let text, let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return [:] }
        return object.compactMapValues { $0 as? String }
    }
}

package struct QualitySample: Sendable, Equatable {
    package var roomID: String
    package var participantSessionID: String
    package var at: Int64
    package var rttMs: Double?
    package var lossFraction: Double?
    package var jitterMs: Double?
    package var bitrateBps: Int64?
    /// The richer figures (migration 8; nil in samples written before it).
    package var uplinkLoss: Double?
    package var downlinkLoss: Double?
    package var audioBitrateBps: Int64?
    package var videoBitrateBps: Int64?
    package var subscribeBitrateBps: Int64?
    package var availableBandwidthBps: Int64?
    package var grade: String?
    /// What the participant received of each video: `[{peer_id, track_id, width, height, fps, bitrate_bps, paused}]` as JSON.
    package var subscriptionsJSON: String?
    /// The participant's user id (read back from its session; not stored with the sample).
    package var userID: String?

    package init(roomID: String, participantSessionID: String, at: Int64, rttMs: Double?, lossFraction: Double?, jitterMs: Double?, bitrateBps: Int64?,
                 uplinkLoss: Double? = nil, downlinkLoss: Double? = nil, audioBitrateBps: Int64? = nil, videoBitrateBps: Int64? = nil,
                 subscribeBitrateBps: Int64? = nil, availableBandwidthBps: Int64? = nil, grade: String? = nil, subscriptionsJSON: String? = nil,
                 userID: String? = nil) {
        self.roomID = roomID
        self.participantSessionID = participantSessionID
        self.at = at
        self.rttMs = rttMs
        self.lossFraction = lossFraction
        self.jitterMs = jitterMs
        self.bitrateBps = bitrateBps
        self.uplinkLoss = uplinkLoss
        self.downlinkLoss = downlinkLoss
        self.audioBitrateBps = audioBitrateBps
        self.videoBitrateBps = videoBitrateBps
        self.subscribeBitrateBps = subscribeBitrateBps
        self.availableBandwidthBps = availableBandwidthBps
        self.grade = grade
        self.subscriptionsJSON = subscriptionsJSON
        self.userID = userID
    }
}

// MARK: schema

/// Versioned migrations, applied in order at start; each runs once (recorded in schema_migrations).
/// The SQL is written for both backends: TEXT ids made by the application, BIGINT milliseconds,
/// DOUBLE PRECISION, INTEGER booleans.
enum Migrations {
    static let all: [(version: Int, statements: [String])] = [
        (1, [
            """
            CREATE TABLE rooms (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at BIGINT NOT NULL, closed_at BIGINT,
              close_reason TEXT, max_participants INTEGER NOT NULL, empty_timeout_s INTEGER NOT NULL,
              max_duration_s INTEGER NOT NULL, auto_record INTEGER NOT NULL)
            """,
            """
            CREATE TABLE participant_sessions (id TEXT PRIMARY KEY, room_id TEXT NOT NULL REFERENCES rooms(id), user_id TEXT NOT NULL,
              name TEXT NOT NULL, role TEXT NOT NULL, joined_at BIGINT NOT NULL, left_at BIGINT, leave_reason TEXT)
            """,
            "CREATE INDEX participant_sessions_room ON participant_sessions(room_id)",
            """
            CREATE TABLE recordings (id TEXT PRIMARY KEY, room_id TEXT NOT NULL REFERENCES rooms(id), mode TEXT NOT NULL,
              status TEXT NOT NULL, started_at BIGINT NOT NULL, ended_at BIGINT, duration_ms BIGINT, storage TEXT NOT NULL,
              failure_reason TEXT)
            """,
            "CREATE INDEX recordings_room ON recordings(room_id)",
            """
            CREATE TABLE recording_files (id TEXT PRIMARY KEY, recording_id TEXT NOT NULL REFERENCES recordings(id),
              user_id TEXT NOT NULL, track_kinds TEXT NOT NULL, file_name TEXT NOT NULL, path TEXT NOT NULL,
              size_bytes BIGINT NOT NULL, format TEXT NOT NULL, video_codec TEXT, audio_codec TEXT, resolution TEXT,
              duration_ms BIGINT NOT NULL)
            """,
            """
            CREATE TABLE room_events (id TEXT PRIMARY KEY, room_id TEXT NOT NULL, at BIGINT NOT NULL, kind TEXT NOT NULL,
              user_id TEXT, detail TEXT)
            """,
            "CREATE INDEX room_events_room ON room_events(room_id, at)",
            """
            CREATE TABLE quality_samples (room_id TEXT NOT NULL, participant_session_id TEXT NOT NULL, at BIGINT NOT NULL,
              rtt_ms DOUBLE PRECISION, loss_fraction DOUBLE PRECISION, jitter_ms DOUBLE PRECISION, bitrate_bps BIGINT,
              PRIMARY KEY (participant_session_id, at))
            """,
        ]),
        // Per-participant recordings keep a participant's screen share in a file of its own.
        (2, ["ALTER TABLE recording_files ADD COLUMN source TEXT NOT NULL DEFAULT 'camera'"]),
        (3, [
            """
            CREATE TABLE snapshots (id TEXT PRIMARY KEY, room_id TEXT NOT NULL REFERENCES rooms(id), user_id TEXT NOT NULL,
              source TEXT NOT NULL, taken_at BIGINT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, format TEXT NOT NULL,
              size_bytes BIGINT NOT NULL, path TEXT NOT NULL)
            """,
            "CREATE INDEX snapshots_room ON snapshots(room_id, taken_at)",
        ]),
        // Composite recordings say how they laid out the canvas.
        (4, ["ALTER TABLE recordings ADD COLUMN layout TEXT"]),
        // Who is in a room and when its last participant left, read from the index alone
        // (``MetadataStore/openRoomOccupancy()``: the janitor's pass every second, /metrics).
        (5, ["CREATE INDEX participant_sessions_room_left ON participant_sessions(room_id, left_at)"]),
        // Chat messages are kept; the call history pages rooms by creation time.
        (6, [
            """
            CREATE TABLE chat_messages (id TEXT PRIMARY KEY, room_id TEXT NOT NULL, peer_id TEXT NOT NULL, user_id TEXT NOT NULL,
              message TEXT NOT NULL, at BIGINT NOT NULL)
            """,
            "CREATE INDEX chat_messages_room ON chat_messages(room_id, at, id)",
            "CREATE INDEX rooms_created ON rooms(created_at, id)",
        ]),
        // The audit trail says who did what to whom, and is exported across rooms by time.
        (7, [
            "ALTER TABLE room_events ADD COLUMN actor TEXT",
            "ALTER TABLE room_events ADD COLUMN subject TEXT",
            "ALTER TABLE room_events ADD COLUMN data TEXT",
            "CREATE INDEX room_events_at ON room_events(at, id)",
            "CREATE INDEX room_events_room_kind ON room_events(room_id, kind, at, id)",
        ]),
        // Quality over time: the figures of the live participants route, per sample.
        (8, [
            "ALTER TABLE quality_samples ADD COLUMN uplink_loss DOUBLE PRECISION",
            "ALTER TABLE quality_samples ADD COLUMN downlink_loss DOUBLE PRECISION",
            "ALTER TABLE quality_samples ADD COLUMN audio_bitrate_bps BIGINT",
            "ALTER TABLE quality_samples ADD COLUMN video_bitrate_bps BIGINT",
            "ALTER TABLE quality_samples ADD COLUMN subscribe_bitrate_bps BIGINT",
            "ALTER TABLE quality_samples ADD COLUMN available_bandwidth_bps BIGINT",
            "ALTER TABLE quality_samples ADD COLUMN grade TEXT",
            "ALTER TABLE quality_samples ADD COLUMN subscriptions TEXT",
            "CREATE INDEX quality_samples_room ON quality_samples(room_id, at)",
        ]),
        // Deleted recordings keep their metadata; signed links have a key of their own.
        (9, [
            "ALTER TABLE recordings ADD COLUMN deleted_at BIGINT",
            "CREATE TABLE server_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL, created_at BIGINT NOT NULL)",
        ]),
        // The app's own metadata on rooms and recordings.
        (10, ["ALTER TABLE rooms ADD COLUMN metadata TEXT", "ALTER TABLE recordings ADD COLUMN metadata TEXT"]),
        // Recording consent: the room's rule, and each recording's list of answers.
        (11, [
            "ALTER TABLE rooms ADD COLUMN recording_consent TEXT",
            """
            CREATE TABLE recording_consents (id TEXT PRIMARY KEY, recording_id TEXT NOT NULL, seq BIGINT NOT NULL, user_id TEXT NOT NULL,
              granted INTEGER NOT NULL, at BIGINT NOT NULL)
            """,
            "CREATE INDEX recording_consents_recording ON recording_consents(recording_id, seq)",
        ]),
        // Durable webhooks: each event's deliveries, written with the audit event, kept until delivered.
        (12, [
            """
            CREATE TABLE webhook_outbox (id TEXT NOT NULL, url TEXT NOT NULL, seq BIGINT NOT NULL, room_id TEXT, event TEXT NOT NULL,
              body TEXT NOT NULL, created_at BIGINT NOT NULL, attempts INTEGER NOT NULL, next_attempt_at BIGINT NOT NULL,
              delivered_at BIGINT, given_up_at BIGINT, last_error TEXT, PRIMARY KEY (id, url))
            """,
            "CREATE INDEX webhook_outbox_pending ON webhook_outbox(url, delivered_at, given_up_at, seq)",
            "CREATE INDEX webhook_outbox_seq ON webhook_outbox(seq)",
        ]),
        // S3 storage: each file's upload (resumed after a restart) and where the file went.
        (13, [
            """
            CREATE TABLE storage_uploads (file_id TEXT PRIMARY KEY, recording_id TEXT NOT NULL, path TEXT NOT NULL, object_key TEXT NOT NULL,
              upload_id TEXT, attempts INTEGER NOT NULL, next_attempt_at BIGINT NOT NULL, state TEXT NOT NULL, last_error TEXT,
              created_at BIGINT NOT NULL)
            """,
            "CREATE INDEX storage_uploads_state ON storage_uploads(state, created_at)",
            "CREATE INDEX storage_uploads_recording ON storage_uploads(recording_id)",
            "ALTER TABLE recording_files ADD COLUMN object_key TEXT",
        ]),
    ]

    static func apply(_ db: SQLDatabase) throws(SQLError) -> [Int] {
        try db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
        let done = Set(try db.execute("SELECT version FROM schema_migrations").compactMap { $0["version"].int.map(Int.init) })
        var applied: [Int] = []
        for migration in all where !done.contains(migration.version) {
            try db.transaction { () throws(SQLError) in
                for statement in migration.statements { try db.execute(statement) }
                try db.execute("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                               [.int(Int64(migration.version)), .int(MetadataStore.nowMillis)])
            }
            applied.append(migration.version)
        }
        return applied
    }
}

// MARK: the store

/// The metadata store: one interface over SQLite (the embedded default, `<data dir>/sfu.sqlite`) and
/// PostgreSQL (a `postgres://` URL). Every call runs on the store's own thread (a one-thread pool,
/// one connection), never on an event loop. A broken PostgreSQL connection is re-established and
/// the operation retried with backoff for up to `retryWindow`, so a database restart does not lose
/// writes (inserts are idempotent: `ON CONFLICT DO NOTHING` on application-made ids). Operations run
/// in order, so writes made during an outage wait their turn and land once the database is back.
///
/// Room rows are cached: rooms are created and closed only through this store, so a cached row is
/// the row, and a join (which looks its room up) never waits for the database: during an outage the
/// store's thread is busy retrying, and a join must not queue behind it.
package final class MetadataStore: Sendable {
    package let backend: String
    package let retryWindowSeconds: Double
    private let pool: NIOThreadPool
    private let box: DatabaseBox
    private let logger: Logger
    private let roomCache = NIOLockedValueBox<[String: RoomRecord]>([:])
    /// Rooms cached at most; past it closed rooms are dropped first (they are read again if asked).
    static let roomCacheLimit = 10_000

    final class DatabaseBox: @unchecked Sendable {
        // Only touched on the pool's single thread.
        let db: SQLDatabase
        init(_ db: SQLDatabase) { self.db = db }
    }

    static var nowMillis: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    /// Opens (and migrates) the store for `databaseURL` (nil: SQLite in `dataDir`).
    package static func open(databaseURL: String?, dataDir: String, logger: Logger, retryWindowSeconds: Double = 30) async throws -> MetadataStore {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        do {
            let box = try await pool.runIfActive { () throws -> DatabaseBox in
                let db: SQLDatabase
                if let url = databaseURL, url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
                    db = try PostgresDatabase(url: url)
                } else if let url = databaseURL, url.hasPrefix("sqlite://") {
                    db = try SQLiteDatabase(path: String(url.dropFirst("sqlite://".count)))
                } else if let url = databaseURL, !url.isEmpty {
                    throw SQLError.connection("unsupported SFU_DATABASE_URL '\(url)': use postgres://... or sqlite:///path")
                } else {
                    db = try SQLiteDatabase(path: (dataDir as NSString).appendingPathComponent("sfu.sqlite"))
                }
                let applied = try Migrations.apply(db)
                if !applied.isEmpty { logger.notice("database migrated", metadata: ["backend": "\(db.backend)", "versions": "\(applied)"]) }
                return DatabaseBox(db)
            }
            return MetadataStore(pool: pool, box: box, logger: logger, retryWindowSeconds: retryWindowSeconds)
        } catch {
            try? await pool.shutdownGracefully()
            throw error
        }
    }

    /// A store over an already open database (tests drive the retry logic with a failing one).
    static func open(database: SQLDatabase, logger: Logger, retryWindowSeconds: Double) async throws -> MetadataStore {
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let box = DatabaseBox(database)
        do {
            _ = try await pool.runIfActive { () throws -> [Int] in try Migrations.apply(box.db) }
        } catch {
            try? await pool.shutdownGracefully()
            throw error
        }
        return MetadataStore(pool: pool, box: box, logger: logger, retryWindowSeconds: retryWindowSeconds)
    }

    init(pool: NIOThreadPool, box: DatabaseBox, logger: Logger, retryWindowSeconds: Double) {
        self.pool = pool
        self.box = box
        self.logger = logger
        self.retryWindowSeconds = retryWindowSeconds
        self.backend = box.db.backend
    }

    package func close() async {
        try? await pool.shutdownGracefully()
    }

    /// Runs `body` on the store thread; on a connection error reconnects and retries with backoff.
    @discardableResult
    func run<T: Sendable>(_ body: @escaping @Sendable (SQLDatabase) throws(SQLError) -> T) async throws -> T {
        let box = self.box
        let logger = self.logger
        let window = retryWindowSeconds
        return try await pool.runIfActive { () throws -> T in
            let start = Date()
            var delay = 0.05
            while true {
                do throws(SQLError) {
                    return try body(box.db)
                } catch {
                    guard case .connection(let message) = error, Date().timeIntervalSince(start) < window else { throw error }
                    logger.warning("database connection lost; retrying", metadata: ["error": "\(message)"])
                    Thread.sleep(forTimeInterval: delay)
                    delay = min(delay * 2, 2)
                    try? box.db.reconnect()
                }
            }
        }
    }

    // MARK: rooms

    package func createRoom(_ r: RoomRecord) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                INSERT INTO rooms (id, name, created_at, closed_at, close_reason, max_participants, empty_timeout_s, max_duration_s, auto_record, metadata,
                  recording_consent)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING
                """, [.text(r.id), .text(r.name), .int(r.createdAt), r.closedAt.map { .int($0) } ?? .null, r.closeReason.map { .text($0) } ?? .null,
                      .int(Int64(r.maxParticipants)), .int(Int64(r.emptyTimeoutS)), .int(Int64(r.maxDurationS)), .int(r.autoRecord ? 1 : 0),
                      r.metadata.map { .text($0) } ?? .null, .text(r.consentRequired ? "required" : "notice")])
        }
        cache(r)
    }

    /// The room, from the cache when it is there (no database round trip: joins do not wait for the
    /// database, and keep working while it is down).
    package func room(id: String) async throws -> RoomRecord? {
        if let cached = roomCache.withLockedValue({ $0[id] }) { return cached }
        let found = try await run { db throws(SQLError) in try db.execute("SELECT * FROM rooms WHERE id = $1", [.text(id)]).first.map(Self.room) }
        if let found { cache(found) }
        return found
    }

    package func rooms(includeClosed: Bool = false) async throws -> [RoomRecord] {
        let found = try await run { db throws(SQLError) in
            try db.execute(includeClosed ? "SELECT * FROM rooms ORDER BY created_at, id" : "SELECT * FROM rooms WHERE closed_at IS NULL ORDER BY created_at, id")
                .map(Self.room)
        }
        for r in found where r.closedAt == nil { cache(r) }
        return found
    }

    private func cache(_ r: RoomRecord) {
        roomCache.withLockedValue { c in
            if c[r.id] == nil, c.count >= Self.roomCacheLimit {
                for (id, room) in c where room.closedAt != nil { c[id] = nil }
                if c.count >= Self.roomCacheLimit, let any = c.keys.first { c[any] = nil }
            }
            c[r.id] = r
        }
    }

    /// Closes the room (in the cache at once: a join after this sees it closed even while the write
    /// waits for the database).
    package func closeRoom(id: String, at: Int64, reason: String) async throws {
        roomCache.withLockedValue { c in
            guard var r = c[id], r.closedAt == nil else { return }
            r.closedAt = at
            r.closeReason = reason
            c[id] = r
        }
        try await run { db throws(SQLError) in
            try db.execute("UPDATE rooms SET closed_at = $2, close_reason = $3 WHERE id = $1 AND closed_at IS NULL", [.text(id), .int(at), .text(reason)])
        }
    }

    static func room(_ row: SQLRow) -> RoomRecord {
        RoomRecord(id: row["id"].text ?? "", name: row["name"].text ?? "", createdAt: row["created_at"].int ?? 0,
                   closedAt: row["closed_at"].int, closeReason: row["close_reason"].text,
                   maxParticipants: Int(row["max_participants"].int ?? 0), emptyTimeoutS: Int(row["empty_timeout_s"].int ?? 0),
                   maxDurationS: Int(row["max_duration_s"].int ?? 0), autoRecord: (row["auto_record"].int ?? 0) != 0, metadata: row["metadata"].text,
                   consentRequired: row["recording_consent"].text == "required")
    }

    // MARK: participant sessions

    package func recordJoin(_ p: ParticipantSessionRecord) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                INSERT INTO participant_sessions (id, room_id, user_id, name, role, joined_at, left_at, leave_reason)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING
                """, [.text(p.id), .text(p.roomID), .text(p.userID), .text(p.name), .text(p.role), .int(p.joinedAt),
                      p.leftAt.map { .int($0) } ?? .null, p.leaveReason.map { .text($0) } ?? .null])
        }
    }

    package func recordLeave(sessionID: String, at: Int64, reason: String) async throws {
        try await run { db throws(SQLError) in
            try db.execute("UPDATE participant_sessions SET left_at = $2, leave_reason = $3 WHERE id = $1 AND left_at IS NULL",
                           [.text(sessionID), .int(at), .text(reason)])
        }
    }

    package func participantSessions(roomID: String) async throws -> [ParticipantSessionRecord] {
        try await run { db throws(SQLError) in
            try db.execute("SELECT * FROM participant_sessions WHERE room_id = $1 ORDER BY joined_at, id", [.text(roomID)]).map { row in
                ParticipantSessionRecord(id: row["id"].text ?? "", roomID: row["room_id"].text ?? "", userID: row["user_id"].text ?? "",
                                         name: row["name"].text ?? "", role: row["role"].text ?? "", joinedAt: row["joined_at"].int ?? 0,
                                         leftAt: row["left_at"].int, leaveReason: row["leave_reason"].text)
            }
        }
    }

    /// Every open room with how many participants are in it and when the last one left: two
    /// aggregates per room over the (room_id, left_at) index, not the room's whole session history
    /// (the janitor reads this every second; a room open for a day can have thousands of sessions).
    package func openRoomOccupancy() async throws -> [RoomOccupancy] {
        let found = try await run { db throws(SQLError) in
            try db.execute("""
                SELECT r.*,
                  (SELECT COUNT(*) FROM participant_sessions s WHERE s.room_id = r.id AND s.left_at IS NULL) AS present,
                  (SELECT MAX(s.left_at) FROM participant_sessions s WHERE s.room_id = r.id) AS last_left_at
                FROM rooms r WHERE r.closed_at IS NULL ORDER BY r.created_at, r.id
                """).map { row in
                RoomOccupancy(room: Self.room(row), present: Int(row["present"].int ?? 0), lastLeftAt: row["last_left_at"].int)
            }
        }
        for o in found { cache(o.room) }
        return found
    }

    // MARK: recordings

    package func createRecording(_ r: RecordingRecord) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                INSERT INTO recordings (id, room_id, mode, status, started_at, ended_at, duration_ms, storage, failure_reason, layout, metadata)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING
                """, [.text(r.id), .text(r.roomID), .text(r.mode), .text(r.status.rawValue), .int(r.startedAt),
                      r.endedAt.map { .int($0) } ?? .null, r.durationMs.map { .int($0) } ?? .null, .text(r.storage),
                      r.failureReason.map { .text($0) } ?? .null, r.layout.map { .text($0) } ?? .null, r.metadata.map { .text($0) } ?? .null])
        }
    }

    // MARK: S3 uploads

    /// Queues files for upload (``StorageUpload``); already queued ones are left as they are.
    package func addUploads(_ uploads: [StorageUpload]) async throws {
        try await run { db throws(SQLError) in
            for u in uploads {
                try db.execute("""
                    INSERT INTO storage_uploads (file_id, recording_id, path, object_key, upload_id, attempts, next_attempt_at, state, last_error, created_at)
                    VALUES ($1, $2, $3, $4, NULL, 0, $5, 'pending', NULL, $6) ON CONFLICT DO NOTHING
                    """, [.text(u.fileID), .text(u.recordingID), .text(u.path), .text(u.objectKey), .int(u.nextAttemptAt), .int(u.createdAt)])
            }
        }
    }

    /// Uploads still to do (all recordings), oldest first.
    package func pendingUploads() async throws -> [StorageUpload] {
        try await run { db throws(SQLError) in
            try db.execute("SELECT * FROM storage_uploads WHERE state = 'pending' ORDER BY created_at, file_id").map(Self.upload)
        }
    }

    /// Every upload of one recording, whatever its state.
    package func uploads(recordingID: String) async throws -> [StorageUpload] {
        try await run { db throws(SQLError) in
            try db.execute("SELECT * FROM storage_uploads WHERE recording_id = $1 ORDER BY created_at, file_id", [.text(recordingID)]).map(Self.upload)
        }
    }

    static func upload(_ r: SQLRow) -> StorageUpload {
        StorageUpload(fileID: r["file_id"].text ?? "", recordingID: r["recording_id"].text ?? "", path: r["path"].text ?? "",
                      objectKey: r["object_key"].text ?? "", uploadID: r["upload_id"].text, attempts: Int(r["attempts"].int ?? 0),
                      nextAttemptAt: r["next_attempt_at"].int ?? 0, state: StorageUpload.State(rawValue: r["state"].text ?? "") ?? .failed,
                      lastError: r["last_error"].text, createdAt: r["created_at"].int ?? 0)
    }

    package func updateUpload(_ u: StorageUpload) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                UPDATE storage_uploads SET upload_id = $2, attempts = $3, next_attempt_at = $4, state = $5, last_error = $6 WHERE file_id = $1
                """, [.text(u.fileID), u.uploadID.map { .text($0) } ?? .null, .int(Int64(u.attempts)), .int(u.nextAttemptAt), .text(u.state.rawValue),
                      u.lastError.map { .text($0) } ?? .null])
        }
    }

    /// The file is in S3 now: its object key is recorded.
    package func setObjectKey(fileID: String, key: String) async throws {
        try await run { db throws(SQLError) in
            try db.execute("UPDATE recording_files SET object_key = $2 WHERE id = $1", [.text(fileID), .text(key)])
        }
    }

    package func setRecordingStorage(id: String, storage: String, status: RecordingRecord.Status, failureReason: String?) async throws {
        try await run { db throws(SQLError) in
            // Never over a deleted recording (its files are gone, whatever an upload says).
            try db.execute("UPDATE recordings SET storage = $2, status = $3, failure_reason = $4 WHERE id = $1 AND status <> 'deleted'",
                           [.text(id), .text(storage), .text(status.rawValue), failureReason.map { .text($0) } ?? .null])
        }
    }

    package func finishRecording(id: String, status: RecordingRecord.Status, endedAt: Int64, durationMs: Int64?, failureReason: String?) async throws {
        try await run { db throws(SQLError) in
            try db.execute("UPDATE recordings SET status = $2, ended_at = $3, duration_ms = $4, failure_reason = $5 WHERE id = $1",
                           [.text(id), .text(status.rawValue), .int(endedAt), durationMs.map { .int($0) } ?? .null, failureReason.map { .text($0) } ?? .null])
        }
    }

    package func addRecordingFile(_ f: RecordingFileRecord) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                INSERT INTO recording_files (id, recording_id, user_id, track_kinds, file_name, path, size_bytes, format, video_codec,
                  audio_codec, resolution, duration_ms, source)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                ON CONFLICT (id) DO UPDATE SET size_bytes = excluded.size_bytes, duration_ms = excluded.duration_ms, resolution = excluded.resolution
                """, [.text(f.id), .text(f.recordingID), .text(f.userID), .text(f.trackKinds.joined(separator: ",")), .text(f.fileName),
                      .text(f.path), .int(f.sizeBytes), .text(f.format), f.videoCodec.map { .text($0) } ?? .null,
                      f.audioCodec.map { .text($0) } ?? .null, f.resolution.map { .text($0) } ?? .null, .int(f.durationMs), .text(f.source)])
        }
    }

    /// Appends lines to a recording's consent list; `seq` orders them (the writer's count).
    package func addRecordingConsents(recordingID: String, _ lines: [(seq: Int64, consent: RecordingConsent)]) async throws {
        guard !lines.isEmpty else { return }
        try await run { db throws(SQLError) in
            for (seq, c) in lines {
                try db.execute("""
                    INSERT INTO recording_consents (id, recording_id, seq, user_id, granted, at) VALUES ($1, $2, $3, $4, $5, $6)
                    ON CONFLICT DO NOTHING
                    """, [.text("\(recordingID)-\(seq)"), .text(recordingID), .int(seq), .text(c.userID), .int(c.granted ? 1 : 0), .int(c.atMillis)])
            }
        }
    }

    package func recording(id: String) async throws -> RecordingRecord? {
        try await recordings(where: "id = $1", [.text(id)]).first
    }

    /// Recordings, newest first, optionally of one room and/or in one status.
    package func recordings(roomID: String? = nil, status: RecordingRecord.Status? = nil) async throws -> [RecordingRecord] {
        switch (roomID, status) {
        case (nil, nil): try await recordings(where: "1 = 1", [])
        case (let r?, nil): try await recordings(where: "room_id = $1", [.text(r)])
        case (nil, let s?): try await recordings(where: "status = $1", [.text(s.rawValue)])
        case (let r?, let s?): try await recordings(where: "room_id = $1 AND status = $2", [.text(r), .text(s.rawValue)])
        }
    }

    private func recordings(where condition: String, _ parameters: [SQLValue]) async throws -> [RecordingRecord] {
        try await run { db throws(SQLError) in
            let rows = try db.execute("SELECT * FROM recordings WHERE \(condition) ORDER BY started_at DESC, id", parameters)
            return try rows.map { row throws(SQLError) in
                let id = row["id"].text ?? ""
                let files = try db.execute("SELECT * FROM recording_files WHERE recording_id = $1 ORDER BY id", [.text(id)]).map { f in
                    RecordingFileRecord(id: f["id"].text ?? "", recordingID: id, userID: f["user_id"].text ?? "",
                                        trackKinds: (f["track_kinds"].text ?? "").split(separator: ",").map(String.init),
                                        fileName: f["file_name"].text ?? "", path: f["path"].text ?? "", sizeBytes: f["size_bytes"].int ?? 0,
                                        source: f["source"].text ?? "camera", format: f["format"].text ?? "webm", videoCodec: f["video_codec"].text, audioCodec: f["audio_codec"].text,
                                        resolution: f["resolution"].text, durationMs: f["duration_ms"].int ?? 0, objectKey: f["object_key"].text)
                }
                return RecordingRecord(id: id, roomID: row["room_id"].text ?? "", mode: row["mode"].text ?? "",
                                       status: RecordingRecord.Status(rawValue: row["status"].text ?? "") ?? .failed,
                                       startedAt: row["started_at"].int ?? 0, endedAt: row["ended_at"].int, durationMs: row["duration_ms"].int,
                                       storage: row["storage"].text ?? "local", failureReason: row["failure_reason"].text, files: files,
                                       layout: row["layout"].text, deletedAt: row["deleted_at"].int, metadata: row["metadata"].text,
                                       consents: try db.execute("SELECT user_id, granted, at FROM recording_consents WHERE recording_id = $1 ORDER BY seq",
                                                                [.text(id)]).map { c in
                                           RecordingConsent(userID: c["user_id"].text ?? "", granted: (c["granted"].int ?? 0) != 0, atMillis: c["at"].int ?? 0)
                                       })
            }
        }
    }

    // MARK: snapshots

    package func addSnapshot(_ s: SnapshotRecord) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                INSERT INTO snapshots (id, room_id, user_id, source, taken_at, width, height, format, size_bytes, path)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING
                """, [.text(s.id), .text(s.roomID), .text(s.userID), .text(s.source), .int(s.takenAt), .int(Int64(s.width)),
                      .int(Int64(s.height)), .text(s.format), .int(s.sizeBytes), .text(s.path)])
        }
    }

    package func snapshot(id: String) async throws -> SnapshotRecord? {
        try await run { db throws(SQLError) in try db.execute("SELECT * FROM snapshots WHERE id = $1", [.text(id)]).first.map(Self.snapshot) }
    }

    /// Snapshots, newest first, optionally of one room.
    package func snapshots(roomID: String?) async throws -> [SnapshotRecord] {
        try await run { db throws(SQLError) in
            if let roomID {
                return try db.execute("SELECT * FROM snapshots WHERE room_id = $1 ORDER BY taken_at DESC, id", [.text(roomID)]).map(Self.snapshot)
            }
            return try db.execute("SELECT * FROM snapshots ORDER BY taken_at DESC, id").map(Self.snapshot)
        }
    }

    static func snapshot(_ row: SQLRow) -> SnapshotRecord {
        SnapshotRecord(id: row["id"].text ?? "", roomID: row["room_id"].text ?? "", userID: row["user_id"].text ?? "",
                       source: row["source"].text ?? "camera", takenAt: row["taken_at"].int ?? 0, width: Int(row["width"].int ?? 0),
                       height: Int(row["height"].int ?? 0), format: row["format"].text ?? "jpeg", sizeBytes: row["size_bytes"].int ?? 0,
                       path: row["path"].text ?? "")
    }

    // MARK: deletion, retention, secrets

    /// Marks a finished recording deleted (its files are removed by the caller). - Returns: false
    /// when it was not finished (recording, processing) or already deleted.
    package func markRecordingDeleted(id: String, at: Int64) async throws -> Bool {
        try await run { db throws(SQLError) in
            let found = try db.execute("SELECT status FROM recordings WHERE id = $1", [.text(id)]).first?["status"].text
            guard found == RecordingRecord.Status.completed.rawValue || found == RecordingRecord.Status.failed.rawValue else { return false }
            try db.execute("UPDATE recordings SET status = 'deleted', deleted_at = $2 WHERE id = $1 AND status IN ('completed', 'failed')",
                           [.text(id), .int(at)])
            return true
        }
    }

    /// Finished recordings (completed or failed) that ended before `millis`, oldest first.
    package func recordingsEnded(before millis: Int64) async throws -> [RecordingRecord] {
        try await recordings(where: "status IN ('completed', 'failed') AND ended_at < $1", [.int(millis)])
    }

    /// A secret of the server's own, made once and kept in the store (so that every node on the
    /// same database, and every restart, agrees on it): 32 random bytes, hex.
    package func serverSecret(name: String) async throws -> String {
        let fresh = secureRandomBytes(32).map { String(format: "%02x", $0) }.joined()
        return try await run { db throws(SQLError) in
            try db.execute("INSERT INTO server_secrets (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                           [.text(name), .text(fresh), .int(Self.nowMillis)])
            return try db.execute("SELECT value FROM server_secrets WHERE name = $1", [.text(name)]).first?["value"].text ?? fresh
        }
    }

    // MARK: call history

    /// A page of rooms, newest first (created_at, then id, descending: a stable order in which a
    /// room created while a client pages appears before its first page, never inside it), with
    /// each room's participant counts and recordings, read for the page's rooms only.
    package func roomHistory(_ q: RoomHistoryQuery) async throws -> [RoomHistoryEntry] {
        let now = Self.nowMillis
        return try await run { db throws(SQLError) in
            var conditions: [String] = []
            var parameters: [SQLValue] = []
            func bind(_ v: SQLValue) -> String {
                parameters.append(v)
                return "$\(parameters.count)"
            }
            switch q.status {
            case .open: conditions.append("closed_at IS NULL")
            case .closed: conditions.append("closed_at IS NOT NULL")
            case .all: break
            }
            if let from = q.fromMillis { conditions.append("created_at >= \(bind(.int(from)))") }
            if let to = q.toMillis { conditions.append("created_at < \(bind(.int(to)))") }
            if let after = q.after {
                let at = bind(.int(after.at)), id = bind(.text(after.id))
                conditions.append("(created_at < \(at) OR (created_at = \(at) AND id < \(id)))")
            }
            let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let rooms = try db.execute("SELECT * FROM rooms \(whereClause) ORDER BY created_at DESC, id DESC LIMIT \(bind(.int(Int64(q.limit))))",
                                       parameters).map(Self.room)
            guard !rooms.isEmpty else { return [] }
            let ids = rooms.map { SQLValue.text($0.id) }
            let list = (1...ids.count).map { "$\($0)" }.joined(separator: ", ")
            var sessions: [String: [(user: String, joined: Int64, left: Int64?)]] = [:]
            for row in try db.execute("SELECT room_id, user_id, joined_at, left_at FROM participant_sessions WHERE room_id IN (\(list))", ids) {
                sessions[row["room_id"].text ?? "", default: []].append((row["user_id"].text ?? "", row["joined_at"].int ?? 0, row["left_at"].int))
            }
            var recordings: [String: [String]] = [:]
            for row in try db.execute("SELECT id, room_id FROM recordings WHERE room_id IN (\(list)) ORDER BY started_at, id", ids) {
                recordings[row["room_id"].text ?? "", default: []].append(row["id"].text ?? "")
            }
            return rooms.map { room in
                let s = sessions[room.id] ?? []
                return RoomHistoryEntry(room: room, totalParticipants: Set(s.map(\.user)).count, sessions: s.count,
                                        peakParticipants: Self.peak(s.map { ($0.joined, $0.left ?? room.closedAt ?? now) }),
                                        recordingIDs: recordings[room.id] ?? [])
            }
        }
    }

    /// The most intervals open at once; an interval that ends when another starts does not overlap it.
    static func peak(_ intervals: [(start: Int64, end: Int64)]) -> Int {
        // Ends sort before starts at the same time.
        var points: [(at: Int64, delta: Int)] = []
        points.reserveCapacity(intervals.count * 2)
        for i in intervals {
            points.append((i.start, 1))
            points.append((max(i.start, i.end), -1))
        }
        points.sort { a, b in a.at != b.at ? a.at < b.at : a.delta < b.delta }
        var open = 0, most = 0
        for (_, delta) in points {
            open += delta
            most = max(most, open)
        }
        return most
    }

    // MARK: chat

    package func addChatMessage(_ m: ChatMessageRecord) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                INSERT INTO chat_messages (id, room_id, peer_id, user_id, message, at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING
                """, [.text(m.id), .text(m.roomID), .text(m.peerID), .text(m.userID), .text(m.message), .int(m.at)])
        }
    }

    /// A room's messages in the order they were sent, `limit` at most after `after`.
    package func chatMessages(roomID: String, after: ListPosition? = nil, limit: Int) async throws -> [ChatMessageRecord] {
        try await run { db throws(SQLError) in
            var sql = "SELECT * FROM chat_messages WHERE room_id = $1"
            var parameters: [SQLValue] = [.text(roomID)]
            if let after {
                sql += " AND (at > $2 OR (at = $2 AND id > $3))"
                parameters += [.int(after.at), .text(after.id)]
            }
            sql += " ORDER BY at, id LIMIT $\(parameters.count + 1)"
            parameters.append(.int(Int64(limit)))
            return try db.execute(sql, parameters).map { row in
                ChatMessageRecord(id: row["id"].text ?? "", roomID: row["room_id"].text ?? "", peerID: row["peer_id"].text ?? "",
                                  userID: row["user_id"].text ?? "", message: row["message"].text ?? "", at: row["at"].int ?? 0)
            }
        }
    }

    // MARK: audit log and quality

    package func appendEvent(_ e: RoomEvent) async throws {
        try await run { db throws(SQLError) in try Self.insert(e, into: db) }
    }

    /// The one INSERT of an audit event (an event written twice, by id, stays one).
    static func insert(_ e: RoomEvent, into db: SQLDatabase) throws(SQLError) {
        try db.execute("""
            INSERT INTO room_events (id, room_id, at, kind, user_id, detail, actor, subject, data)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING
            """, [.text(e.id), .text(e.roomID), .int(e.at), .text(e.kind), e.userID.map { .text($0) } ?? .null, e.detail.map { .text($0) } ?? .null,
                  e.actor.map { .text($0) } ?? .null, e.subject.map { .text($0) } ?? .null, RoomEvent.encode(e.data).map { .text($0) } ?? .null])
    }

    /// Appends `event` (if any) to the audit trail and `deliveries` to the webhook outbox in one
    /// transaction: the event is in the trail if and only if its webhooks will be delivered.
    package func appendEvent(_ e: RoomEvent?, outbox deliveries: [OutboxDelivery]) async throws {
        try await run { db throws(SQLError) in
            try db.transaction { () throws(SQLError) in
                if let e { try Self.insert(e, into: db) }
                // One connection, one thread: the next number cannot be taken by another writer meanwhile.
                let seq = (try db.execute("SELECT COALESCE(MAX(seq), 0) AS m FROM webhook_outbox").first?["m"].int ?? 0) + 1
                for d in deliveries {
                    try db.execute("""
                        INSERT INTO webhook_outbox (id, url, seq, room_id, event, body, created_at, attempts, next_attempt_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) ON CONFLICT DO NOTHING
                        """, [.text(d.id), .text(d.url), .int(seq), d.roomID.map { .text($0) } ?? .null, .text(d.event), .text(d.body),
                              .int(d.createdAt), .int(d.nextAttemptAt)])
                }
            }
        }
    }

    /// The deliveries to `url` not yet delivered or given up, in order.
    package func pendingDeliveries(url: String, limit: Int) async throws -> [OutboxDelivery] {
        try await run { db throws(SQLError) in
            try db.execute("""
                SELECT * FROM webhook_outbox WHERE url = $1 AND delivered_at IS NULL AND given_up_at IS NULL ORDER BY seq, id LIMIT $2
                """, [.text(url), .int(Int64(limit))]).map { r in
                var d = OutboxDelivery(id: r["id"].text ?? "", url: r["url"].text ?? "", roomID: r["room_id"].text, event: r["event"].text ?? "",
                                       body: r["body"].text ?? "", createdAt: r["created_at"].int ?? 0)
                d.seq = r["seq"].int ?? 0
                d.attempts = Int(r["attempts"].int ?? 0)
                d.nextAttemptAt = r["next_attempt_at"].int ?? 0
                return d
            }
        }
    }

    /// Records an attempt's outcome: delivered (`deliveredAt`), given up (`givenUpAt`), or to be
    /// tried again at `nextAttemptAt`.
    package func recordAttempt(id: String, url: String, attempts: Int, nextAttemptAt: Int64? = nil, deliveredAt: Int64? = nil,
                               givenUpAt: Int64? = nil, error: String? = nil) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                UPDATE webhook_outbox SET attempts = $3, next_attempt_at = COALESCE($4, next_attempt_at), delivered_at = $5, given_up_at = $6,
                  last_error = $7 WHERE id = $1 AND url = $2
                """, [.text(id), .text(url), .int(Int64(attempts)), nextAttemptAt.map { .int($0) } ?? .null, deliveredAt.map { .int($0) } ?? .null,
                      givenUpAt.map { .int($0) } ?? .null, error.map { .text($0) } ?? .null])
        }
    }

    /// Deliveries waiting (all URLs).
    package func pendingDeliveryCount() async throws -> Int {
        try await run { db throws(SQLError) in
            Int(try db.execute("SELECT COUNT(*) AS n FROM webhook_outbox WHERE delivered_at IS NULL AND given_up_at IS NULL").first?["n"].int ?? 0)
        }
    }

    /// Forgets deliveries that ended (delivered or given up) before `before`.
    package func purgeDeliveries(endedBefore before: Int64) async throws {
        try await run { db throws(SQLError) in
            try db.execute("""
                DELETE FROM webhook_outbox WHERE (delivered_at IS NOT NULL AND delivered_at < $1) OR (given_up_at IS NOT NULL AND given_up_at < $1)
                """, [.int(before)])
        }
    }

    /// Appends events in one transaction (for tests and tools that generate many).
    package func appendEvents(_ events: [RoomEvent]) async throws {
        try await run { db throws(SQLError) in
            try db.transaction { () throws(SQLError) in
                for e in events { try Self.insert(e, into: db) }
            }
        }
    }

    static func event(_ row: SQLRow) -> RoomEvent {
        RoomEvent(id: row["id"].text ?? "", roomID: row["room_id"].text ?? "", at: row["at"].int ?? 0, kind: row["kind"].text ?? "",
                  userID: row["user_id"].text, detail: row["detail"].text, actor: row["actor"].text, subject: row["subject"].text,
                  data: RoomEvent.decode(row["data"].text))
    }

    /// A room's events in the order they happened (at, then id), of one type if given.
    package func events(roomID: String, type: String? = nil, after: ListPosition? = nil, limit: Int = 100_000) async throws -> [RoomEvent] {
        try await run { db throws(SQLError) in
            var sql = "SELECT * FROM room_events WHERE room_id = $1"
            var parameters: [SQLValue] = [.text(roomID)]
            if let type {
                parameters.append(.text(type))
                sql += " AND kind = $\(parameters.count)"
            }
            if let after {
                parameters += [.int(after.at), .text(after.id)]
                sql += " AND (at > $\(parameters.count - 1) OR (at = $\(parameters.count - 1) AND id > $\(parameters.count)))"
            }
            parameters.append(.int(Int64(limit)))
            sql += " ORDER BY at, id LIMIT $\(parameters.count)"
            return try db.execute(sql, parameters).map(Self.event)
        }
    }

    /// Every room's events in [`from`, `to`) by time, a page of `limit` after `after` (the export).
    package func events(from: Int64?, to: Int64?, after: ListPosition?, limit: Int) async throws -> [RoomEvent] {
        try await run { db throws(SQLError) in
            var conditions: [String] = []
            var parameters: [SQLValue] = []
            if let from {
                parameters.append(.int(from))
                conditions.append("at >= $\(parameters.count)")
            }
            if let to {
                parameters.append(.int(to))
                conditions.append("at < $\(parameters.count)")
            }
            if let after {
                parameters += [.int(after.at), .text(after.id)]
                conditions.append("(at > $\(parameters.count - 1) OR (at = $\(parameters.count - 1) AND id > $\(parameters.count)))")
            }
            parameters.append(.int(Int64(limit)))
            let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            return try db.execute("SELECT * FROM room_events \(whereClause) ORDER BY at, id LIMIT $\(parameters.count)", parameters).map(Self.event)
        }
    }

    package func addQualitySample(_ q: QualitySample) async throws {
        try await run { db throws(SQLError) in
            func d(_ v: Double?) -> SQLValue { v.map { .double($0) } ?? .null }
            func i(_ v: Int64?) -> SQLValue { v.map { .int($0) } ?? .null }
            func t(_ v: String?) -> SQLValue { v.map { .text($0) } ?? .null }
            try db.execute("""
                INSERT INTO quality_samples (room_id, participant_session_id, at, rtt_ms, loss_fraction, jitter_ms, bitrate_bps, uplink_loss,
                  downlink_loss, audio_bitrate_bps, video_bitrate_bps, subscribe_bitrate_bps, available_bandwidth_bps, grade, subscriptions)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING
                """, [.text(q.roomID), .text(q.participantSessionID), .int(q.at), d(q.rttMs), d(q.lossFraction), d(q.jitterMs), i(q.bitrateBps),
                      d(q.uplinkLoss), d(q.downlinkLoss), i(q.audioBitrateBps), i(q.videoBitrateBps), i(q.subscribeBitrateBps),
                      i(q.availableBandwidthBps), t(q.grade), t(q.subscriptionsJSON)])
        }
    }

    /// A room's samples in time order, of one user's sessions if given, in [`from`, `to`).
    package func qualitySamples(roomID: String, userID: String? = nil, from: Int64? = nil, to: Int64? = nil,
                                limit: Int = 100_000) async throws -> [QualitySample] {
        try await run { db throws(SQLError) in
            var sql = """
                SELECT q.*, s.user_id AS session_user FROM quality_samples q
                LEFT JOIN participant_sessions s ON s.id = q.participant_session_id WHERE q.room_id = $1
                """
            var parameters: [SQLValue] = [.text(roomID)]
            if let userID {
                parameters.append(.text(userID))
                sql += " AND s.user_id = $\(parameters.count)"
            }
            if let from {
                parameters.append(.int(from))
                sql += " AND q.at >= $\(parameters.count)"
            }
            if let to {
                parameters.append(.int(to))
                sql += " AND q.at < $\(parameters.count)"
            }
            parameters.append(.int(Int64(limit)))
            sql += " ORDER BY q.at, q.participant_session_id LIMIT $\(parameters.count)"
            return try db.execute(sql, parameters).map { row in
                QualitySample(roomID: row["room_id"].text ?? "", participantSessionID: row["participant_session_id"].text ?? "", at: row["at"].int ?? 0,
                              rttMs: row["rtt_ms"].double, lossFraction: row["loss_fraction"].double, jitterMs: row["jitter_ms"].double,
                              bitrateBps: row["bitrate_bps"].int, uplinkLoss: row["uplink_loss"].double, downlinkLoss: row["downlink_loss"].double,
                              audioBitrateBps: row["audio_bitrate_bps"].int, videoBitrateBps: row["video_bitrate_bps"].int,
                              subscribeBitrateBps: row["subscribe_bitrate_bps"].int, availableBandwidthBps: row["available_bandwidth_bps"].int,
                              grade: row["grade"].text, subscriptionsJSON: row["subscriptions"].text, userID: row["session_user"].text)
            }
        }
    }
}
