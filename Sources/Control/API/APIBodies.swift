import Foundation
import SFU

/// The control API's responses and the webhooks' payloads (docs/API.md, docs/openapi.yaml), one
/// `Encodable` type each, written by one encoder: snake_case keys from the Swift names, sorted.
/// An optional field is left out when nil unless the contract shows it as `null` (the layer fields
/// of a subscription).
enum APIJSON {
    static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    static func data(_ value: some Encodable) throws -> Data { try encoder.encode(value) }
}


struct RoomBody: Encodable, Sendable {
    var id: String
    var name: String
    var createdAt: String
    var status: String
    var maxParticipants: Int
    var emptyTimeoutS: Int
    var maxDurationS: Int
    var autoRecord: Bool
    var closedAt: String?
    var closeReason: String?
    var participants: Participants?
    /// The app's metadata, as given at creation.
    var metadata: JSONValue?
    /// `notice` or `required`.
    var recordingConsent: String
    /// The call history's figures (`GET /v1/rooms`): from creation to close (or now), distinct
    /// users that joined, most participants at once, the room's recordings in start order.
    var durationMs: Int64?
    var totalParticipants: Int?
    var peakParticipants: Int?
    var recordingIds: [String]?

    /// A room's participants: its open sessions from the store, or the live room's view.
    enum Participants: Encodable, Sendable {
        case sessions([SessionBody])
        case live([ParticipantBody])

        func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .sessions(let s): try c.encode(s)
            case .live(let p): try c.encode(p)
            }
        }
    }

    struct SessionBody: Encodable, Sendable {
        var userID, name, role, joinedAt: String
    }

    init(_ r: RoomRecord, participants: Participants?) {
        id = r.id
        name = r.name
        createdAt = ControlAPI.iso8601(r.createdAt)
        status = r.closedAt == nil ? "open" : "closed"
        maxParticipants = r.maxParticipants
        emptyTimeoutS = r.emptyTimeoutS
        maxDurationS = r.maxDurationS
        autoRecord = r.autoRecord
        closedAt = r.closedAt.map(ControlAPI.iso8601)
        closeReason = r.closeReason
        self.participants = participants
        metadata = r.metadata.flatMap(JSONValue.parse)
        recordingConsent = r.consentRequired ? "required" : "notice"
    }

    static func sessions(_ records: [ParticipantSessionRecord]) -> Participants {
        .sessions(records.map { SessionBody(userID: $0.userID, name: $0.name, role: $0.role, joinedAt: ControlAPI.iso8601($0.joinedAt)) })
    }
}

extension RoomBody {
    init(history e: RoomHistoryEntry, nowMillis: Int64) {
        self.init(e.room, participants: nil)
        durationMs = max(0, (e.room.closedAt ?? nowMillis) - e.room.createdAt)
        totalParticipants = e.totalParticipants
        peakParticipants = e.peakParticipants
        recordingIds = e.recordingIDs
    }
}

/// A page of a list route: `{"<name>": [items], "next_cursor": ...}`, the cursor `null` on the
/// last page (the call history's rooms, a room's events and messages).
struct PageBody<Item: Encodable & Sendable>: Encodable, Sendable {
    let name: String
    var items: [Item]
    var nextCursor: String?

    struct Key: CodingKey {
        var stringValue: String
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        var intValue: Int? { nil }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(items, forKey: Key(name))
        try c.encode(nextCursor, forKey: Key("next_cursor"))
    }
}

/// One audit event (`GET /v1/rooms/{id}/events`, the export): `{id, at, room_id, type, actor,
/// subject, data}`.
struct EventBody: Encodable, Sendable {
    var id, at, roomID, type, actor, subject: String
    var data: [String: String]

    init(_ e: RoomEvent) {
        id = e.id
        at = ControlAPI.iso8601(e.at)
        roomID = e.roomID
        type = e.kind
        actor = e.effectiveActor
        subject = e.effectiveSubject
        data = e.effectiveData
    }

