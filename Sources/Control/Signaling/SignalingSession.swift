import Foundation
import Synchronization
import Logging
import Recorder
import SFU

/// One participant's signaling, without the socket: a state machine (awaiting join -> joined ->
/// left) that the WebSocket handler (``RoomSignaling``) feeds frame by frame and whose answers and
/// room signals go out through `enqueue`, in order. Tests drive it in-process.
package actor SignalingSession {
    package enum State: Sendable, Equatable {
        case awaitingJoin
        case joined(peerID: String)
        /// Left, removed or refused: nothing more is read.
        case left
    }

    /// A frame from the socket.
    package enum Frame: Sendable {
        case text(String)
        /// Binary, ping or anything that is not a text frame.
        case other
    }

    package private(set) var state: State = .awaitingJoin
    /// The client said `leave_room` (a session that ends otherwise, without a removal, lost its connection).
    package private(set) var leaveRequested = false
    /// The leave code of a session that ended with `leave_room` (stored, and the webhook's `reason`);
    /// the other codes are the removals' (``RemovalReason/code``, the limits' codes).
    package static let leftCode = "left"
    private var joined: RoomSignaling.Joined?
    private var limits = EventRateLimits()
    private var finished = false
    private var leaveDone = false
    /// Set (by ``SessionResumption/takeOver(_:newOwner:)``, synchronously) when another connection
    /// resumed this participant: this session must not leave the room.
    nonisolated let handedOver = Mutex(false)
    let claims: JoinClaims
    let record: RoomRecord
    let services: RoomServices
    let enqueue: @Sendable (SessionSignal) -> Void

    package init(claims: JoinClaims, record: RoomRecord, services: RoomServices, enqueue: @escaping @Sendable (SessionSignal) -> Void) {
        self.claims = claims
        self.record = record
        self.services = services
        self.enqueue = enqueue
    }

    /// The peer id once joined.
    package var peerID: String? { joined?.peerID }

    /// Handles one frame.
    /// - Returns: false once the session is over (it left or was removed): the handler stops reading.
    @discardableResult
    package func receive(_ frame: Frame, nowNanos: Int64 = MediaWorker.nowNanos) async -> Bool {
        guard state != .left else { return false }
        let isChat: Bool
        if case .text(let text) = frame { isChat = text.contains("\"send_message\"") } else { isChat = false }
        switch limits.admit(chat: isChat, nowNanos: nowNanos) {
        case .admit: break
        case .refuse:
            reply("rate_limited", "too many events: at most \(Int(EventRateLimits.events.rate)) a second (chat \(Int(EventRateLimits.chat.rate)))")
            return true
        case .disconnect:
            return end(.removed(code: "rate_limited", message: "too many events after being told to slow down"))
        }
        guard case .text(let text) = frame else {
            reply("bad_message", "messages are JSON text frames")
            return true
        }
        let event: ClientEvent
        let decoded = ClientEvent.frame(text)
        switch decoded.flatMap(ClientEvent.decode) {
        case .success(let e): event = e
        case .failure(let error):
            // Before the join only join_room is expected, whatever else came and however well-formed.
            if state == .awaitingJoin, case .success(let f) = decoded, f.event != ClientEvent.Name.joinRoom.rawValue {
                reply("not_joined", "send join_room first")
            } else {
                reply(error.code, error.message)
            }
            return true
        }
        guard let session = joined else { return await join(event) }
        return await handle(event, session: session)
    }

    /// The socket could not deliver a frame (too large, not UTF-8, broken): the session ends.
    package func socketFailed(_ error: any Error) {
        guard state != .left else { return }
        _ = end(.removed(code: "bad_message", message: "\(error)"))
    }

    /// Ends the session: a joined participant leaves the room, its session and `participant_left`
    /// audit event are written, and the webhook sent (in the background: a database outage must
    /// not hold up the close). Idempotent.
    package func finish(reason: String) async {
        guard !finished else { return }
        finished = true
        state = .left
        guard joined != nil else { return }
        // Resumed on another connection: the participant lives on there.
        guard services.resumption.release(claims, owner: self) != .handedOver else { return }
        await leave(reason: reason)
    }

    /// The participant leaves the room; its session end, `participant_left` and webhook are written. Once.
    private func leave(reason: String) async {
        guard let session = joined, !leaveDone else { return }
        leaveDone = true
        let peerID = session.peerID
        _ = try? await session.live.run { $0.leave(peerID: peerID) }
        let now = MetadataStore.nowMillis
        let (store, webhooks, logger, claims) = (services.store, services.webhooks, services.logger, claims)
        Task {
            do {
                try await store.recordLeave(sessionID: peerID, at: now, reason: reason)
                // Who ended it: the participant (left), the API (removed), or the server (a lost
                // connection, a limit, the room's close, a newer connection of the same user).
                let actor = reason == SignalingSession.leftCode ? "user:" + claims.sub
                    : reason == RemovalReason.removedByApplication.code ? "api" : "server"
                try await EventLog.append(RoomEvent(roomID: claims.room, at: now, kind: "participant_left", userID: claims.sub, detail: reason,
                                                    actor: actor, subject: "user:" + claims.sub, data: ["peer_id": peerID, "reason": reason]),
                                          webhook: .participantLeft(roomID: claims.room, userID: claims.sub, peerID: peerID, reason: reason, leftAtMillis: now),
                                          store: store, webhooks: webhooks)
            } catch {
                logger.warning("could not record a leave", metadata: ["peer": "\(peerID)", "error": "\(error)"])
            }
        }
    }

    /// The socket dropped without `leave_room` or a removal: keeps the participant for the resume
    /// window. - Returns: false when it is not kept (not joined, no window): finish now.
    /// `unsent`: what the dead socket's queue still held or refused (kept for the next socket).
    package func park(unsent: () -> [SessionSignal] = { [] }) -> Bool {
        guard joined != nil, !finished else { return false }
        return services.resumption.park(claims, owner: self, unsent: unsent)
    }

    /// The resume window of a parked participant ended, or it was removed while parked, or a
    /// resume found it gone: it leaves (whatever a hand-over said), with the removal's code if any.
    func finishParked() async {
        finished = true
        state = .left
        await leave(reason: joined?.relay.parkedRemoval ?? RemovalReason.connectionLost.code)
    }

    /// Another connection resumed this participant: this one is closed (`replaced`) and leaves nothing.
    func handOver() {
        guard state != .left else { return }
        enqueue(.removed(code: RemovalReason.replaced.code, message: "the session was resumed on another connection"))
        state = .left
    }

    // MARK: awaiting join

    private func join(_ event: ClientEvent) async -> Bool {
        guard case .joinRoom(let roomID, let resume) = event else {
            reply("not_joined", "send join_room first")
            return true
        }
        if let roomID, roomID.string != claims.room {
            return end(.removed(code: "token_room_mismatch", message: "the join token is for another room"))
        }
        if let refusal = RoomSignaling.recheck(claims, services: services) {
            return end(.removed(code: refusal.code, message: refusal.message))
        }
        if resume, await self.resume() { return true }
        do {
            let session = try await RoomSignaling.join(claims: claims, record: record, services: services, enqueue: enqueue)
            joined = session
            state = .joined(peerID: session.peerID)
            services.resumption.register(claims, owner: self, joined: session)
            return true
        } catch RoomJoinError.full(let max) {
            return end(.removed(code: "room_full", message: "the room is full (max_participants \(max))"))
        } catch RoomJoinError.closed {
            return end(.removed(code: "room_closed", message: "the room is closed"))
        } catch {
            services.logger.warning("join failed", metadata: ["room": "\(claims.room)", "error": "\(error)"])
            return end(.removed(code: "internal_error", message: "could not join the room"))
        }
    }

    /// `join_room {resume: true}`: the participant this token left within the resume window, back
    /// on this connection (`joined_room {resumed: true}` with the room as it is now, then the signals
    /// kept meanwhile). - Returns: false when there is nothing to resume (a fresh join follows).
    private func resume() async -> Bool {
        guard let taken = services.resumption.takeOver(claims, newOwner: self) else { return false }
        if taken.wasAttached { await taken.previous.handOver() }
        let session = taken.joined
        let peerID = session.peerID
        let snapshot = try? await session.live.run { $0.joinedSignal(peerID: peerID) }
        guard let signal = snapshot, session.relay.attach(enqueue, first: .resumed(signal)) else {
            // Removed meanwhile: that participant is over (its leave is written); this connection joins afresh.
            _ = services.resumption.release(claims, owner: self)
            await taken.previous.finishParked()
            return false
        }
        joined = session
        state = .joined(peerID: peerID)
        services.logger.info("participant resumed", metadata: ["room": "\(claims.room)", "peer": "\(peerID)"])
        return true
    }

    // MARK: joined

    private func handle(_ event: ClientEvent, session: RoomSignaling.Joined) async -> Bool {
        let peerID = session.peerID
        let live = session.live
        switch event {
        case .joinRoom:
            reply("already_joined", "this connection has joined the room already")
        case .publisherOffer(let sdp):
            // Parsed here, on the signaling task: never on the media worker's loop.
            guard let offer = parse(sdp, code: "bad_offer") else { return true }
            _ = try? await live.run { $0.publisherOffer(peerID: peerID, offer: offer, nowNanos: MediaWorker.nowNanos) }
        case .subscriberAnswer(let sdp):
            guard let answer = parse(sdp, code: "bad_answer") else { return true }
            _ = try? await live.run { $0.subscriberAnswer(peerID: peerID, answer: answer, nowNanos: MediaWorker.nowNanos) }
        case .iceCandidate:
            // ICE-lite: the client's address is learned from its checks.
            break
        case .toggle(let kind, let enabled):
            _ = try? await live.run { $0.setEnabled(peerID: peerID, kind: kind, enabled: enabled, nowNanos: MediaWorker.nowNanos) }
            audit(kind == .audio ? "audio_toggled" : "video_toggled", data: ["peer_id": peerID, "enabled": String(enabled)])
        case .screenShare(let enabled):
            _ = try? await live.run { $0.screenShare(peerID: peerID, enabled: enabled) }
            audit(enabled ? "screen_share_started" : "screen_share_stopped", data: ["peer_id": peerID])
        case .sendMessage(let text):
            let now = MetadataStore.nowMillis
            let sent: ChatLine?? = try? await live.run { $0.chat(peerID: peerID, message: text, timestampMillis: now) }
            guard let line = sent ?? nil else { return true }
            // Stored, audited and announced off the signaling path (a database outage must not hold up the chat).
            let record = ChatMessageRecord(id: ResourceID.message.make(), roomID: claims.room, peerID: line.peerID, userID: line.userID,
                                           message: line.message, at: line.timestampMillis)
            let (store, webhooks, logger) = (services.store, services.webhooks, services.logger)
            Task {
                do {
                    try await store.addChatMessage(record)
                    try await EventLog.append(RoomEvent(roomID: record.roomID, at: record.at, kind: "chat_message_sent", userID: record.userID,
                                                        actor: "user:" + record.userID, subject: "message:" + record.id,
                                                        data: ["peer_id": record.peerID]),
                                              webhook: .chatMessage(roomID: record.roomID, message: record), store: store, webhooks: webhooks)
                } catch {
                    logger.warning("could not store a chat message", metadata: ["room": "\(record.roomID)", "error": "\(error)"])
                }
            }
        case .startRecording, .stopRecording:
            await recording(start: event == .startRecording)
        case .captureImage(let user, let source, let format):
            guard claims.perms.contains(.record) else {
                reply("permission_denied", "this token may not take snapshots (the record permission)")
                return true
            }
            let (roomID, by, recordings, enqueue) = (claims.room, claims.sub, services.recordings, enqueue)
            Task {
                enqueue(await RoomSignaling.captureImage(userID: user, source: source, format: format, roomID: roomID, takenBy: by,
                                                         recordings: recordings))
            }
        case .setLayer(let track, let maxSpatial, let maxTemporal):
            let found = try? await live.run {
                $0.setLayer(peerID: peerID, trackID: track, maxSpatial: maxSpatial, maxTemporal: maxTemporal, nowNanos: MediaWorker.nowNanos)
            }
            if found != true { reply("track_not_found", "no subscription to track \(track.prefix(64))") }
        case .restartICE:
            let restarted = try? await live.run { $0.restartSubscriberICE(peerID: peerID) }
            if restarted != true { reply("not_connected", "the subscriber connection has no transport to restart yet") }
        case .recordingConsent(let granted):
            let now = MetadataStore.nowMillis
            let changed: RecordingConsent?? = try? await live.run {
                $0.setRecordingConsent(peerID: peerID, granted: granted, atMillis: now, nowNanos: MediaWorker.nowNanos)
            }
            // A repeated answer changes nothing and is not audited again.
            guard changed ?? nil != nil else { return true }
            audit(granted ? "recording_consent_granted" : "recording_consent_withdrawn", data: ["peer_id": peerID])
        case .leaveRoom:
            leaveRequested = true
            state = .left
            return false
        }
        return true
    }

    /// Writes an audit event of this participant's own doing, in the background.
    private func audit(_ kind: String, data: [String: String]) {
        let event = RoomEvent(roomID: claims.room, at: MetadataStore.nowMillis, kind: kind, userID: claims.sub, actor: "user:" + claims.sub,
                              subject: "user:" + claims.sub, data: data)
        let (store, logger) = (services.store, services.logger)
        Task {
            do { try await store.appendEvent(event) } catch {
                logger.warning("could not write an audit event", metadata: ["kind": "\(kind)", "error": "\(error)"])
            }
        }
    }

    private func recording(start: Bool) async {
        guard claims.perms.contains(.record) else {
            reply("permission_denied", "this token may not start or stop recordings (the record permission)")
            return
        }
        guard let recordings = services.recordings else {
            reply("unavailable", "recording is not available")
            return
        }
        if start {
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
                return
            }
            _ = try? await recordings.stop(id: id, stoppedBy: claims.sub)
        }
    }

    private func parse(_ sdp: String, code: String) -> SessionDescription? {
        do {
            return try SessionDescription(parsing: sdp)
        } catch {
            reply(code, "SDP does not parse: \(error)")
            return nil
        }
    }

    private func reply(_ code: String, _ message: String) { enqueue(.error(code: code, message: message)) }

    /// Sends `signal` (a `removed`) and ends the session.
    private func end(_ signal: SessionSignal) -> Bool {
        enqueue(signal)
        state = .left
        return false
    }
}
