import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOWebSocket
import Recorder
import SFU

/// What the signaling handler needs from the server.
public struct RoomServices: Sendable {
    public let store: MetadataStore
    public let live: LiveRooms
    public let signer: JoinTokenSigner
    public let iceServers: [String]
    public let webhooks: WebhookDispatcher?
    public let logger: Logger
    public let recordings: RecordingService?
}

/// `/v1/signal?token=`: a participant's signaling connection (PROTOCOL.md "Signaling",
/// docs/SIGNALING.md). The token is checked before the upgrade; after it, one reader loop handles
/// the client's events and one writer drains the room's signals, so the client sees them in order.
package enum RoomSignaling {
    static let maxMessageSize = 256 * 1024
    static let maxChatLength = 4096

    /// Checks the token of an upgrade request: the claims, or an APIError with the HTTP status.
    static func authorize(_ request: Request, services: RoomServices) async throws -> (JoinClaims, RoomRecord) {
        guard let token = request.uri.queryParameters.get("token"), !token.isEmpty else {
            throw APIError(.unauthorized, "invalid_token", "a join token is required: /v1/signal?token=<join token>")
        }
        let claims: JoinClaims
        do {
            claims = try services.signer.verify(token, nowSeconds: Int64(Date().timeIntervalSince1970))
        } catch .expired {
            throw APIError(.unauthorized, "token_expired", "the join token has expired")
        } catch {
            throw APIError(.unauthorized, "invalid_token", "the join token is not valid: \(error)")
        }
        guard let room = try await services.store.room(id: claims.room) else {
            throw APIError(.notFound, "room_not_found", "room \(claims.room) does not exist")
        }
        guard room.closedAt == nil, !services.live.isClosed(room.id) else { throw APIError(.conflict, "room_closed", "room \(claims.room) is closed") }
        guard !services.live.revocations.isRevoked(room: claims.room, user: claims.sub, issuedAt: claims.iat) else {
            throw APIError(.forbidden, "token_revoked", "this user was removed from the room; the backend must issue a new token")
        }
        return (claims, room)
    }

    /// The checks of ``authorize(_:services:)`` again at `join_room`: the token may have expired,
    /// the room closed, or the user been removed since the upgrade. Closing is known in memory
    /// (``LiveRooms/isClosed(_:)``), so a database outage does not hold up the join.
    static func recheck(_ claims: JoinClaims, services: RoomServices) -> (code: String, message: String)? {
        guard claims.exp > Int64(Date().timeIntervalSince1970) else { return ("token_expired", "the join token has expired") }
        if services.live.revocations.isRevoked(room: claims.room, user: claims.sub, issuedAt: claims.iat) {
            return ("token_revoked", "this user was removed from the room; the backend must issue a new token")
        }
        guard !services.live.isClosed(claims.room) else { return ("room_closed", "the room is closed") }
        return nil
    }

    struct Joined: Sendable {
        let live: LiveRooms.Live
        let peerID: String
        let record: RoomRecord
    }

    static func handle(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, request: Request, services: RoomServices) async throws {
        let logger = services.logger
        let (claims, record): (JoinClaims, RoomRecord)
        do {
            (claims, record) = try await authorize(request, services: services)
        } catch let error as APIError {
            try? await write(outbound, event: "error", data: ["code": error.code, "message": error.message])
            try? await outbound.close(closeCode(for: error.code, joined: false), reason: error.code)
            return
        }
        // The client's queue of events: bounded. A client that does not read its socket (while the
        // room or its own flood fills the queue) is disconnected instead of growing our memory.
        let (signals, continuation) = AsyncStream.makeStream(of: RoomSignal.self, bufferingPolicy: .bufferingOldest(maxQueuedSignals))
        let slowReader = NIOLockedValueBox(false)
        let enqueue: @Sendable (RoomSignal) -> Void = { signal in
            if case .dropped = continuation.yield(signal) { slowReader.withLockedValue { $0 = true } }
        }
        let removedCode = NIOLockedValueBox<String?>(nil)
        let hasJoined = NIOLockedValueBox(false)
        let joinedBox = NIOLockedValueBox<Joined?>(nil)
        // Errors of the socket (the client vanished) end the session like a leave.
        try? await withThrowingTaskGroup(of: Void.self) { group in
            // The writer: the room's signals and our own replies, in order. A `removed` closes the socket.
            group.addTask {
                for await signal in signals {
                    let (event, data) = encode(signal, iceServers: services.iceServers)
                    try await write(outbound, event: event, data: data)
                    if case .removed(let code, _) = signal {
                        removedCode.withLockedValue { $0 = code }
                        try? await outbound.close(closeCode(for: code, joined: hasJoined.withLockedValue { $0 }), reason: code)
                        return
                    }
                }
            }
            // The reader: the client's events, until it leaves or its socket closes.
            group.addTask {
                defer { continuation.finish() }
                await readLoop(inbound: inbound, claims: claims, record: record, services: services, enqueue: enqueue,
                               joined: joinedBox, hasJoined: hasJoined)
            }
            // The watchdog: ends the session when the client's queue overflowed.
            group.addTask {
                while !slowReader.withLockedValue({ $0 }) { try await Task.sleep(for: .milliseconds(200)) }
                throw SlowReader()
            }
            do {
                // The reader and the writer both end (a leave drains what is queued), or the watchdog throws.
                var ended = 0
                while ended < 2, try await group.next() != nil { ended += 1 }
            } catch is SlowReader {
                removedCode.withLockedValue { $0 = "slow_reader" }
                logger.warning("signaling client does not read its socket: disconnected",
                               metadata: ["room": "\(claims.room)", "user": "\(claims.sub)", "queued": "\(maxQueuedSignals)"])
            } catch {
                // The socket failed: the client is gone.
            }
            group.cancelAll()
        }
        let joined = joinedBox.withLockedValue { $0 }
        if let session = joined {
            let peerID = session.peerID
            _ = try? await session.live.run { $0.leave(peerID: peerID) }
            let reason = removedCode.withLockedValue { $0 } ?? "left"
            let now = MetadataStore.nowMillis
            let store = services.store
            let webhooks = services.webhooks
            Task {
                do {
                    try await store.recordLeave(sessionID: peerID, at: now, reason: reason)
                    try await store.appendEvent(RoomEvent(id: "ev_" + peerID + "_left", roomID: claims.room, at: now, kind: "participant_left",
                                                          userID: claims.sub, detail: reason))
                } catch {
                    logger.warning("could not record a leave", metadata: ["peer": "\(peerID)", "error": "\(error)"])
                }
                await webhooks?.send(event: "participant_left", data: ["room_id": claims.room, "user_id": claims.sub, "peer_id": peerID,
                                                                       "reason": reason, "left_at": ControlAPI.iso8601(now)])
            }
        }
    }

    /// Queued events per client at most (``handle``): a few seconds of a busy room's signaling.
    static let maxQueuedSignals = 512

    struct SlowReader: Error {}

    /// The client's events: `join_room` first, then everything else, until it leaves, its socket
    /// closes or a `removed` ends it.
    static func readLoop(inbound: WebSocketInboundStream, claims: JoinClaims, record: RoomRecord, services: RoomServices,
                         enqueue: @escaping @Sendable (RoomSignal) -> Void, joined: NIOLockedValueBox<Joined?>,
                         hasJoined: NIOLockedValueBox<Bool>) async {
        let logger = services.logger
        var messages = inbound.messages(maxSize: maxMessageSize).makeAsyncIterator()
        func reply(_ code: String, _ message: String) { enqueue(.error(code: code, message: message)) }
        var limits = EventRateLimits()
        readLoop: while true {
            let message: WebSocketMessage?
            do {
                message = try await messages.next()
            } catch {
                enqueue(.removed(code: "bad_message", message: "\(error)"))
                break
            }
            guard let message else { break }
            switch limits.admit(chat: message.isChat, nowNanos: MediaWorker.nowNanos) {
            case .admit: break
            case .refuse:
                reply("rate_limited", "too many events: at most \(Int(EventRateLimits.events.rate)) a second (chat \(Int(EventRateLimits.chat.rate)))")
                continue
            case .disconnect:
                enqueue(.removed(code: "rate_limited", message: "too many events after being told to slow down"))
                break readLoop
            }
            guard case .text(let text) = message else {
                reply("bad_message", "messages are JSON text frames")
                continue
            }
            let event: String, data: [String: Any]
            switch decodeFrame(text) {
            case .success(let frame): (event, data) = (frame.event, frame.data)
            case .failure(.notAnEventObject):
                reply("bad_message", "expected a JSON object {\"event\": ..., \"data\": {...}}")
                continue
            case .failure(.dataNotAnObject):
                reply("bad_message", "data must be a JSON object")
                continue
            }
            guard let session = joined.withLockedValue({ $0 }) else {
                guard event == "join_room" else {
                    reply("not_joined", "send join_room first")
                    continue
                }
                if let roomID = data["room_id"], (roomID as? String) != claims.room {
                    enqueue(.removed(code: "token_room_mismatch", message: "the join token is for another room"))
                    break
                }
                if let refusal = recheck(claims, services: services) {
                    enqueue(.removed(code: refusal.code, message: refusal.message))
                    break
                }
                do {
                    let session = try await join(claims: claims, record: record, services: services, enqueue: enqueue)
                    joined.withLockedValue { $0 = session }
                    hasJoined.withLockedValue { $0 = true }
                } catch RoomJoinError.full(let max) {
                    enqueue(.removed(code: "room_full", message: "the room is full (max_participants \(max))"))
                    break readLoop
                } catch RoomJoinError.closed {
                    enqueue(.removed(code: "room_closed", message: "the room is closed"))
                    break readLoop
                } catch {
                    logger.warning("join failed", metadata: ["room": "\(claims.room)", "error": "\(error)"])
                    enqueue(.removed(code: "internal_error", message: "could not join the room"))
                    break readLoop
                }
                continue
            }
            let peerID = session.peerID
            let live = session.live
            switch event {
            case "join_room":
                reply("already_joined", "this connection has joined the room already")
            case "webrtc_offer", "webrtc_answer":
                guard let sdp = data["sdp"] as? String else {
                    reply("bad_request", "\(event) needs data.sdp (a string)")
                    continue
                }
                let target = data["target"] as? String
                if event == "webrtc_offer" {
                    guard target == nil || target == "publisher" else {
                        reply("bad_request", "webrtc_offer goes to target \"publisher\" (the server offers the subscriber connection)")
                        continue
                    }
                    // Parsed here, on the signaling task: never on the media worker's loop.
                    let offer: SessionDescription
                    do {
                        offer = try SessionDescription(parsing: sdp)
                    } catch {
                        reply("bad_offer", "SDP does not parse: \(error)")
                        continue
                    }
                    _ = try? await live.run { $0.publisherOffer(peerID: peerID, offer: offer, nowNanos: MediaWorker.nowNanos) }
                } else {
                    guard target == nil || target == "subscriber" else {
                        reply("bad_request", "webrtc_answer goes to target \"subscriber\" (the server answers the publisher connection)")
                        continue
                    }
                    let answer: SessionDescription
                    do {
                        answer = try SessionDescription(parsing: sdp)
                    } catch {
                        reply("bad_answer", "SDP does not parse: \(error)")
                        continue
                    }
                    _ = try? await live.run { $0.subscriberAnswer(peerID: peerID, answer: answer, nowNanos: MediaWorker.nowNanos) }
                }
            case "ice_candidate":
                // ICE-lite: the client's address is learned from its checks.
                continue
            case "toggle_audio", "toggle_video":
                guard let enabled = bool(data["enabled"]) else {
                    reply("bad_request", "\(event) needs data.enabled (true or false)")
                    continue
                }
                let kind: MediaKind = event == "toggle_audio" ? .audio : .video
                _ = try? await live.run { $0.setEnabled(peerID: peerID, kind: kind, enabled: enabled, nowNanos: MediaWorker.nowNanos) }
            case "screen_share":
                guard let enabled = bool(data["enabled"]) else {
                    reply("bad_request", "screen_share needs data.enabled (true or false)")
                    continue
                }
                _ = try? await live.run { $0.screenShare(peerID: peerID, enabled: enabled) }
            case "send_message":
                guard let text = data["message"] as? String, !text.isEmpty, text.count <= maxChatLength else {
                    reply("bad_request", "send_message needs data.message (1 to \(maxChatLength) characters)")
                    continue
                }
                let now = MetadataStore.nowMillis
                _ = try? await live.run { $0.chat(peerID: peerID, message: text, timestampMillis: now) }
            case "start_recording", "stop_recording":
                guard claims.perms.contains(.record) else {
                    reply("permission_denied", "this token may not start or stop recordings (the record permission)")
                    continue
                }
                guard let recordings = services.recordings else {
                    reply("unavailable", "recording is not available")
                    continue
                }
                if event == "start_recording" {
                    do {
                        _ = try await recordings.start(roomID: claims.room, startedBy: claims.sub)
                    } catch RecordingService.StartError.alreadyRecording(let id) {
                        reply("recording_active", "the room is already being recorded (\(id))")
                    } catch {
                        reply("recording_failed", "could not start the recording: \(error)")
                    }
                } else {
                    guard let id = recordings.activeRecording(roomID: claims.room) else {
                        reply("not_recording", "the room is not being recorded")
                        continue
                    }
                    _ = try? await recordings.stop(id: id, stoppedBy: claims.sub)
                }
            case "capture_image":
                guard claims.perms.contains(.record) else {
                    reply("permission_denied", "this token may not take snapshots (the record permission)")
                    continue
                }
                // Strings only cross into the task (a wrong type becomes "", refused there).
                let (user, source, format) = (data["user_id"].map { $0 as? String ?? "" }, data["source"].map { $0 as? String ?? "" },
                                              data["format"].map { $0 as? String ?? "" })
                let roomID = claims.room, by = claims.sub, recordings = services.recordings
                Task {
                    enqueue(await captureImage(userID: user, source: source, format: format, roomID: roomID, takenBy: by,
                                               recordings: recordings))
                }
            case "set_layer":
                guard let track = data["track_id"] as? String, !track.isEmpty, track.count <= 64 else {
                    reply("bad_request", "set_layer needs data.track_id")
                    continue
                }
                var caps: [Int?] = []
                var bad = false
                for key in ["max_spatial", "max_temporal"] {
                    switch data[key] {
                    case nil, is NSNull: caps.append(nil)
                    case let n as NSNumber where !JSONBody.isBoolean(n) && n.doubleValue == n.doubleValue.rounded()
                        && n.intValue >= 0 && n.intValue <= 3:
                        caps.append(n.intValue)
                    default: bad = true
                    }
                }
                guard !bad else {
                    reply("bad_request", "set_layer: max_spatial and max_temporal are integers 0 to 3 (0 = lowest) or null")
                    continue
                }
                let (maxSpatial, maxTemporal) = (caps[0], caps[1])
                let found = try? await live.run {
                    $0.setLayer(peerID: peerID, trackID: track, maxSpatial: maxSpatial, maxTemporal: maxTemporal, nowNanos: MediaWorker.nowNanos)
                }
                if found != true { reply("track_not_found", "no subscription to track \(track.prefix(64))") }
            case "leave_room":
                break readLoop
            default:
                reply("unknown_event", "unknown event '\(event.prefix(64))'")
            }
        }
    }

    /// `capture_image {user_id, source?, format?}`: a snapshot (docs/RECORDING.md), answered with
    /// `image_captured {snapshot_id, user_id}` or an error.
    static func captureImage(userID: String?, source: String?, format: String?, roomID: String, takenBy: String,
                             recordings: RecordingService?) async -> RoomSignal {
        guard let userID, !userID.isEmpty, userID.count <= 128 else {
            return .error(code: "bad_request", message: "capture_image needs data.user_id")
        }
        guard let source = TrackSource(rawValue: source ?? "camera"), source != .microphone else {
            return .error(code: "bad_request", message: "capture_image: source is camera or screen")
        }
        guard let format = SnapshotFormat(rawValue: format ?? "jpeg") else {
            return .error(code: "bad_request", message: "capture_image: format is jpeg or png")
        }
        guard let recordings else { return .error(code: "unavailable", message: "snapshots are not available") }
        do {
            let snapshot = try await recordings.takeSnapshot(roomID: roomID, userID: userID, source: source, format: format, takenBy: takenBy)
            return .imageCaptured(snapshotID: snapshot.id, userID: userID)
        } catch RecordingService.SnapshotError.participantNotFound {
            return .error(code: "participant_not_found", message: "\(userID.prefix(64)) is not in the room")
        } catch RecordingService.SnapshotError.noVideo {
            return .error(code: "no_video", message: "\(userID.prefix(64)) publishes no \(source.rawValue) video")
        } catch RecordingService.SnapshotError.keyframeTimeout {
            return .error(code: "keyframe_timeout", message: "no keyframe came within 3 s")
        } catch {
            return .error(code: "snapshot_failed", message: "\(error)")
        }
    }

    static func join(claims: JoinClaims, record: RoomRecord, services: RoomServices,
                     enqueue: @escaping @Sendable (RoomSignal) -> Void) async throws -> Joined {
        let live = try await services.live.room(for: record)
        let peer = PeerInfo(peerID: "pe_" + randomID(), userID: claims.sub, name: claims.name, role: claims.role.rawValue,
                            canPublish: claims.perms.contains(.publish), canSubscribe: claims.perms.contains(.subscribe))
        try await live.run { room in
            try room.join(peer, nowNanos: MediaWorker.nowNanos, sink: enqueue)
        }
        if record.autoRecord, let recordings = services.recordings, recordings.activeRecording(roomID: claims.room) == nil {
            _ = try? await recordings.start(roomID: claims.room, startedBy: nil)
        }
        let now = MetadataStore.nowMillis
        let store = services.store
        let webhooks = services.webhooks
        let logger = services.logger
        // The audit trail and webhook never hold up the join (a database outage must not stop media).
        Task {
            do {
                try await store.recordJoin(ParticipantSessionRecord(id: peer.peerID, roomID: claims.room, userID: claims.sub, name: claims.name,
                                                                    role: claims.role.rawValue, joinedAt: now))
                try await store.appendEvent(RoomEvent(id: "ev_" + peer.peerID + "_joined", roomID: claims.room, at: now, kind: "participant_joined",
                                                      userID: claims.sub, detail: claims.role.rawValue))
            } catch {
                logger.warning("could not record a join", metadata: ["peer": "\(peer.peerID)", "error": "\(error)"])
            }
            await webhooks?.send(event: "participant_joined", data: ["room_id": claims.room, "user_id": claims.sub, "peer_id": peer.peerID,
                                                                     "name": claims.name, "role": claims.role.rawValue,
                                                                     "joined_at": ControlAPI.iso8601(now)])
        }
        return Joined(live: live, peerID: peer.peerID, record: record)
    }

    /// The WebSocket close code for why the server ends a connection (docs/SIGNALING.md): a refused
    /// connection gets 4000 plus the HTTP status the same refusal would have; a joined one ends with 1000.
    static func closeCode(for code: String, joined: Bool) -> WebSocketErrorCode {
        if joined { return code == "bad_message" ? .unknown(4400) : .normalClosure }
        return switch code {
        case "invalid_token", "token_expired": .unknown(4401)
        case "token_room_mismatch", "token_revoked": .unknown(4403)
        case "room_not_found": .unknown(4404)
        case "room_closed", "room_full": .unknown(4409)
        case "bad_message": .unknown(4400)
        default: .normalClosure
        }
    }

    /// A client's text frame, `{"event": ..., "data": {...}}`, before anything looks at the event.
    package struct ClientFrame {
        package var event: String
        package var data: [String: Any]
    }

    package enum FrameError: Error, Equatable {
        case notAnEventObject, dataNotAnObject
    }

    /// Decodes a WebSocket text frame into the event name and its data (empty when absent).
    /// The fuzz harness (Sources/FuzzHarnesses) calls this, the function the read loop uses.
    package static func decodeFrame(_ text: String) -> Result<ClientFrame, FrameError> {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let event = object["event"] as? String else {
            return .failure(.notAnEventObject)
        }
        if object["data"] != nil, !(object["data"] is [String: Any]) { return .failure(.dataNotAnObject) }
        return .success(ClientFrame(event: event, data: object["data"] as? [String: Any] ?? [:]))
    }

    package static func bool(_ value: Any?) -> Bool? {
        guard let n = value as? NSNumber, JSONBody.isBoolean(n) else { return nil }
        return n.boolValue
    }

    static func randomID() -> String {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        return String((0..<12).map { _ in alphabet[Int.random(in: 0..<alphabet.count)] })
    }

    static func trackJSON(_ t: TrackInfo) -> [String: Any] {
        ["track_id": t.trackID, "kind": t.kind.rawValue, "source": t.source.rawValue, "muted": t.muted, "simulcast": t.simulcast]
    }

    static func peerJSON(_ p: PeerInfo) -> [String: Any] {
        ["peer_id": p.peerID, "user_id": p.userID, "name": p.name, "role": p.role]
    }

    /// A room signal as a PROTOCOL.md event.
    static func encode(_ signal: RoomSignal, iceServers: [String]) -> (String, [String: Any]) {
        switch signal {
        case .joined(let roomID, let peer, let participants):
            return ("joined_room", [
                "room_id": roomID, "peer_id": peer.peerID, "user_id": peer.userID, "role": peer.role, "name": peer.name,
                "participants": participants.map { s -> [String: Any] in
                    var p = peerJSON(s.peer)
                    p["tracks"] = s.tracks.map(trackJSON)
                    return p
                },
                "ice_servers": iceServers.isEmpty ? [] : [["urls": iceServers]],
            ])
        case .publisherAnswer(let sdp): return ("webrtc_answer", ["target": "publisher", "sdp": sdp])
        case .subscriberOffer(let sdp): return ("webrtc_offer", ["target": "subscriber", "sdp": sdp])
        case .userJoined(let peer): return ("user_joined", peerJSON(peer))
        case .userLeft(let peerID, let userID): return ("user_left", ["peer_id": peerID, "user_id": userID])
        case .trackPublished(let peerID, let track):
            var data = trackJSON(track)
            data["peer_id"] = peerID
            return ("track_published", data)
        case .trackUnpublished(let peerID, let trackID): return ("track_unpublished", ["peer_id": peerID, "track_id": trackID])
        case .trackPaused(let peerID, let trackID): return ("track_paused", ["peer_id": peerID, "track_id": trackID, "reason": "bandwidth"])
        case .trackResumed(let peerID, let trackID): return ("track_resumed", ["peer_id": peerID, "track_id": trackID])
        case .toggled(let event, let peerID, let userID, let enabled): return (event, ["peer_id": peerID, "user_id": userID, "enabled": enabled])
        case .chat(let peerID, let userID, let message, let timestamp):
            return ("chat_message", ["peer_id": peerID, "user_id": userID, "message": message, "timestamp": ControlAPI.iso8601(timestamp)])
        case .recordingStarted(let id): return ("recording_started", ["recording_id": id])
        case .recordingStopped(let id): return ("recording_stopped", ["recording_id": id])
        case .imageCaptured(let snapshotID, let userID): return ("image_captured", ["snapshot_id": snapshotID, "user_id": userID])
        case .error(let code, let message), .removed(let code, let message):
            return ("error", ["code": code, "message": message])
        }
    }

    static func write(_ outbound: WebSocketOutboundWriter, event: String, data: [String: Any]) async throws {
        let body = try JSONSerialization.data(withJSONObject: ["event": event, "data": data])
        try await outbound.write(.text(String(decoding: body, as: UTF8.self)))
    }
}