    static let csvHeader = "id,at,room_id,type,actor,subject,data\r\n"

    /// RFC 4180: every field quoted, quotes doubled; `data` as its JSON object.
    var csvLine: String {
        let json = (try? APIJSON.data(data)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return [id, at, roomID, type, actor, subject, json].map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
            .joined(separator: ",") + "\r\n"
    }
}

/// A signed link to a recording file: `{url, expires_at}`.
struct SignedLinkBody: Encodable, Sendable {
    var url, expiresAt: String
}

/// One chat message of `GET /v1/rooms/{id}/messages`.
struct ChatMessageBody: Encodable, Sendable {
    var id, peerID, userID, message, timestamp: String
    init(_ m: ChatMessageRecord) {
        (id, peerID, userID, message, timestamp) = (m.id, m.peerID, m.userID, m.message, ControlAPI.iso8601(m.at))
    }
}

/// One participant session of `GET /v1/rooms/{id}/sessions` (docs/API.md): a connection from
/// `join_room` to its end, `peer_id` its id.
struct ParticipantSessionBody: Encodable, Sendable, Equatable {
    /// Why a session ended, in the contract's words.
    enum LeaveReason: String, Encodable, Sendable {
        case left, removed, replaced
        case connectionLost = "connection_lost"
        case roomClosed = "room_closed"

        /// The contract's reason for a stored leave code: the participant's `leave_room` (`left`),
        /// its connection gone (socket closed without a leave, or ICE consent lost:
        /// `connection_lost`), another connection of the same user (`replaced`), the room's close
        /// (`room_closed`); the API's removal and the server's (a limit it broke: `rate_limited`,
        /// `slow_reader`, `bad_message`...) are `removed`.
        init(code: String) {
            switch code {
            case SignalingSession.leftCode: self = .left
            case RemovalReason.connectionLost.code: self = .connectionLost
            case RemovalReason.replaced.code: self = .replaced
            case RemovalReason.roomClosed.code: self = .roomClosed
            default: self = .removed
            }
        }
    }

    var peerID, userID, name, role, joinedAt: String
    /// Absent (null) while the session is open.
    var leftAt: String?
    /// To `left_at`, or to now for an open session.
    var durationMs: Int64
    var leaveReason: LeaveReason?

    init(_ r: ParticipantSessionRecord, nowMillis: Int64) {
        peerID = r.id
        userID = r.userID
        name = r.name
        role = r.role
        joinedAt = ControlAPI.iso8601(r.joinedAt)
        leftAt = r.leftAt.map(ControlAPI.iso8601)
        durationMs = max(0, (r.leftAt ?? nowMillis) - r.joinedAt)
        leaveReason = r.leftAt == nil ? nil : LeaveReason(code: r.leaveReason ?? SignalingSession.leftCode)
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(peerID, forKey: .peerID)
        try c.encode(userID, forKey: .userID)
        try c.encode(name, forKey: .name)
        try c.encode(role, forKey: .role)
        try c.encode(joinedAt, forKey: .joinedAt)
        // Explicit nulls: an open session says so.
        try c.encode(leftAt, forKey: .leftAt)
        try c.encode(durationMs, forKey: .durationMs)
        try c.encode(leaveReason, forKey: .leaveReason)
    }

    enum CodingKeys: String, CodingKey {
        case peerID, userID, name, role, joinedAt, leftAt, durationMs, leaveReason
    }
}

struct ParticipantSessionListBody: Encodable, Sendable { var sessions: [ParticipantSessionBody] }

/// `POST /v1/rooms/{id}/tokens` and `POST /demo/join`.
struct TokenBody: Encodable, Sendable {
    /// Set for the demo page only (it asked for a room by name).
    var roomID: String?
    var token: String
    var signalingURL: String
    var iceServers: [ICEServerEntry]
    var expiresAt: String?
}

struct TrackBody: Encodable, Sendable {
    var trackID, kind, source: String
    var muted, simulcast: Bool

