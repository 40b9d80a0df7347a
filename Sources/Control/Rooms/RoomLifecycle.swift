import Foundation
import Logging
import SFU

/// Opening and closing rooms, one service for the control API, the janitor and the demo route:
/// opening writes the room, its `room_created` audit event and the `room_started` webhook; closing
/// writes the close (the first one wins: time and reason stay), its `room_closed` event and the
/// `room_finished` webhook once, then stops the room's recordings and disconnects its participants
/// (`room_closed`) every time, so a close retried after a failure finishes the job.
struct RoomLifecycle: Sendable {
let store: MetadataStore
let webhooks: WebhookDispatcher?
    /// Live rooms (nil in tests without media).
let live: LiveRooms?
let recordings: RecordingService?
let logger: Logger

init(store: MetadataStore, webhooks: WebhookDispatcher?, live: LiveRooms?, recordings: RecordingService?, logger: Logger) {
        self.store = store
        self.webhooks = webhooks
        self.live = live
        self.recordings = recordings
        self.logger = logger
    }

    /// What a new room is made with (docs/API.md, `POST /v1/rooms`).
struct Options: Sendable {
        var name: String?
        var maxParticipants = ControlAPI.Defaults.maxParticipants
        var emptyTimeoutS = ControlAPI.Defaults.emptyTimeoutS
        var maxDurationS = ControlAPI.Defaults.maxDurationS
        var autoRecord = false
        /// The app's metadata (a JSON object's text).
        var metadata: String?
        /// `recording_consent: "required"`.
        var consentRequired = false

        init(name: String? = nil) { self.name = name }
    }

    /// Opens a room with a new `rm_` id (named by it when `options.name` is nil). `origin` goes into
    /// the audit event's detail (`"demo"` for the demo page's rooms).
func open(_ options: Options, origin: String? = nil, nowMillis: Int64 = MetadataStore.nowMillis) async throws -> RoomRecord {
        let id = ResourceID.room.make()
        let room = RoomRecord(id: id, name: options.name ?? id, createdAt: nowMillis, maxParticipants: options.maxParticipants,
                              emptyTimeoutS: options.emptyTimeoutS, maxDurationS: options.maxDurationS, autoRecord: options.autoRecord,
                              metadata: options.metadata, consentRequired: options.consentRequired)
        try await store.createRoom(room)
        try await EventLog.append(RoomEvent(roomID: id, at: nowMillis, kind: "room_created", detail: origin, actor: origin == "demo" ? "demo" : "api",
                                            subject: "room:" + id, data: ["name": room.name]),
                                  webhook: .roomStarted(roomID: id, name: room.name, createdAtMillis: nowMillis), store: store, webhooks: webhooks)
        logger.info("room opened", metadata: ["room": "\(id)", "origin": "\(origin ?? "api")"])
        return room
    }

    /// Why a room closed: the contract's `close_reason` (and the `room_finished` webhook's `reason`).
enum CloseReason: Sendable, Equatable {
        case api
        case emptyTimeout
        case maxDuration

        var text: String {
            switch self {
            case .api: "closed by API"
            case .emptyTimeout: "empty timeout"
            case .maxDuration: "max duration reached"
            }
        }
    }

    /// Closes `room` for `reason`.
    /// - Returns: the room as stored after the close (its first close's time and reason).
    @discardableResult
func close(_ room: RoomRecord, reason: CloseReason, nowMillis: Int64 = MetadataStore.nowMillis) async throws -> RoomRecord {
        if room.closedAt == nil {
            try await store.closeRoom(id: room.id, at: nowMillis, reason: reason.text)
            try await EventLog.append(RoomEvent(roomID: room.id, at: nowMillis, kind: "room_closed", detail: reason.text,
                                                actor: reason == .api ? "api" : "server", subject: "room:" + room.id, data: ["reason": reason.text]),
                                      webhook: .roomFinished(roomID: room.id, name: room.name, closedAtMillis: nowMillis, reason: reason.text),
                                      store: store, webhooks: webhooks)
            logger.info("room closed", metadata: ["room": "\(room.id)", "reason": "\(reason.text)"])
        }
        await recordings?.stopAll(roomID: room.id, reason: "room closed (\(reason.text))")
        await live?.close(room.id, message: "the room closed (\(reason.text))")
        return try await store.room(id: room.id) ?? room
    }
}
