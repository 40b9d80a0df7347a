import DTLS
import Logging
import RTP

/// Keyframe requests and retransmissions of a room.
package struct RoomCounters: Sendable, Equatable {
    /// PLIs sent to publishers, and requests absorbed by the one-per-second pacing.
    package var keyframeRequestsSent = 0
    package var keyframeRequestsThrottled = 0
    /// Packets resent to subscribers after a NACK, and NACKed packets no longer in the buffer.
    package var retransmissions = 0
    package var retransmissionMisses = 0
    /// NACKed packets not resent: resent less than an RTT before, or over the subscriber's budget.
    package var retransmissionsThrottled = 0
    /// Simulcast layer switches made by consumers.
    package var layerSwitches = 0
    /// Video consumers paused by the allocator now (live rooms only).
    package var tracksPaused = 0
    /// Padding bytes sent to probe subscribers' downlinks.
    package var probePaddingBytes = 0
    /// Video packets the subscribers' pacers held back before sending (``MediaPacer``).
    package var pacedPackets = 0
    package init() {}

    mutating func add(_ producer: Producer) {
        keyframeRequestsSent += producer.keyframeRequestsSent
        keyframeRequestsThrottled += producer.keyframeRequestsThrottled
        for c in producer.consumers { add(c) }
    }

    mutating func add(_ consumer: Consumer) {
        retransmissions += consumer.retransmitted
        retransmissionMisses += consumer.retransmissionMisses
        retransmissionsThrottled += consumer.retransmissionsThrottled
        layerSwitches += consumer.layerSwitches
    }

    package mutating func add(_ other: RoomCounters) {
        keyframeRequestsSent += other.keyframeRequestsSent
        keyframeRequestsThrottled += other.keyframeRequestsThrottled
        retransmissions += other.retransmissions
        retransmissionMisses += other.retransmissionMisses
        retransmissionsThrottled += other.retransmissionsThrottled
        layerSwitches += other.layerSwitches
        tracksPaused += other.tracksPaused
        probePaddingBytes += other.probePaddingBytes
        pacedPackets += other.pacedPackets
    }
}