    init(_ t: TrackInfo) {
        trackID = t.trackID
        kind = t.kind.rawValue
        source = t.source.rawValue
        muted = t.muted
        simulcast = t.simulcast
    }
}

/// A live participant (the participants routes, a room's live view, the mute answer).
struct ParticipantBody: Encodable, Sendable {
    var peerID, userID, name, role, joinedAt: String
    var tracks: [TrackBody]
    var quality: Quality
    var subscriptions: [Subscription]

    struct Quality: Encodable, Sendable {
        var publishBitrateBps: Int64
        var subscribeBitrateBps: Int64
        var audioBitrateBps: Int64
        var videoBitrateBps: Int64
        var rttMs: Double?
        var uplinkLoss: Double?
        var downlinkLoss: Double?
        var jitterMs: Double?
        var downlinkEstimateBps: Int64?
        /// The same estimate under the contract's v1.1 name.
        var availableBandwidthBps: Int64?
        var grade: String
    }

    struct Subscription: Encodable, Sendable {
        var peerID, trackID, kind, source: String
        var paused: Bool
        var spatialLayer, targetSpatialLayer, temporalLayer, targetTemporalLayer, maxSpatial, maxTemporal: Int?
        var layerSwitches: Int
        var bitrateBps: Int64
        var width: Int?
        var height: Int?
        var fps: Double?

        enum CodingKeys: String, CodingKey {
            case peerID = "peer_id", trackID = "track_id", kind, source, paused
            case spatialLayer = "spatial_layer", targetSpatialLayer = "target_spatial_layer"
            case temporalLayer = "temporal_layer", targetTemporalLayer = "target_temporal_layer"
            case maxSpatial = "max_spatial", maxTemporal = "max_temporal", layerSwitches = "layer_switches", bitrateBps = "bitrate_bps"
            case width, height, fps
        }

        /// The layer fields are always present, `null` when unknown or uncapped (docs/API.md).
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(peerID, forKey: .peerID)
            try c.encode(trackID, forKey: .trackID)
            try c.encode(kind, forKey: .kind)
            try c.encode(source, forKey: .source)
            try c.encode(paused, forKey: .paused)
            try c.encode(spatialLayer, forKey: .spatialLayer)
            try c.encode(targetSpatialLayer, forKey: .targetSpatialLayer)
            try c.encode(temporalLayer, forKey: .temporalLayer)
            try c.encode(targetTemporalLayer, forKey: .targetTemporalLayer)
            try c.encode(maxSpatial, forKey: .maxSpatial)
            try c.encode(maxTemporal, forKey: .maxTemporal)
            try c.encode(layerSwitches, forKey: .layerSwitches)
            try c.encode(bitrateBps, forKey: .bitrateBps)
            try c.encode(width, forKey: .width)
            try c.encode(height, forKey: .height)
            try c.encode(fps, forKey: .fps)
        }
    }

    init(_ s: ParticipantSnapshot, nowMillis: Int64, nowNanos: Int64) {
        let q = s.quality
        peerID = s.peer.peerID
        userID = s.peer.userID
        name = s.peer.name
        role = s.peer.role
        joinedAt = ControlAPI.iso8601(nowMillis - (nowNanos - s.joinedNanos) / 1_000_000)
        tracks = s.tracks.map(TrackBody.init)
        quality = Quality(publishBitrateBps: q.publishBitrate, subscribeBitrateBps: q.subscribeBitrate, audioBitrateBps: q.audioBitrate,
                          videoBitrateBps: q.videoBitrate,
                          rttMs: q.rttMs.map { ($0 * 10).rounded() / 10 }, uplinkLoss: q.uplinkLoss.map { ($0 * 1000).rounded() / 1000 },
                          downlinkLoss: q.downlinkLoss.map { ($0 * 1000).rounded() / 1000 }, jitterMs: q.jitterMs.map { ($0 * 10).rounded() / 10 },
                          downlinkEstimateBps: q.downlinkEstimate, availableBandwidthBps: q.downlinkEstimate,
                          grade: QualityGrade.of(q, subscriptions: s.subscriptions).rawValue)
        subscriptions = s.subscriptions.map {
            Subscription(peerID: $0.peerID, trackID: $0.trackID, kind: $0.kind.rawValue, source: $0.source.rawValue, paused: $0.paused,
                         spatialLayer: $0.spatialLayer, targetSpatialLayer: $0.targetSpatialLayer, temporalLayer: $0.temporalLayer,
                         targetTemporalLayer: $0.targetTemporalLayer, maxSpatial: $0.maxSpatial, maxTemporal: $0.maxTemporal,
                         layerSwitches: $0.layerSwitches, bitrateBps: $0.bitrate, width: $0.width, height: $0.height, fps: $0.fps)
        }
    }
}

