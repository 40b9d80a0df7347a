import Foundation
import Logging
import NIOConcurrencyHelpers
@testable import SFU
import Testing
@testable import Control

@Suite("Signaling events: one decoder for the client's, one encoder for the server's")
struct SignalingEventTests {
    func decode(_ text: String) -> Result<ClientEvent, ClientEvent.DecodeError> { ClientEvent.decode(text) }

    @Test func everyClientEventDecodes() throws {
        #expect(try decode(#"{"event":"join_room","data":{"room_id":"rm_a"}}"#).get() == .joinRoom(roomID: .string("rm_a")))
        #expect(try decode(#"{"event":"join_room"}"#).get() == .joinRoom(roomID: nil))
        #expect(try decode(#"{"event":"webrtc_offer","data":{"sdp":"v=0","target":"publisher"}}"#).get() == .publisherOffer(sdp: "v=0"))
        #expect(try decode(#"{"event":"webrtc_answer","data":{"sdp":"v=0"}}"#).get() == .subscriberAnswer(sdp: "v=0"))
        #expect(try decode(#"{"event":"ice_candidate","data":{"candidate":"x"}}"#).get() == .iceCandidate)
        #expect(try decode(#"{"event":"toggle_audio","data":{"enabled":false}}"#).get() == .toggle(.audio, enabled: false))
        #expect(try decode(#"{"event":"toggle_video","data":{"enabled":true,"extra":[1,{}]}}"#).get() == .toggle(.video, enabled: true))
        #expect(try decode(#"{"event":"screen_share","data":{"enabled":true}}"#).get() == .screenShare(enabled: true))
        #expect(try decode(#"{"event":"send_message","data":{"message":"héllo"}}"#).get() == .sendMessage("héllo"))
        #expect(try decode(#"{"event":"start_recording"}"#).get() == .startRecording)
        #expect(try decode(#"{"event":"stop_recording","data":{}}"#).get() == .stopRecording)
        #expect(try decode(#"{"event":"capture_image","data":{"user_id":"u","format":7}}"#).get()
                == .captureImage(userID: "u", source: nil, format: ""))
        #expect(try decode(#"{"event":"set_layer","data":{"track_id":"tr_1","max_spatial":1.0,"max_temporal":null}}"#).get()
                == .setLayer(trackID: "tr_1", maxSpatial: 1, maxTemporal: nil))
        #expect(try decode(#"{"event":"leave_room"}"#).get() == .leaveRoom)
        #expect(try decode(#"{"event":"recording_consent","data":{"granted":true}}"#).get() == .recordingConsent(granted: true))
        #expect(try decode(#"{"event":"recording_consent","data":{"granted":false}}"#).get() == .recordingConsent(granted: false))
    }

    @Test func wrongInputIsTheContractsError() {
        func code(_ text: String) -> String? { if case .failure(let e) = decode(text) { e.code } else { nil } }
        for text in ["", "null", "[]", "\"join_room\"", "{}", #"{"event":3}"#, "{\"event\":\"join_room\"", String(repeating: "[", count: 100_000)] {
            #expect(code(text) == "bad_message", "\(text.prefix(40))")
        }
        #expect(code(#"{"event":"join_room","data":[]}"#) == "bad_message")
        #expect(code(#"{"event":"join_room","data":null}"#) == "bad_message")
        #expect(decode(#"{"event":"dance"}"#) == .failure(.unknownEvent("dance")))
        for text in [#"{"event":"toggle_audio","data":{"enabled":1}}"#, #"{"event":"toggle_audio","data":{"enabled":"true"}}"#,
                     #"{"event":"screen_share"}"#, #"{"event":"webrtc_offer","data":{"sdp":5}}"#,
                     #"{"event":"webrtc_offer","data":{"sdp":"v=0","target":"subscriber"}}"#,
                     #"{"event":"webrtc_answer","data":{"sdp":"v=0","target":"publisher"}}"#,
                     #"{"event":"send_message","data":{"message":""}}"#,
                     "{\"event\":\"send_message\",\"data\":{\"message\":\"\(String(repeating: "a", count: 4097))\"}}",
                     #"{"event":"set_layer","data":{"track_id":"t","max_spatial":1.5}}"#,
                     #"{"event":"set_layer","data":{"track_id":"t","max_spatial":4}}"#,
                     #"{"event":"set_layer","data":{"track_id":"t","max_temporal":true}}"#,
                     #"{"event":"set_layer","data":{"max_spatial":1}}"#,
                     #"{"event":"recording_consent"}"#, #"{"event":"recording_consent","data":{"granted":"yes"}}"#] {
            #expect(code(text) == "bad_request", "\(text.prefix(80))")
        }
    }

    /// The server's events as the contract writes them: snake_case keys, `{"event", "data"}`.
    @Test func serverEventsEncodeToTheContract() throws {
        func object(_ e: ServerEvent) throws -> [String: Any] {
            try #require(JSONSerialization.jsonObject(with: Data(try e.encoded().utf8)) as? [String: Any])
        }
        let peer = PeerInfo(peerID: "pe_a", userID: "u1", name: "Dr A", role: "doctor", canPublish: true, canSubscribe: true)
        let track = TrackInfo(trackID: "tr_1", kind: .video, source: .screen, muted: false, simulcast: true)
        let joined = try object(ServerEvent(.joined(roomID: "rm_1", peer: peer, participants: [ParticipantSummary(peer: peer, tracks: [track])]),
                                            iceServers: ["stun:x:3478"]))
        #expect(joined["event"] as? String == "joined_room")
        let data = try #require(joined["data"] as? [String: Any])
        #expect(Set(data.keys) == ["room_id", "peer_id", "user_id", "role", "name", "participants", "ice_servers", "resumed", "messages",
                                   "recording_consent"])
        #expect(data["recording_consent"] as? String == "notice")
        // With consent required: the rule and the answers so far, each with its time.
        let consenting = try object(ServerEvent(.joined(roomID: "rm_1", peer: peer, participants: [],
                                                        consents: [RecordingConsent(userID: "u2", granted: true, atMillis: 1_764_000_000_000)]),
                                                iceServers: []))
        let consentData = try #require(consenting["data"] as? [String: Any])
        #expect(consentData["recording_consent"] as? String == "required")
        let line = try #require((consentData["consents"] as? [[String: Any]])?.first)
        #expect(Set(line.keys) == ["user_id", "granted", "at"])
        #expect(line["user_id"] as? String == "u2" && line["granted"] as? Bool == true && line["at"] as? String == "2025-11-24T16:00:00.000Z")
        // The event: the recording in progress, or null.
        let consent = try object(ServerEvent(.recordingConsent(recordingID: nil, userID: "u2", granted: false), iceServers: []))
        #expect(consent["event"] as? String == "recording_consent")
        let consentFields = try #require(consent["data"] as? [String: Any])
        #expect(consentFields["recording_id"] is NSNull && consentFields["user_id"] as? String == "u2" && consentFields["granted"] as? Bool == false)
        #expect(Set(consentFields.keys) == ["recording_id", "user_id", "granted"])
        #expect(data["resumed"] as? Bool == false)
        #expect((data["messages"] as? [Any])?.isEmpty == true)
        let withChat = try object(ServerEvent(.joined(roomID: "rm_1", peer: peer, participants: [],
                                                      messages: [ChatLine(peerID: "pe_a", userID: "u1", message: "hi", timestampMillis: 1_764_000_000_000)]),
                                              iceServers: []))
        #expect(((withChat["data"] as? [String: Any])?["messages"] as? [[String: String]]) ==
                [["peer_id": "pe_a", "user_id": "u1", "message": "hi", "timestamp": "2025-11-24T16:00:00.000Z"]])
        #expect((data["ice_servers"] as? [[String: Any]])?.first?["urls"] as? [String] == ["stun:x:3478"])
        let p = try #require((data["participants"] as? [[String: Any]])?.first)
        #expect(p["peer_id"] as? String == "pe_a" && p["role"] as? String == "doctor")
        let t = try #require((p["tracks"] as? [[String: Any]])?.first)
        #expect(t["track_id"] as? String == "tr_1" && t["source"] as? String == "screen" && t["simulcast"] as? Bool == true)
        let noICE = try object(ServerEvent(.joined(roomID: "rm_1", peer: peer, participants: []), iceServers: []))
        #expect(((noICE["data"] as? [String: Any])?["ice_servers"] as? [Any])?.isEmpty == true)

        let cases: [(RoomSignal, String, [String: String])] = [
            (.publisherAnswer(sdp: "v=0/x"), "webrtc_answer", ["target": "publisher", "sdp": "v=0/x"]),
            (.subscriberOffer(sdp: "v=0"), "webrtc_offer", ["target": "subscriber", "sdp": "v=0"]),
            (.userLeft(peerID: "pe_a", userID: "u1"), "user_left", ["peer_id": "pe_a", "user_id": "u1"]),
            (.trackUnpublished(peerID: "pe_a", trackID: "tr_1"), "track_unpublished", ["peer_id": "pe_a", "track_id": "tr_1"]),
            (.trackPaused(peerID: "pe_a", trackID: "tr_1"), "track_paused", ["peer_id": "pe_a", "track_id": "tr_1", "reason": "bandwidth"]),
            (.recordingStarted(id: "rec_1"), "recording_started", ["recording_id": "rec_1"]),
            (.imageCaptured(snapshotID: "snap_1", userID: "u1"), "image_captured", ["snapshot_id": "snap_1", "user_id": "u1"]),
            (.refused(.mutedByServer, message: "m"), "error", ["code": "muted_by_server", "message": "m"]),
            (.removed(.roomClosed, message: "bye"), "error", ["code": "room_closed", "message": "bye"]),
            (.removed(.removedByApplication, message: "out"), "error", ["code": "removed", "message": "out"]),
        ]
        for (signal, name, fields) in cases {
            let o = try object(ServerEvent(signal, iceServers: []))
            #expect(o["event"] as? String == name)
            #expect((o["data"] as? [String: Any])?.compactMapValues { $0 as? String } == fields, "\(name)")
        }
        for (kind, name) in [(ToggleKind.audio, "audio_toggled"), (.video, "video_toggled"), (.screenShare, "screen_share_toggled")] {
            let o = try object(ServerEvent(.toggled(kind, peerID: "pe_a", userID: "u1", enabled: true), iceServers: []))
            #expect(o["event"] as? String == name && (o["data"] as? [String: Any])?["enabled"] as? Bool == true)
        }
        for (signal, code) in [(SessionSignal.error(code: "bad_request", message: "m"), "bad_request"), (.removed(code: "rate_limited", message: "m"), "rate_limited")] {
            let o = try object(ServerEvent(signal, iceServers: []))
            #expect(o["event"] as? String == "error" && (o["data"] as? [String: Any])?["code"] as? String == code)
        }
        let chat = try object(ServerEvent(.chat(peerID: "pe_a", userID: "u1", message: "hi", timestampMillis: 1_764_000_000_000), iceServers: []))
        #expect((chat["data"] as? [String: Any])?["timestamp"] as? String == "2025-11-24T16:00:00.000Z")
    }

    /// The client's direction as `sfu-load` uses it: every event it can send is read back by the
    /// server's decoder as the same event.
    @Test func clientEventsEncodeToWhatTheServerDecodes() throws {
        let events: [ClientEvent] = [
            .joinRoom(roomID: nil), .joinRoom(roomID: .string("rm_a")), .joinRoom(roomID: .null),
            .publisherOffer(sdp: "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"), .subscriberAnswer(sdp: "v=0"), .iceCandidate,
            .toggle(.audio, enabled: false), .toggle(.video, enabled: true), .screenShare(enabled: true),
            .sendMessage("héllo \"quoted\" / ✓"), .startRecording, .stopRecording,
            .captureImage(userID: "u1", source: "screen", format: "png"), .captureImage(userID: nil, source: nil, format: nil),
            .setLayer(trackID: "tr_1", maxSpatial: 0, maxTemporal: nil), .setLayer(trackID: "tr_2", maxSpatial: nil, maxTemporal: 3),
            .recordingConsent(granted: true), .recordingConsent(granted: false), .leaveRoom,
        ]
        for event in events {
            let text = try event.encoded()
            #expect(try decode(text).get() == event, "\(text)")
            #expect(try ClientEvent.frame(text).get().event == event.name)
        }
    }

    /// The server's events as `sfu-load` reads them: each decodes back to itself; a frame that is
    /// not one of the contract's events is nil, not a crash.
    @Test func serverEventsDecodeBackToThemselves() throws {
        let peer = PeerInfo(peerID: "pe_a", userID: "u1", name: "Dr A", role: "doctor", canPublish: true, canSubscribe: true)
        let track = TrackInfo(trackID: "tr_1", kind: .video, source: .camera, muted: true, simulcast: false)
        let signals: [RoomSignal] = [
            .joined(roomID: "rm_1", peer: peer, participants: [ParticipantSummary(peer: peer, tracks: [track])]),
            .publisherAnswer(sdp: "v=0"), .subscriberOffer(sdp: "v=0"), .userJoined(peer), .userLeft(peerID: "pe_a", userID: "u1"),
            .trackPublished(peerID: "pe_a", track: track), .trackUnpublished(peerID: "pe_a", trackID: "tr_1"),
            .trackPaused(peerID: "pe_a", trackID: "tr_1"), .trackResumed(peerID: "pe_a", trackID: "tr_1"),
            .toggled(.audio, peerID: "pe_a", userID: "u1", enabled: false), .toggled(.video, peerID: "pe_a", userID: "u1", enabled: true),
            .toggled(.screenShare, peerID: "pe_a", userID: "u1", enabled: true),
            .chat(peerID: "pe_a", userID: "u1", message: "hi", timestampMillis: 1_764_000_000_000),
            .recordingStarted(id: "rec_1"), .recordingStopped(id: "rec_1"), .imageCaptured(snapshotID: "snap_1", userID: "u1"),
            .refused(.badOffer, message: "no"), .removed(.replaced, message: "again"),
            .recordingConsent(recordingID: nil, userID: "u1", granted: true), .recordingConsent(recordingID: "rec_1", userID: "u1", granted: false),
            .joined(roomID: "rm_1", peer: peer, participants: [], consents: [RecordingConsent(userID: "u1", granted: true, atMillis: 1_764_000_000_000)]),
        ]
        var names: Set<String> = []
        for signal in signals {
            let event = ServerEvent(signal, iceServers: ["stun:x:3478", "turn:y:3478"])
            let text = try event.encoded()
            #expect(ServerEvent.decode(text) == event, "\(text)")
            names.insert(event.name)
        }
        #expect(names.count == 18)
        for text in ["", "{}", #"{"event":"dance","data":{}}"#, #"{"event":"user_left","data":{"peer_id":"p"}}"#,
                     #"{"event":"track_paused","data":{"peer_id":1,"track_id":"t","reason":"bandwidth"}}"#, #"{"event":"error"}"#] {
            #expect(ServerEvent.decode(text) == nil, "\(text)")
        }
        #expect(SignalingJSON.camelCase("signaling_url") == "signalingURL")
        #expect(SignalingJSON.camelCase("ice_servers") == "iceServers")
        #expect(SignalingJSON.camelCase("urls") == "urls")
    }
}