/// A room's forwarding table (mediasoup's Router): its participants, their producers, and the
/// consumers that connect every producer to every other participant's subscriber connection.
/// The room and all its transports live on one worker event loop (DESIGN.md principle 3); the
/// control plane calls it there. Signaling output goes to each participant's sink.
package final class Room {
    package let id: String
    package let maxParticipants: Int
    let host: SessionHost
    let dtlsContext: DTLSContext
    let candidates: [HostCandidate]
    let logger: Logger
    private(set) var participants: [Participant] = []
    package private(set) var isClosed = false
    /// Counters of producers and consumers already gone.
    private var finished = RoomCounters()
    private var observers: [RoomObserver] = []
    /// The recording in progress: joiners are told (`recording_started`).
    package var activeRecordingID: String?
    /// The last chat messages (oldest first), handed to each participant that joins or resumes.
    /// Kept with the live room: a join never waits for the store (which keeps every message).
    package private(set) var recentChat: [ChatLine] = []
    package static let chatHistoryLimit = 50
    /// `recording_consent: "required"`: a participant's media enters a recording only while it has
    /// granted consent (``setRecordingConsent(peerID:granted:atMillis:nowNanos:)``); otherwise
    /// ("notice") everyone's does.
    package var recordingConsentRequired = false
    /// The answers given so far, by user id.
    package private(set) var recordingConsents: [String: RecordingConsent] = [:]

    package func addObserver(_ observer: RoomObserver) { observers.append(observer) }
    package func removeObserver(_ observer: RoomObserver) { observers.removeAll { $0 === observer } }

    /// Every published track with its publisher.
    package func publishedTracks() -> [(peer: PeerInfo, producer: Producer)] {
        participants.flatMap { p in p.producers.map { (p.peer, $0) } }
    }

    package init(id: String, maxParticipants: Int, host: SessionHost, dtlsContext: DTLSContext, candidates: [HostCandidate], logger: Logger) {
        self.id = id
        self.maxParticipants = maxParticipants
        self.host = host
        self.dtlsContext = dtlsContext
        self.candidates = candidates
        self.logger = logger
    }

    package var participantCount: Int { participants.count }

    func participant(_ peerID: String) -> Participant? { participants.first { $0.peer.peerID == peerID } }

    func localParameters() -> LocalTransportParameters {
        LocalTransportParameters(ice: .random(), fingerprint: dtlsContext.certificate.sha256Fingerprint, candidates: candidates)
    }

    // MARK: Joining and leaving

    /// Adds a participant. The sink gets `joined` first, then everything that concerns it.
    /// A participant with the same user id is replaced (it gets `removed`, `.replaced`).
    package func join(_ peer: PeerInfo, nowNanos: Int64, sink: @escaping (RoomSignal) -> Void) throws(RoomJoinError) {
        guard !isClosed else { throw .closed }
        if let old = participants.first(where: { $0.peer.userID == peer.userID }) {
            remove(old, reason: .replaced, message: "the same user joined the room from another connection")
        }
        guard participants.count < maxParticipants else { throw .full(max: maxParticipants) }
        let p = Participant(peer: peer, joinedNanos: nowNanos, sink: sink)
        if peer.canSubscribe {
            p.subscriber = try? SubscriberConnection(participant: p, room: self, local: localParameters(), nowNanos: nowNanos)
        }
        let others = participants.map(\.summary)
        participants.append(p)
        logger.info("participant joined", metadata: ["room": "\(id)", "peer": "\(peer.peerID)", "user": "\(peer.userID)"])
        sink(.joined(roomID: id, peer: peer, participants: others, messages: recentChat, consents: consentList()))
        if let recording = activeRecordingID { sink(.recordingStarted(id: recording)) }
        for o in participants where o !== p { o.sink(.userJoined(peer)) }
        for observer in observers { observer.room(self, didJoin: peer, nowNanos: nowNanos) }
        if let subscriber = p.subscriber {
            for o in participants where o !== p {
                for producer in o.producers { subscriber.add(producer) }
            }
            subscriber.negotiateIfNeeded()
        }
    }

    /// What a participant resuming its signaling is told: `joined` with the room as it is now, or
    /// nil when it is no longer in the room.
    package func joinedSignal(peerID: String) -> RoomSignal? {
        guard let p = participant(peerID) else { return nil }
        return .joined(roomID: id, peer: p.peer, participants: participants.filter { $0 !== p }.map(\.summary), messages: recentChat,
                       consents: consentList())
    }

    /// The participant left (its signaling closed, or it said `leave_room`).
    package func leave(peerID: String) {
        guard let p = participant(peerID) else { return }
        remove(p, reason: nil, message: "")
    }

    /// Removes a participant through the API: it gets `removed` with `reason` first.
    /// - Returns: false when no participant has that user id.
    @discardableResult
    package func remove(userID: String, reason: RemovalReason, message: String) -> Bool {
        guard let p = participants.first(where: { $0.peer.userID == userID }) else { return false }
        remove(p, reason: reason, message: message)
        return true
    }

    /// Closes the room: everyone is removed, `.roomClosed`.
    package func close(message: String) {
        isClosed = true
        for p in participants { remove(p, reason: .roomClosed, message: message) }
    }

    func remove(_ p: Participant, reason: RemovalReason?, message: String) {
        guard !p.removed else { return }
        p.removed = true
        let pub = p.publisher?.transport.statistics ?? TransportStatistics()
        let sub = p.subscriber?.statistics ?? SubscriberConnection.Statistics()
        participants.removeAll { $0 === p }
        for producer in p.producers { unpublish(producer, of: p, negotiate: false) }
        if let publisher = p.publisher {
            publisher.transport.delegate = nil
            publisher.transport.close(reason: reason?.logName ?? "left")
            host.remove(publisher)
        }
        if let subscriber = p.subscriber {
            for slot in subscriber.slots { if let c = slot.consumer { finished.add(c) } }
            finished.probePaddingBytes += subscriber.paddingBytesSent
            finished.pacedPackets += subscriber.pacer.packetsQueued
            subscriber.close(reason: reason?.logName ?? "left")
        }
        for observer in observers { observer.room(self, didRemove: p.peer) }
        for o in participants {
            o.sink(.userLeft(peerID: p.peer.peerID, userID: p.peer.userID))
            o.subscriber?.negotiateIfNeeded()
        }
        if let reason { p.sink(.removed(reason, message: message)) }
        logger.info("participant left", metadata: [
            "room": "\(id)", "peer": "\(p.peer.peerID)", "reason": "\(reason?.logName ?? "left")",
            "rtp_in": "\(pub.rtpPacketsIn)", "rtp_out": "\(sub.transport.rtpPacketsOut)", "retransmitted": "\(sub.retransmitted)", "retransmission_misses": "\(sub.missed)",
            "retransmissions_throttled": "\(sub.throttled)", "retransmissions_skipped": "\(sub.skipped)",
            "unknown_ssrc": "\(p.publisher?.unknownSSRCPackets ?? 0)", "srtp_auth_failures": "\(pub.authenticationFailures + sub.transport.authenticationFailures)",
        ])
    }

    /// One of a participant's transports ended (ICE consent lost, DTLS failure or close).
    func connectionClosed(_ p: Participant, reason: String) {
        guard !p.removed else { return }
        remove(p, reason: .connectionLost, message: reason)
    }

    // MARK: Negotiation

    /// Tracks one participant may publish at once, by kind: a microphone, and a camera plus a
    /// screen share. More sending m-lines in an offer are refused (`bad_offer`): each track costs a
    /// producer here and a consumer and an m-line at every other participant.
    package struct TrackLimits: Sendable, Equatable {
        package var audio: Int
        package var video: Int
        package init(audio: Int = 1, video: Int = 2) {
            self.audio = audio
            self.video = video
        }
    }
    package var trackLimits = TrackLimits()

    /// A publisher offer (parsed by the caller, off this loop: parsing is the costly part of an
    /// offer): answered through the sink, then tracks published or unpublished.
    package func publisherOffer(peerID: String, offer: SessionDescription, nowNanos: Int64) {
        guard let p = participant(peerID) else { return }
        let sending = offer.media.filter { ($0.port != 0 || $0.has("bundle-only")) && $0.direction.sends }
        if !sending.isEmpty && !p.peer.canPublish {
            p.sink(.refused(.permissionDenied, message: "this token may not publish (role \(p.peer.role))"))
            return
        }
        let audio = sending.filter { $0.kind == "audio" }.count
        let video = sending.filter { $0.kind == "video" }.count
        guard audio <= trackLimits.audio, video <= trackLimits.video else {
            p.sink(.refused(.badOffer, message: "too many tracks: at most \(trackLimits.audio) audio and \(trackLimits.video) video (camera and screen share) at once"))
            return
        }
        do {
            let remote = try RemoteTransportParameters(offer)
            let local: LocalTransportParameters
            let setup: DTLSSetup
            var restarted = false
            if let existing = p.publisher {
                if remote.ice != existing.remote.ice {
                    // The client restarted ICE (RFC 8445 section 9, JSEP's iceRestart): new credentials both ways.
                    guard remote.fingerprint == existing.remote.fingerprint else {
                        throw RoomSDPError.bad("the DTLS fingerprint changed: a new connection needs a new join")
                    }
                    guard let renewed = existing.restartICE(remote: remote) else { throw RoomSDPError.bad("cannot restart ICE") }
                    local = renewed
                    restarted = true
                    logger.info("publisher ICE restart", metadata: ["room": "\(id)", "peer": "\(peerID)"])
                } else {
                    local = existing.local
                }
                setup = existing.setup
            } else {
                local = localParameters()
                setup = remote.setup.answer
            }
            let version = (p.publisher?.sessionVersion ?? 0) + 1
            let sessionID = p.publisher?.sessionID ?? UInt64.random(in: 1...UInt64(Int64.max))
            let (answer, sections, ids) = try RoomSDP.answerPublisher(offer: offer, local: local, setup: setup,
                                                                       sessionVersion: version, sessionID: sessionID)
            let publisher: PublisherConnection
            if let existing = p.publisher {
                publisher = existing
            } else {
                do {
                    publisher = try PublisherConnection(participant: p, room: self, remote: remote, local: local, sessionID: sessionID, nowNanos: nowNanos)
                } catch {
                    throw RoomSDPError.bad("cannot set up the transport: \(error)")
                }
                p.publisher = publisher
                host.add(publisher)
            }
            publisher.sessionVersion = version
            publisher.extensions = ids
            if restarted { p.sink(.iceRestarted(.publisher)) }
            p.sink(.publisherAnswer(sdp: answer.text))
            var sendingMids: Set<String> = []
            for section in sections where section.sending {
                sendingMids.insert(section.mid)
                if p.producers.contains(where: { $0.mid == section.mid }) { continue }
                let source: TrackSource
                if section.kind == .audio {
                    source = .microphone
                } else if p.screenSharePending {
                    p.screenSharePending = false
                    source = .screen
                } else {
                    source = .camera
                }
                publish(Producer(trackID: RandomID.make("tr_"), peerID: p.peer.peerID, section: section, source: source), of: p)
            }
            for producer in p.producers where !sendingMids.contains(producer.mid) {
                unpublish(producer, of: p, negotiate: false)
            }
            for o in participants where o !== p { o.subscriber?.negotiateIfNeeded() }
        } catch let error as RoomSDPError {
            p.sink(.refused(.badOffer, message: error.description))
        } catch {
            p.sink(.refused(.badOffer, message: "\(error)"))
        }
    }

    func publish(_ producer: Producer, of p: Participant) {
        switch (producer.kind, producer.source) {
        case (.audio, _): producer.muted = !p.isEnabled(.audio)
        case (.video, .camera): producer.muted = !p.isEnabled(.video)
        default: break
        }
        p.producers.append(producer)
        p.publisher?.bind(producer)
        logger.info("track published", metadata: ["room": "\(id)", "peer": "\(p.peer.peerID)", "track": "\(producer.trackID)",
                                                   "kind": "\(producer.kind.rawValue)", "source": "\(producer.source.rawValue)"])
        for o in participants where o !== p {
            o.sink(.trackPublished(peerID: p.peer.peerID, track: producer.info))
            o.subscriber?.add(producer)
        }
        for observer in observers { observer.room(self, didPublish: producer, of: p.peer, nowNanos: p.joinedNanos) }
    }

    func unpublish(_ producer: Producer, of p: Participant, negotiate: Bool) {
        finished.add(producer)
        for observer in observers { observer.room(self, didUnpublish: producer, of: p.peer) }
        p.producers.removeAll { $0 === producer }
        p.publisher?.unbind(producer)
        for o in participants where o !== p {
            o.subscriber?.remove(producer)
            o.sink(.trackUnpublished(peerID: p.peer.peerID, trackID: producer.trackID))
            if negotiate { o.subscriber?.negotiateIfNeeded() }
        }
        producer.consumers.removeAll()
    }

    /// `restart_ice {target: "subscriber"}`: new ICE credentials on the subscriber connection, in a
    /// new offer (``SubscriberConnection/requestICERestart()``).
    /// - Returns: false when the participant has no subscriber transport yet (nothing to restart).
    @discardableResult
    package func restartSubscriberICE(peerID: String) -> Bool {
        guard let subscriber = participant(peerID)?.subscriber, subscriber.hasTransport else { return false }
        subscriber.requestICERestart()
        return true
    }

    /// The client's answer to our last subscriber offer (parsed by the caller, off this loop).
    package func subscriberAnswer(peerID: String, answer: SessionDescription, nowNanos: Int64) {
        guard let p = participant(peerID) else { return }
        guard let subscriber = p.subscriber else {
            p.sink(.refused(.permissionDenied, message: "this token may not subscribe"))
            return
        }
        do {
            try subscriber.applyAnswer(answer, nowNanos: nowNanos)
        } catch {
            p.sink(.refused(.badAnswer, message: error.description))
        }
    }

    // MARK: Room events

    /// Who turns a participant's microphone or camera on or off.
    package enum ToggleOrigin: Sendable { case participant, server }

    /// What a toggle did.
    package enum ToggleResult: Sendable, Equatable {
        case applied
        /// The participant asked to turn on what the server muted: nothing changed.
        case mutedByServer
        case notInRoom
    }

    /// Mute or unmute a participant's microphone (audio) or camera (video). The participant's own
    /// toggles and the server's mute are separate: what is forwarded is on only when the participant
    /// wants it and the server has not muted it, so a participant cannot undo a server mute.
    /// Forwarding stops or resumes (video resumes at a keyframe) and everyone gets the `*_toggled`
    /// event with the resulting state.
    @discardableResult
    package func setEnabled(peerID: String, kind: MediaKind, enabled: Bool, origin: ToggleOrigin = .participant, nowNanos: Int64) -> ToggleResult {
        guard let p = participant(peerID) else { return .notInRoom }
        switch origin {
        case .participant:
            if kind == .audio { p.audioEnabled = enabled } else { p.videoEnabled = enabled }
            if enabled && p.serverMuted.contains(kind) {
                p.sink(.refused(.mutedByServer, message: "the \(kind.rawValue) was muted by the room's owner and stays muted"))
                return .mutedByServer
            }
        case .server:
            if enabled { p.serverMuted.remove(kind) } else { p.serverMuted.insert(kind) }
        }
        let on = p.isEnabled(kind)
        for producer in p.producers where producer.kind == kind && producer.source != .screen {
            let wasMuted = producer.muted
            producer.muted = !on
            if wasMuted != producer.muted { for observer in observers { observer.room(self, didToggle: producer, of: p.peer, nowNanos: nowNanos) } }
            if wasMuted && on && kind == .video {
                for c in producer.consumers {
                    c.waitingForKeyframe = true
                    c.requestKeyframe(nowNanos: nowNanos)
                }
                if !producer.taps.isEmpty { producer.requestKeyframe(nowNanos: nowNanos) }
            }
        }
        broadcast(.toggled(kind == .audio ? .audio : .video, peerID: p.peer.peerID, userID: p.peer.userID, enabled: on))
        return .applied
    }

    /// The peer id of a user in the room.
    package func peerID(userID: String) -> String? { participants.first { $0.peer.userID == userID }?.peer.peerID }

    package func screenShare(peerID: String, enabled: Bool) {
        guard let p = participant(peerID) else { return }
        if enabled && !p.peer.canPublish {
            p.sink(.refused(.permissionDenied, message: "this token may not publish"))
            return
        }
        p.screenSharePending = enabled
        broadcast(.toggled(.screenShare, peerID: p.peer.peerID, userID: p.peer.userID, enabled: enabled))
    }

    /// A participant's chat message, to everyone (its sender included) and into the recent history.
    /// - Returns: the message as passed on; nil when the peer is not in the room.
    @discardableResult
    package func chat(peerID: String, message: String, timestampMillis: Int64) -> ChatLine? {
        guard let p = participant(peerID) else { return nil }
        let line = ChatLine(peerID: p.peer.peerID, userID: p.peer.userID, message: message, timestampMillis: timestampMillis)
        if recentChat.count >= Self.chatHistoryLimit { recentChat.removeFirst(recentChat.count - Self.chatHistoryLimit + 1) }
        recentChat.append(line)
        broadcast(.chat(peerID: line.peerID, userID: line.userID, message: message, timestampMillis: timestampMillis))
        return line
    }

    // MARK: Recording consent

    /// Whether `peer`'s media may enter a recording now.
    package func mayRecord(_ peer: PeerInfo) -> Bool {
        !recordingConsentRequired || recordingConsents[peer.userID]?.granted == true
    }

    /// The answers given so far, oldest first (nil when consent is not required).
    package func consentList() -> [RecordingConsent]? {
        guard recordingConsentRequired else { return nil }
        return recordingConsents.values.sorted { ($0.atMillis, $0.userID) < ($1.atMillis, $1.userID) }
    }

    /// A participant grants or withdraws its consent to be recorded: everyone is told, and the
    /// recorders take its media in or leave it out from now on. A repeated answer changes nothing.
    /// - Returns: the consent as kept; nil when the peer is not in the room or nothing changed.
    @discardableResult
    package func setRecordingConsent(peerID: String, granted: Bool, atMillis: Int64, nowNanos: Int64) -> RecordingConsent? {
        guard let p = participant(peerID) else { return nil }
        if let known = recordingConsents[p.peer.userID], known.granted == granted { return nil }
        let consent = RecordingConsent(userID: p.peer.userID, granted: granted, atMillis: atMillis)
        recordingConsents[p.peer.userID] = consent
        broadcast(.recordingConsent(recordingID: activeRecordingID, userID: p.peer.userID, granted: granted))
        if recordingConsentRequired {
            for observer in observers { observer.room(self, didChangeConsentOf: p.peer, nowNanos: nowNanos) }
        }
        return consent
    }

    package func broadcast(_ signal: RoomSignal) {
        for p in participants { p.sink(signal) }
    }

    // MARK: State

    package func summaries() -> [ParticipantSummary] { participants.map(\.summary) }

    package func snapshot(nowNanos: Int64) -> [ParticipantSnapshot] {
        participants.map {
            ParticipantSnapshot(peer: $0.peer, tracks: $0.producers.map(\.info), quality: $0.quality(nowNanos: nowNanos), joinedNanos: $0.joinedNanos,
                                subscriptions: $0.subscriptions(nowNanos: nowNanos))
        }
    }

    /// The quietest smoothed level that counts as speaking: -50 dBov, 77 above RFC 6464's silence.
    static let speakingLoudness = Double(Producer.silentLevel) - 50
    /// How recent a microphone's last level must be to count.
    static let speakingRecencyNanos: Int64 = 1_000_000_000

    /// The active speaker: the participant whose microphone is loudest (smoothed audio level above
    /// -50 dBov, heard in the last second), or nil. Its video goes before other cameras.
    func activeSpeaker(nowNanos: Int64) -> String? {
        var best: (peer: String, loudness: Double)?
        for p in participants {
            for producer in p.producers where producer.kind == .audio && !producer.muted {
                guard nowNanos - producer.loudnessNanos < Self.speakingRecencyNanos, producer.loudness > Self.speakingLoudness else { continue }
                if producer.loudness > (best?.loudness ?? 0) { best = (p.peer.peerID, producer.loudness) }
            }
        }
        return best?.peer
    }

    /// `set_layer`: the subscriber caps what it receives of `trackID` (nil: no cap).
    package func setLayer(peerID: String, trackID: String, maxSpatial: Int?, maxTemporal: Int?, nowNanos: Int64) -> Bool {
        guard let subscriber = participant(peerID)?.subscriber,
              let c = subscriber.slots.lazy.compactMap(\.consumer).first(where: { $0.producer.trackID == trackID }) else { return false }
        c.maxSpatial = maxSpatial.map { max(0, $0) }
        c.maxTemporal = maxTemporal.map { min(max(0, $0), 3) }
        if c.producer.kind == .video {
            // Honour a lower cap now (at the next keyframe of that layer), not at the next allocation round.
            let spatial = min(c.targetSpatial, c.spatialCeiling)
            let temporal = min(c.targetTemporal, c.maxTemporal ?? 3)
            c.setTarget(spatial: spatial, temporal: temporal, nowNanos: nowNanos)
            subscriber.downlink.reallocateSoon()
        }
        return true
    }

    /// Counters of the room's lifetime (live producers and consumers plus those gone), for /metrics.
    package func counters() -> RoomCounters {
        var total = finished
        for p in participants {
            for producer in p.producers { total.add(producer) }
            if let subscriber = p.subscriber {
                total.probePaddingBytes += subscriber.paddingBytesSent
                total.pacedPackets += subscriber.pacer.packetsQueued
                for slot in subscriber.slots where slot.consumer?.allocationPaused == true { total.tracksPaused += 1 }
            }
        }
        return total
    }
}