struct ParticipantListBody: Encodable, Sendable { var participants: [ParticipantBody] }

/// `GET /v1/rooms/{id}/quality`: the stored samples, with the live `quality` object's fields.
struct QualitySampleListBody: Encodable, Sendable {
    struct Sample: Encodable, Sendable {
        var at, peerID: String
        var userID: String?
        var rttMs, jitterMs, uplinkLoss, downlinkLoss: Double?
        var audioBitrateBps, videoBitrateBps, publishBitrateBps, subscribeBitrateBps, availableBandwidthBps: Int64?
        var grade: String?
        var subscriptions: [Received]

        enum CodingKeys: String, CodingKey {
            case at, peerID = "peer_id", userID = "user_id", rttMs = "rtt_ms", jitterMs = "jitter_ms", uplinkLoss = "uplink_loss"
            case downlinkLoss = "downlink_loss", audioBitrateBps = "audio_bitrate_bps", videoBitrateBps = "video_bitrate_bps"
            case publishBitrateBps = "publish_bitrate_bps", subscribeBitrateBps = "subscribe_bitrate_bps"
            case availableBandwidthBps = "available_bandwidth_bps", grade, subscriptions
        }

        /// Every field present, `null` when the sample does not have it (an older sample, a figure not known yet).
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(at, forKey: .at)
            try c.encode(peerID, forKey: .peerID)
            try c.encode(userID, forKey: .userID)
            try c.encode(rttMs, forKey: .rttMs)
            try c.encode(jitterMs, forKey: .jitterMs)
            try c.encode(uplinkLoss, forKey: .uplinkLoss)
            try c.encode(downlinkLoss, forKey: .downlinkLoss)
            try c.encode(audioBitrateBps, forKey: .audioBitrateBps)
            try c.encode(videoBitrateBps, forKey: .videoBitrateBps)
            try c.encode(publishBitrateBps, forKey: .publishBitrateBps)
            try c.encode(subscribeBitrateBps, forKey: .subscribeBitrateBps)
            try c.encode(availableBandwidthBps, forKey: .availableBandwidthBps)
            try c.encode(grade, forKey: .grade)
            try c.encode(subscriptions, forKey: .subscriptions)
        }
    }

    /// What a participant received of one video in a sample.
    struct Received: Codable, Sendable, Equatable {
        var peerID, trackID: String
        var width, height: Int?
        var fps: Double?
        var bitrateBps: Int64
        var paused: Bool
        enum CodingKeys: String, CodingKey {
            case peerID = "peer_id", trackID = "track_id", width, height, fps, bitrateBps = "bitrate_bps", paused
        }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(peerID, forKey: .peerID)
            try c.encode(trackID, forKey: .trackID)
            try c.encode(width, forKey: .width)
            try c.encode(height, forKey: .height)
            try c.encode(fps, forKey: .fps)
            try c.encode(bitrateBps, forKey: .bitrateBps)
            try c.encode(paused, forKey: .paused)
        }
    }

    var samples: [Sample]

    init(_ records: [QualitySample]) {
        samples = records.map { r in
            let received = r.subscriptionsJSON.flatMap { try? JSONDecoder().decode([Received].self, from: Data($0.utf8)) } ?? []
            return Sample(at: ControlAPI.iso8601(r.at), peerID: r.participantSessionID, userID: r.userID, rttMs: r.rttMs, jitterMs: r.jitterMs,
                          uplinkLoss: r.uplinkLoss ?? (r.downlinkLoss == nil ? r.lossFraction : nil), downlinkLoss: r.downlinkLoss,
                          audioBitrateBps: r.audioBitrateBps, videoBitrateBps: r.videoBitrateBps, publishBitrateBps: r.bitrateBps,
                          subscribeBitrateBps: r.subscribeBitrateBps, availableBandwidthBps: r.availableBandwidthBps, grade: r.grade,
                          subscriptions: received)
        }
    }
}