/// A session against a real live room (a media worker on loopback) and a SQLite store; no socket.
private struct Harness {
    let store: MetadataStore
    let live: LiveRooms
    let media: MediaRuntime
    let room: RoomRecord
    let services: RoomServices

    static func make(resumeWindowSeconds: Int = 0) async throws -> Harness {
        let (store, _) = try await StoreBackend.sqlite.open()
        var config = ServerConfig()
        config.workers = 1
        config.mediaPortBase = 0
        let logger = Logger(label: "signaling-test")
        let media = try await MediaRuntime.start(config: config, logger: logger)
        let live = LiveRooms(media: media, logger: logger)
        let rooms = RoomLifecycle(store: store, webhooks: nil, live: live, recordings: nil, logger: logger)
        let room = try await rooms.open(RoomLifecycle.Options(name: "s"))
        let services = RoomServices(store: store, live: live, signer: JoinTokenSigner(secret: "signaling-session-tests-0123456789"), iceServers: [], webhooks: nil,
                                    logger: logger, recordings: nil, resumption: SessionResumption(windowSeconds: resumeWindowSeconds))
        return Harness(store: store, live: live, media: media, room: room, services: services)
    }

    func session(user: String, role: Role = .patient, expiresIn: Int64 = 3600) -> (SignalingSession, NIOLockedValueBox<[SessionSignal]>) {
        session(claims: claims(user: user, role: role, expiresIn: expiresIn))
    }

