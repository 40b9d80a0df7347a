import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOWebSocket
import Recorder
import SFU

/// What the signaling handler needs from the server.
package struct RoomServices: Sendable {
    package let store: MetadataStore
    package let live: LiveRooms
    package let signer: JoinTokenSigner
    package let iceServers: ICEServerDirectory
    package let webhooks: WebhookDispatcher?
    package let logger: Logger
    package let recordings: RecordingService?
    /// Participants whose signaling dropped, kept for `SFU_RESUME_WINDOW_S`.
    package var resumption = SessionResumption(windowSeconds: 0)
}

/// `/v1/signal?token=`: a participant's signaling connection (PROTOCOL.md "Signaling",
/// docs/SIGNALING.md). The token is checked before the upgrade; after it, a ``SignalingSession``
/// handles the client's events (``ClientEvent``) and one writer sends the room's signals
/// (``ServerEvent``), so the client sees them in order.
package enum RoomSignaling {
    static let maxMessageSize = 256 * 1024

    /// Checks the token of an upgrade request: the claims, or an APIError with the HTTP status.
    static func authorize(_ request: Request, services: RoomServices) async throws -> (JoinClaims, RoomRecord) {
        guard let token = request.uri.queryParameters.get("token"), !token.isEmpty else {
            throw APIError(.unauthorized, "invalid_token", "a join token is required: /v1/signal?token=<join token>")
        }
        let claims: JoinClaims
        do {
            claims = try await services.signer.verify(token, nowSeconds: Int64(Date().timeIntervalSince1970))
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
        /// Where the room's signals for this participant go (the socket it is on now).
        let relay: SignalRelay
    }

    /// The thin loop around a ``SignalingSession``: frames in, signals out. One writer drains the
    /// client's queue to the socket; one reader feeds the session; a watchdog ends a client that
    /// does not read.
    static func handle(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, request: Request, services: RoomServices) async throws {
        let logger = services.logger
        let (claims, record): (JoinClaims, RoomRecord)
        do {
            (claims, record) = try await authorize(request, services: services)
        } catch let error as APIError {
            try? await write(outbound, .error(.init(code: error.code, message: error.message)))
            try? await outbound.close(closeCode(for: error.code, joined: false), reason: error.code)
            return
        }
        // The client's queue of events: bounded. A client that does not read its socket (while the
        // room or its own flood fills the queue) is disconnected instead of growing our memory.
        let (signals, continuation) = AsyncStream.makeStream(of: SessionSignal.self, bufferingPolicy: .bufferingOldest(maxQueuedSignals))
        let slowReader = NIOLockedValueBox(false)
        // Signals that came after the queue closed (the socket is gone): a parked participant gets them later.
        let refused = NIOLockedValueBox<[SessionSignal]>([])
        let enqueue: @Sendable (SessionSignal) -> Void = { signal in
            switch continuation.yield(signal) {
            case .dropped: slowReader.withLockedValue { $0 = true }
            case .terminated: refused.withLockedValue { $0.append(signal) }
            default: break
            }
        }
        let removedCode = NIOLockedValueBox<String?>(nil)
        let session = SignalingSession(claims: claims, record: record, services: services, enqueue: enqueue)
        // Errors of the socket (the client vanished) end the session like a leave.
        await withThrowingTaskGroup(of: Void.self) { group in
            // The writer: the room's signals and our own replies, in order. A `removed` closes the socket.
            group.addTask {
                for await signal in signals {
                    try await write(outbound, ServerEvent(signal, iceServers: services.iceServers, nowSeconds: Int64(Date().timeIntervalSince1970)))
                    if let code = signal.removalCode {
                        removedCode.withLockedValue { $0 = code }
                        try? await outbound.close(closeCode(for: code, joined: await session.peerID != nil), reason: code)
                        return
                    }
                }
            }
            // The reader: the client's frames, until it leaves, is removed or its socket closes.
            group.addTask {
                defer { continuation.finish() }
                var messages = inbound.messages(maxSize: maxMessageSize).makeAsyncIterator()
                while true {
                    let message: WebSocketMessage?
                    do {
                        message = try await messages.next()
                    } catch is CancellationError {
                        return      // the writer failed first: the connection is gone
                    } catch let error where error is ChannelError || error is IOError {
                        return      // the connection went away, not a bad frame
                    } catch {
                        await session.socketFailed(error)
                        return
                    }
                    guard let message else { return }
                    let frame: SignalingSession.Frame = if case .text(let text) = message { .text(text) } else { .other }
                    guard await session.receive(frame) else { return }
                }
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
        // Removed (by the room, the API or a limit): that code; else it left, or its socket went away
        // (then the participant is kept for the resume window, if there is one).
        let removal = removedCode.withLockedValue { $0 }
        let leaveRequested = await session.leaveRequested
        if removal == nil, !leaveRequested {
            // What the writer did not get to write (the queue is finished: this ends).
            var unwritten: [SessionSignal] = []
            for await signal in signals { unwritten.append(signal) }
            let queued = unwritten
            if await session.park(unsent: { queued + refused.withLockedValue { $0 } }) { return }
        }
        await session.finish(reason: removal ?? (leaveRequested ? SignalingSession.leftCode : RemovalReason.connectionLost.code))
    }

    /// Queued events per client at most (``handle``): a few seconds of a busy room's signaling.
    static let maxQueuedSignals = 512

    struct SlowReader: Error {}

    /// `capture_image {user_id, source?, format?}`: a snapshot (docs/RECORDING.md), answered with
    /// `image_captured {snapshot_id, user_id}` or an error.
    static func captureImage(userID: String?, source: String?, format: String?, roomID: String, takenBy: String,
                             recordings: RecordingService?) async -> SessionSignal {
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
            return .room(.imageCaptured(snapshotID: snapshot.id, userID: userID))
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
                     enqueue: @escaping @Sendable (SessionSignal) -> Void) async throws -> Joined {
        let live = try await services.live.room(for: record)
        let peer = PeerInfo(peerID: ResourceID.peer.make(), userID: claims.sub, name: claims.name, role: claims.role.rawValue,
                            canPublish: claims.perms.contains(.publish), canSubscribe: claims.perms.contains(.subscribe))
        let relay = SignalRelay(enqueue: enqueue)
        try await live.run { room in
            try room.join(peer, nowNanos: MediaWorker.nowNanos) { relay.send(.room($0)) }
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
                try await EventLog.append(RoomEvent(roomID: claims.room, at: now, kind: "participant_joined", userID: claims.sub,
                                                    detail: claims.role.rawValue, actor: "user:" + claims.sub, subject: "user:" + claims.sub,
                                                    data: ["peer_id": peer.peerID, "role": claims.role.rawValue, "name": claims.name]),
                                          webhook: .participantJoined(roomID: claims.room, userID: claims.sub, peerID: peer.peerID, name: claims.name,
                                                                      role: claims.role.rawValue, joinedAtMillis: now),
                                          store: store, webhooks: webhooks)
            } catch {
                logger.warning("could not record a join", metadata: ["peer": "\(peer.peerID)", "error": "\(error)"])
            }
        }
        return Joined(live: live, peerID: peer.peerID, record: record, relay: relay)
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

    static func write(_ outbound: WebSocketOutboundWriter, _ event: ServerEvent) async throws {
        try await outbound.write(.text(try event.encoded()))
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