/// A recording's metadata (PROTOCOL.md), also the `recording_finished` webhook's data.
struct RecordingBody: Encodable, Sendable, Equatable {
    var id, roomID, mode, status, startedAt, storage: String
    var endedAt: String?
    var durationMs: Int64?
    var layout: String?
    var failureReason: String?
    var deletedAt: String?
    var metadata: JSONValue?
    var files: [File]
    /// Each participant's consent, in a room that requires it (empty otherwise).
    var consents: [Consent]

    struct Consent: Encodable, Sendable, Equatable {
        var userID: String
        var granted: Bool
        var at: String
    }

    struct File: Encodable, Sendable, Equatable {
        var id, userID, fileName, path, source, format: String
        var trackKinds: [String]
        var sizeBytes, durationMs: Int64
        var videoCodec, audioCodec, resolution: String?
        /// The object's key in S3 storage (absent for a file on local disk).
        var objectKey: String?
    }

    init(_ r: RecordingRecord) {
        id = r.id
        roomID = r.roomID
        mode = r.mode
        status = r.status.rawValue
        startedAt = ControlAPI.iso8601(r.startedAt)
        storage = r.storage
        endedAt = r.endedAt.map(ControlAPI.iso8601)
        durationMs = r.durationMs
        layout = r.layout
        failureReason = r.failureReason
        deletedAt = r.deletedAt.map(ControlAPI.iso8601)
        metadata = r.metadata.flatMap(JSONValue.parse)
        consents = r.consents.map { Consent(userID: $0.userID, granted: $0.granted, at: ControlAPI.iso8601($0.atMillis)) }
        files = r.files.map {
            File(id: $0.id, userID: $0.userID, fileName: $0.fileName, path: $0.path, source: $0.source, format: $0.format,
                 trackKinds: $0.trackKinds, sizeBytes: $0.sizeBytes, durationMs: $0.durationMs, videoCodec: $0.videoCodec,
                 audioCodec: $0.audioCodec, resolution: $0.resolution, objectKey: $0.objectKey)
        }
    }
}

struct RecordingListBody: Encodable, Sendable { var recordings: [RecordingBody] }

/// A snapshot's metadata, also the `snapshot_taken` webhook's data.
struct SnapshotBody: Encodable, Sendable, Equatable {
    var id, roomID, userID, source, takenAt, format: String
    var width, height: Int
    var sizeBytes: Int64

    init(_ s: SnapshotRecord) {
        id = s.id
        roomID = s.roomID
        userID = s.userID
        source = s.source
        takenAt = ControlAPI.iso8601(s.takenAt)
        format = s.format
        width = s.width
        height = s.height
        sizeBytes = s.sizeBytes
    }
}

struct SnapshotListBody: Encodable, Sendable { var snapshots: [SnapshotBody] }

/// The PROTOCOL.md error shape: `{"error": {"code", "message"}}`.
struct ErrorBody: Encodable, Sendable {
    struct Detail: Encodable, Sendable { var code, message: String }
    var error: Detail
}