/// How many events one signaling client may send: a steady rate with a burst, chat slower. An
/// event over the limit is refused (`rate_limited`); a client that keeps going after
/// ``disconnectAfterRefusals`` refusals in a row is disconnected.
struct EventRateLimits {
    static let events = (rate: 50.0, burst: 100.0)
    static let chat = (rate: 5.0, burst: 20.0)
    static let disconnectAfterRefusals = 200

    enum Decision { case admit, refuse, disconnect }

    private var all = TokenBucket(burst: events.burst)
    private var messages = TokenBucket(burst: chat.burst)
    private var refusals = 0

    mutating func admit(chat: Bool, nowNanos: Int64) -> Decision {
        let ok = all.take(1, rate: Self.events.rate, burst: Self.events.burst, nowNanos: nowNanos)
            && (!chat || messages.take(1, rate: Self.chat.rate, burst: Self.chat.burst, nowNanos: nowNanos))
        if ok {
            refusals = 0
            return .admit
        }
        refusals += 1
        return refusals > Self.disconnectAfterRefusals ? .disconnect : .refuse
    }
}

extension WebSocketMessage {
    /// A chat message (decided from the raw text before it is parsed: the limit applies first).
    var isChat: Bool {
        guard case .text(let text) = self else { return false }
        return text.contains("\"send_message\"")
    }
}