    func claims(user: String, role: Role = .patient, expiresIn: Int64 = 3600) -> JoinClaims {
        let now = Int64(Date().timeIntervalSince1970)
        return JoinClaims(room: room.id, sub: user, name: user, role: role, perms: role.defaultPermissions, exp: now + expiresIn, iat: now)
    }

    /// A session with these claims: a second socket of the same token.
    func session(claims: JoinClaims) -> (SignalingSession, NIOLockedValueBox<[SessionSignal]>) {
        let out = NIOLockedValueBox<[SessionSignal]>([])
        return (SignalingSession(claims: claims, record: room, services: services, enqueue: { s in out.withLockedValue { $0.append(s) } }), out)
    }

    func stop() async {
        for w in media.workers { await w.stop() }
        await store.close()
    }
}

/// The `error` codes the client was sent without being removed, the session's and the room's.
private func errors(_ box: NIOLockedValueBox<[SessionSignal]>) -> [String] {
    box.withLockedValue { $0 }.compactMap { s -> String? in
        switch s {
        case .error(let code, _): code
        case .room(.refused(let refusal, _)): refusal.code
        default: nil
        }
    }
}

private func removals(_ box: NIOLockedValueBox<[SessionSignal]>) -> [String] { box.withLockedValue { $0 }.compactMap(\.removalCode) }