/// A webhook event (docs/API.md "Webhooks"): its name and its data, one case each.
package enum WebhookEvent: Sendable {
    case roomStarted(roomID: String, name: String, createdAtMillis: Int64)
    case roomFinished(roomID: String, name: String, closedAtMillis: Int64, reason: String)
    case participantJoined(roomID: String, userID: String, peerID: String, name: String, role: String, joinedAtMillis: Int64)
    case participantLeft(roomID: String, userID: String, peerID: String, reason: String, leftAtMillis: Int64)
    case recordingStarted(recordingID: String, roomID: String, startedAtMillis: Int64)
    case recordingFinished(RecordingRecord)
    case snapshotTaken(SnapshotRecord)
    case chatMessage(roomID: String, message: ChatMessageRecord)
    case recordingDeleted(RecordingRecord)

    package var name: String {
        switch self {
        case .roomStarted: "room_started"
        case .roomFinished: "room_finished"
        case .participantJoined: "participant_joined"
        case .participantLeft: "participant_left"
        case .recordingStarted: "recording_started"
        case .recordingFinished: "recording_finished"
        case .snapshotTaken: "snapshot_taken"
        case .chatMessage: "chat_message"
        case .recordingDeleted: "recording_deleted"
        }
    }

    /// The room the event is about (the outbox keeps it beside the delivery).
    package var roomID: String {
        switch self {
        case .roomStarted(let room, _, _), .roomFinished(let room, _, _, _), .participantJoined(let room, _, _, _, _, _),
             .participantLeft(let room, _, _, _, _), .recordingStarted(_, let room, _), .chatMessage(let room, _):
            room
        case .recordingFinished(let r), .recordingDeleted(let r): r.roomID
        case .snapshotTaken(let s): s.roomID
        }
    }

    struct Room: Encodable { var roomID, name, createdAt: String }
    struct RoomFinished: Encodable { var roomID, name, closedAt, reason: String }
    struct Joined: Encodable { var roomID, userID, peerID, name, role, joinedAt: String }
    struct Left: Encodable { var roomID, userID, peerID, reason, leftAt: String }
    struct RecordingStarted: Encodable { var recordingID, roomID, startedAt: String }
    struct Chat: Encodable { var roomID, messageID, peerID, userID, message, timestamp: String }

    struct Envelope<Data: Encodable>: Encodable {
        var id, event, createdAt: String
        var data: Data
    }

    /// The delivery body: `{"id", "event", "created_at", "data"}`.
    func body(id: String, createdAtMillis: Int64) throws -> Foundation.Data {
        func envelope(_ data: some Encodable) throws -> Foundation.Data {
            try APIJSON.data(Envelope(id: id, event: name, createdAt: ControlAPI.iso8601(createdAtMillis), data: data))
        }
        let iso = ControlAPI.iso8601
        switch self {
        case .roomStarted(let room, let name, let at): return try envelope(Room(roomID: room, name: name, createdAt: iso(at)))
        case .roomFinished(let room, let name, let at, let reason):
            return try envelope(RoomFinished(roomID: room, name: name, closedAt: iso(at), reason: reason))
        case .participantJoined(let room, let user, let peer, let name, let role, let at):
            return try envelope(Joined(roomID: room, userID: user, peerID: peer, name: name, role: role, joinedAt: iso(at)))
        case .participantLeft(let room, let user, let peer, let reason, let at):
            return try envelope(Left(roomID: room, userID: user, peerID: peer, reason: reason, leftAt: iso(at)))
        case .recordingStarted(let id, let room, let at): return try envelope(RecordingStarted(recordingID: id, roomID: room, startedAt: iso(at)))
        case .recordingFinished(let r): return try envelope(RecordingBody(r))
        case .snapshotTaken(let s): return try envelope(SnapshotBody(s))
        case .chatMessage(let room, let m):
            return try envelope(Chat(roomID: room, messageID: m.id, peerID: m.peerID, userID: m.userID, message: m.message, timestamp: iso(m.at)))
        case .recordingDeleted(let r): return try envelope(RecordingBody(r))
        }
    }
}