@Suite("Signaling session: awaiting join -> joined -> left, in-process", .serialized)
struct SignalingSessionTests {
    @Test func awaitingJoinOnlyTakesJoinRoom() async throws {
        let h = try await Harness.make()
        let (session, out) = h.session(user: "p")
        #expect(await session.receive(.text(#"{"event":"toggle_audio","data":{"enabled":"x"}}"#)))
        #expect(await session.receive(.text(#"{"event":"dance"}"#)))
        #expect(await session.receive(.text("not json")))
        #expect(await session.receive(.other))
        #expect(errors(out) == ["not_joined", "not_joined", "bad_message", "bad_message"])
        #expect(await session.state == .awaitingJoin)
        // A join for another room ends the session.
        #expect(await !session.receive(.text(#"{"event":"join_room","data":{"room_id":"rm_other"}}"#)))
        #expect(removals(out) == ["token_room_mismatch"])
        #expect(await session.state == .left)
        #expect(await !session.receive(.text(#"{"event":"join_room"}"#)))
        await h.stop()
    }

    @Test func joinedSessionAnswersEveryEventAndLeaves() async throws {
        let h = try await Harness.make()
        let (session, out) = h.session(user: "p")
        #expect(await session.receive(.text("{\"event\":\"join_room\",\"data\":{\"room_id\":\"\(h.room.id)\"}}")))
        let peerID = try #require(await session.peerID)
        #expect(await session.state == .joined(peerID: peerID))
        #expect(out.withLockedValue { $0 }.contains { if case .room(.joined(let room, let peer, _, _, _)) = $0 { room == h.room.id && peer.peerID == peerID } else { false } })
        let snapshot = try await #require(h.live.existing(h.room.id)).run { $0.snapshot(nowNanos: 0).map(\.peer.userID) }
        #expect(snapshot == ["p"])

        for text in [#"{"event":"join_room"}"#, #"{"event":"toggle_video","data":{"enabled":"no"}}"#, #"{"event":"dance"}"#,
                     #"{"event":"start_recording"}"#, #"{"event":"capture_image","data":{"user_id":"p"}}"#,
                     #"{"event":"set_layer","data":{"track_id":"tr_none"}}"#, #"{"event":"webrtc_offer","data":{"sdp":"garbage"}}"#,
                     #"{"event":"webrtc_answer","data":{"sdp":"garbage"}}"#, #"{"event":"ice_candidate","data":{}}"#,
                     #"{"event":"toggle_audio","data":{"enabled":false}}"#] {
            #expect(await session.receive(.text(text)), "\(text)")
        }
        #expect(errors(out) == ["already_joined", "bad_request", "unknown_event", "permission_denied", "permission_denied",
                                "track_not_found", "bad_offer", "bad_answer"])
        #expect(await !session.leaveRequested)
        #expect(await !session.receive(.text(#"{"event":"leave_room"}"#)))
        #expect(await session.state == .left)
        // What tells a leave from a lost connection when the socket ends (RoomSignaling.handle).
        #expect(await session.leaveRequested)
        await session.finish(reason: "left")
        let after = try await #require(h.live.existing(h.room.id)).run { $0.snapshot(nowNanos: 0).count }
        #expect(after == 0)
        // The leave is written in the background.
        var left: ParticipantSessionRecord?
        for _ in 0..<100 {
            left = try await h.store.participantSessions(roomID: h.room.id).first { $0.id == peerID && $0.leftAt != nil }
            if left != nil { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(left?.userID == "p")
        await h.stop()
    }

    @Test func refusalsAtJoin() async throws {
        let h = try await Harness.make()
        let (expired, out) = h.session(user: "late", expiresIn: -1)
        #expect(await !expired.receive(.text(#"{"event":"join_room"}"#)))
        #expect(removals(out) == ["token_expired"])
        let (first, _) = h.session(user: "a")
        #expect(await first.receive(.text(#"{"event":"join_room"}"#)))
        try await RoomLifecycle(store: h.store, webhooks: nil, live: h.live, recordings: nil, logger: Logger(label: "t"))
            .close(h.room, reason: .api)
        let (second, out2) = h.session(user: "b")
        #expect(await !second.receive(.text(#"{"event":"join_room"}"#)))
        #expect(removals(out2) == ["room_closed"])
        await h.stop()
    }

    /// The limits on the session's own clock: 100 events at once pass, then each is refused, and
    /// a client that keeps going after 200 refusals is disconnected.
    @Test func floodIsRefusedThenDisconnected() async throws {
        let h = try await Harness.make()
        let (session, out) = h.session(user: "flood")
        #expect(await session.receive(.text(#"{"event":"join_room"}"#), nowNanos: 0))
        for _ in 0..<99 { #expect(await session.receive(.text(#"{"event":"ice_candidate"}"#), nowNanos: 0)) }
        #expect(errors(out).isEmpty)
        for _ in 0..<EventRateLimits.disconnectAfterRefusals { #expect(await session.receive(.text(#"{"event":"ice_candidate"}"#), nowNanos: 0)) }
        #expect(errors(out).count == EventRateLimits.disconnectAfterRefusals && Set(errors(out)) == ["rate_limited"])
        #expect(await !session.receive(.text(#"{"event":"ice_candidate"}"#), nowNanos: 0))
        #expect(removals(out) == ["rate_limited"])
        #expect(await !session.leaveRequested)
        await h.stop()
    }
}

/// The room signals a session's client was sent (not its own errors), in order.
private func roomSignals(_ box: NIOLockedValueBox<[SessionSignal]>) -> [RoomSignal] {
    box.withLockedValue { $0 }.compactMap { if case .room(let r) = $0 { r } else { nil } }
}

private func userEvents(_ box: NIOLockedValueBox<[SessionSignal]>, user: String) -> [String] {
    roomSignals(box).compactMap { s -> String? in
        switch s {
        case .userJoined(let p) where p.userID == user: "joined"
        case .userLeft(_, let u) where u == user: "left"
        default: nil
        }
    }
}

private let resumeJoin = #"{"event":"join_room","data":{"resume":true}}"#

@Suite("Signaling session: resuming a dropped socket within the window, in-process", .serialized)
struct SignalingResumeTests {
    /// A doctor and a patient joined; the patient's claims (its token) and peer id.
    private static func patientAndDoctor(_ h: Harness) async throws
        -> (JoinClaims, SignalingSession, NIOLockedValueBox<[SessionSignal]>, SignalingSession, NIOLockedValueBox<[SessionSignal]>, String) {
        let claims = h.claims(user: "p")
        let (first, firstOut) = h.session(claims: claims)
        let (other, otherOut) = h.session(user: "d", role: .doctor)
        #expect(await other.receive(.text(#"{"event":"join_room"}"#)))
        #expect(await first.receive(.text(#"{"event":"join_room"}"#)))
        return (claims, first, firstOut, other, otherOut, try #require(await first.peerID))
    }

    @Test func resumeDecodes() throws {
        #expect(try ClientEvent.decode(resumeJoin).get() == .joinRoom(roomID: nil, resume: true))
        #expect(try ClientEvent.decode(#"{"event":"join_room","data":{"resume":false}}"#).get() == .joinRoom(roomID: nil, resume: false))
        #expect(try ClientEvent.decode(#"{"event":"join_room","data":{"resume":null}}"#).get() == .joinRoom(roomID: nil))
        guard case .failure(let e) = ClientEvent.decode(#"{"event":"join_room","data":{"resume":"yes"}}"#) else {
            Issue.record("a resume that is not a boolean decoded")
            return
        }
        #expect(e.code == "bad_request")
        // What sfu-load sends reads back as itself.
        let sent = String(decoding: try JSONEncoder().encode(ClientEvent.joinRoom(roomID: nil, resume: true)), as: UTF8.self)
        #expect(try ClientEvent.decode(sent).get() == .joinRoom(roomID: nil, resume: true))
        // joined_room says whether it resumed.
        let peer = PeerInfo(peerID: "pe_1", userID: "u", name: "U", role: "patient", canPublish: true, canSubscribe: true)
        let fresh = ServerEvent(SessionSignal.room(.joined(roomID: "rm_1", peer: peer, participants: [])), iceServers: [])
        let resumed = ServerEvent(SessionSignal.resumed(.joined(roomID: "rm_1", peer: peer, participants: [])), iceServers: [])
        #expect(try fresh.encoded().contains(#""resumed":false"#))
        #expect(try resumed.encoded().contains(#""resumed":true"#))
    }

    @Test func aDroppedSocketResumesTheSamePeerAndTheOthersSeeNothing() async throws {
        let h = try await Harness.make(resumeWindowSeconds: 30)
        let (claims, first, firstOut, other, otherOut, peerID) = try await Self.patientAndDoctor(h)
        #expect(userEvents(otherOut, user: "p") == ["joined"])

        // The socket drops without leave_room: the participant is kept.
        #expect(await first.park())
        #expect(h.services.resumption.parkedCount == 1)
        // What happens meanwhile is kept for it.
        #expect(await other.receive(.text(#"{"event":"toggle_audio","data":{"enabled":false}}"#)))
        let live = try #require(h.live.existing(h.room.id))
        #expect(try await live.run { $0.snapshot(nowNanos: 0).map(\.peer.userID).sorted() } == ["d", "p"])

        let (second, secondOut) = h.session(claims: claims)
        #expect(await second.receive(.text(resumeJoin)))
        #expect(await second.peerID == peerID)
        #expect(await second.state == .joined(peerID: peerID))
        #expect(h.services.resumption.parkedCount == 0)
        let sent = secondOut.withLockedValue { $0 }
        guard case .resumed(.joined(_, let peer, let participants, _, _))? = sent.first else {
            Issue.record("the first signal of a resumed session is not its joined_room: \(sent)")
            await h.stop()
            return
        }
        #expect(peer.peerID == peerID)
        #expect(participants.map(\.peer.userID) == ["d"])
        // Then the toggle that came while it was away.
        #expect(roomSignals(secondOut).contains { if case .toggled(.audio, _, "d", false) = $0 { true } else { false } })
        // Nothing was sent to the dropped socket's queue after the drop, and the others saw no leave or join.
        #expect(!roomSignals(firstOut).contains { if case .toggled = $0 { true } else { false } })
        #expect(userEvents(otherOut, user: "p") == ["joined"])
        // The first session's handler ending (it already parked) changes nothing.
        await first.finish(reason: "connection_lost")
        #expect(try await live.run { $0.snapshot(nowNanos: 0).count } == 2)

        // From now on the room's signals reach the new socket.
        #expect(await other.receive(.text(#"{"event":"toggle_audio","data":{"enabled":true}}"#)))
        #expect(roomSignals(secondOut).contains { if case .toggled(.audio, _, "d", true) = $0 { true } else { false } })
        // A leave on the resumed socket ends the participant, once.
        #expect(await !second.receive(.text(#"{"event":"leave_room"}"#)))
        await second.finish(reason: SignalingSession.leftCode)
        #expect(userEvents(otherOut, user: "p") == ["joined", "left"])
        await h.stop()
    }

    @Test func theWindowEndsAsALostConnection() async throws {
        let h = try await Harness.make(resumeWindowSeconds: 1)
        let (claims, first, _, _, otherOut, peerID) = try await Self.patientAndDoctor(h)
        #expect(await first.park())
        var leftEvents: [String] = []
        for _ in 0..<100 where leftEvents.isEmpty {
            try await Task.sleep(for: .milliseconds(50))
            leftEvents = userEvents(otherOut, user: "p").filter { $0 == "left" }
        }
        #expect(leftEvents == ["left"])
        var stored: ParticipantSessionRecord?
        for _ in 0..<100 where stored?.leftAt == nil {
            stored = try await h.store.participantSessions(roomID: h.room.id).first { $0.id == peerID }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(stored?.leaveReason == RemovalReason.connectionLost.code)
        // Too late: a resume joins afresh, as a new peer.
        let (late, lateOut) = h.session(claims: claims)
        #expect(await late.receive(.text(resumeJoin)))
        let newPeer = try #require(await late.peerID)
        #expect(newPeer != peerID)
        #expect(lateOut.withLockedValue { $0 }.contains { if case .room(.joined) = $0 { true } else { false } })
        #expect(userEvents(otherOut, user: "p") == ["joined", "left", "joined"])
        await h.stop()
    }

    @Test func aResumeTakesOverASocketThatHasNotNoticedItIsDead() async throws {
        let h = try await Harness.make(resumeWindowSeconds: 30)
        let (claims, first, firstOut, _, otherOut, peerID) = try await Self.patientAndDoctor(h)
        let (second, _) = h.session(claims: claims)
        #expect(await second.receive(.text(resumeJoin)))
        #expect(await second.peerID == peerID)
        // The old socket is told and closed; its end does not take the participant with it.
        #expect(removals(firstOut) == [RemovalReason.replaced.code])
        #expect(await first.state == .left)
        await first.finish(reason: RemovalReason.replaced.code)
        let live = try #require(h.live.existing(h.room.id))
        #expect(try await live.run { $0.snapshot(nowNanos: 0).map(\.peer.peerID).contains(peerID) })
        #expect(userEvents(otherOut, user: "p") == ["joined"])
        // Another token of the same user (not a resume) replaces the peer as before.
        let (fresh, _) = h.session(user: "p", expiresIn: 7200)
        #expect(await fresh.receive(.text(resumeJoin)))
        #expect(try await #require(fresh.peerID) != peerID)
        await h.stop()
    }

    @Test func aParkedParticipantRemovedMeanwhileIsNotResumed() async throws {
        let h = try await Harness.make(resumeWindowSeconds: 30)
        let claims = h.claims(user: "p")
        let (first, _) = h.session(claims: claims)
        #expect(await first.receive(.text(#"{"event":"join_room"}"#)))
        let peerID = try #require(await first.peerID)
        #expect(await first.park())
        let live = try #require(h.live.existing(h.room.id))
        #expect(try await live.run { $0.remove(userID: "p", reason: .removedByApplication, message: "bye") })
        var stored: ParticipantSessionRecord?
        for _ in 0..<100 where stored?.leftAt == nil {
            stored = try await h.store.participantSessions(roomID: h.room.id).first { $0.id == peerID }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(stored?.leaveReason == RemovalReason.removedByApplication.code)
        #expect(h.services.resumption.parkedCount == 0)
        let (second, _) = h.session(claims: claims)
        #expect(await second.receive(.text(resumeJoin)))
        #expect(try await #require(second.peerID) != peerID)
        await h.stop()
    }
}
