import Foundation
import SFU

/// A JSON document as read from a client: what ``ClientEvent`` is decoded from (JSONDecoder, then
/// typed accessors), so a wrong type is an answer (`bad_request`), never a cast that crashes.
package enum JSONValue: Sendable, Equatable, Codable {
    /// The value as JSON text (keys sorted), for the store.
    package static func text(_ v: JSONValue) -> String? {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? e.encode(v)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A value read back from the store's text.
    package static func parse(_ text: String) -> JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) }

    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    package init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    package func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    package var string: String? { if case .string(let s) = self { s } else { nil } }
    package var bool: Bool? { if case .bool(let b) = self { b } else { nil } }
    package var object: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
    /// A whole number (1 and 1.0 alike), nil for anything else.
    package var integer: Int? {
        guard case .number(let n) = self, n == n.rounded(), n.magnitude < 1e15 else { return nil }
        return Int(n)
    }
}

/// A client's event (PROTOCOL.md "Signaling", docs/SIGNALING.md), decoded in one place:
/// ``decode(_:)`` turns a text frame into one of these or into the error the client is told.
package enum ClientEvent: Sendable, Equatable {
    /// `resume`: the same token's participant back, if its signaling dropped within the resume window.
    case joinRoom(roomID: JSONValue?, resume: Bool = false)
    case publisherOffer(sdp: String)
    case subscriberAnswer(sdp: String)
    case iceCandidate
    case toggle(MediaKind, enabled: Bool)
    case screenShare(enabled: Bool)
    case sendMessage(String)
    case startRecording
    case stopRecording
    /// Strings as given (nil: absent; a wrong type is "", refused by the snapshot code).
    case captureImage(userID: String?, source: String?, format: String?)
    case setLayer(trackID: String, maxSpatial: Int?, maxTemporal: Int?)
    /// `restart_ice {target: "subscriber"}` (the publisher connection restarts with a new offer).
    case restartICE
    /// `recording_consent {granted}`: the participant's answer to being recorded.
    case recordingConsent(granted: Bool)
    case leaveRoom

    /// Why a frame is not an event the session can act on: each maps to the `error` event's code.
    package enum DecodeError: Error, Equatable {
        /// Not a JSON object with a string `event` (`bad_message`).
        case notAnEventObject
        /// `data` present but not an object (`bad_message`).
        case dataNotAnObject
        /// An event name the contract does not have (`unknown_event`).
        case unknownEvent(String)
        /// A known event whose data is missing a field or has a wrong type (`bad_request`).
        case badRequest(String)
        /// A `webrtc_offer`/`webrtc_answer` to the wrong connection (`bad_request`, said apart so
        /// that a frame that is well-formed but misdirected is told so).
        case wrongTarget(String)

        package var code: String {
            switch self {
            case .notAnEventObject, .dataNotAnObject: "bad_message"
            case .unknownEvent: "unknown_event"
            case .badRequest, .wrongTarget: "bad_request"
            }
        }

        package var message: String {
            switch self {
            case .notAnEventObject: "expected a JSON object {\"event\": ..., \"data\": {...}}"
            case .dataNotAnObject: "data must be a JSON object"
            case .unknownEvent(let name): "unknown event '\(name.prefix(64))'"
            case .badRequest(let m), .wrongTarget(let m): m
            }
        }
    }

    static let maxChatLength = 4096
    static let maxTrackIDLength = 64

    /// The envelope, `{"event": ..., "data": {...}}`, before anything looks at the event.
    package struct Frame: Sendable, Equatable {
        package var event: String
        package var data: [String: JSONValue]
    }

    /// Reads the envelope of a text frame (data empty when absent).
    package static func frame(_ text: String) -> Result<Frame, DecodeError> {
        guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)),
              let event = object["event"]?.string else {
            return .failure(.notAnEventObject)
        }
        switch object["data"] {
        case nil: return .success(Frame(event: event, data: [:]))
        case .object(let data)?: return .success(Frame(event: event, data: data))
        default: return .failure(.dataNotAnObject)
        }
    }

    /// Decodes a client's text frame. The fuzz harness (Sources/FuzzHarnesses) calls this, the
    /// function the signaling session uses.
    package static func decode(_ text: String) -> Result<ClientEvent, DecodeError> {
        frame(text).flatMap(decode)
    }

    package static func decode(_ frame: Frame) -> Result<ClientEvent, DecodeError> {
        let data = frame.data
        guard let name = Name(rawValue: frame.event) else { return .failure(.unknownEvent(frame.event)) }
        switch name {
        case .joinRoom:
            switch data["resume"] {
            case nil, .null?: return .success(.joinRoom(roomID: data["room_id"]))
            case .bool(let resume)?: return .success(.joinRoom(roomID: data["room_id"], resume: resume))
            default: return .failure(.badRequest("join_room: resume is true or false"))
            }
        case .webrtcOffer, .webrtcAnswer:
            guard let sdp = data["sdp"]?.string else { return .failure(.badRequest("\(frame.event) needs data.sdp (a string)")) }
            let target = data["target"]?.string
            if name == .webrtcOffer {
                guard target == nil || target == "publisher" else {
                    return .failure(.wrongTarget("webrtc_offer goes to target \"publisher\" (the server offers the subscriber connection)"))
                }
                return .success(.publisherOffer(sdp: sdp))
            }
            guard target == nil || target == "subscriber" else {
                return .failure(.wrongTarget("webrtc_answer goes to target \"subscriber\" (the server answers the publisher connection)"))
            }
            return .success(.subscriberAnswer(sdp: sdp))
        case .iceCandidate:
            return .success(.iceCandidate)
        case .toggleAudio, .toggleVideo:
            guard let enabled = data["enabled"]?.bool else { return .failure(.badRequest("\(frame.event) needs data.enabled (true or false)")) }
            return .success(.toggle(name == .toggleAudio ? .audio : .video, enabled: enabled))
        case .screenShare:
            guard let enabled = data["enabled"]?.bool else { return .failure(.badRequest("screen_share needs data.enabled (true or false)")) }
            return .success(.screenShare(enabled: enabled))
        case .sendMessage:
            guard let text = data["message"]?.string, !text.isEmpty, text.count <= maxChatLength else {
                return .failure(.badRequest("send_message needs data.message (1 to \(maxChatLength) characters)"))
            }
            return .success(.sendMessage(text))
        case .startRecording:
            return .success(.startRecording)
        case .stopRecording:
            return .success(.stopRecording)
        case .captureImage:
            func text(_ key: String) -> String? { data[key].map { $0.string ?? "" } }
            return .success(.captureImage(userID: text("user_id"), source: text("source"), format: text("format")))
        case .setLayer:
            guard let track = data["track_id"]?.string, !track.isEmpty, track.count <= maxTrackIDLength else {
                return .failure(.badRequest("set_layer needs data.track_id"))
            }
            var caps: [Int?] = []
            for key in ["max_spatial", "max_temporal"] {
                switch data[key] {
                case nil, .null?: caps.append(nil)
                case let value?:
                    guard let n = value.integer, (0...3).contains(n) else {
                        return .failure(.badRequest("set_layer: max_spatial and max_temporal are integers 0 to 3 (0 = lowest) or null"))
                    }
                    caps.append(n)
                }
            }
            return .success(.setLayer(trackID: track, maxSpatial: caps[0], maxTemporal: caps[1]))
        case .restartICE:
            guard data["target"]?.string == ConnectionTarget.subscriber.rawValue else {
                return .failure(.badRequest("restart_ice needs data.target \"subscriber\" (the publisher connection restarts ICE with a new webrtc_offer)"))
            }
            return .success(.restartICE)
        case .recordingConsent:
            guard let granted = data["granted"]?.bool else { return .failure(.badRequest("recording_consent needs data.granted (true or false)")) }
            return .success(.recordingConsent(granted: granted))
        case .leaveRoom:
            return .success(.leaveRoom)
        }
    }
}

/// What goes out to one client, in order: the room's signals and the session's own answers.
package enum SessionSignal: Sendable, Equatable {
    case room(RoomSignal)
    /// A resumed participant's `joined_room` (the room's `.joined` as it is now, `resumed: true`).
    case resumed(RoomSignal)
    /// The session refused an event (`bad_request`, `not_joined`, `rate_limited`...): the connection stays.
    case error(code: String, message: String)
    /// The session ends with this code (`token_room_mismatch`, `rate_limited`, `bad_message`...).
    case removed(code: String, message: String)

    /// The contract's code of a signal that ends the session, nil for any other.
    package var removalCode: String? {
        switch self {
        case .removed(let code, _): code
        case .room(.removed(let reason, _)): reason.code
        default: nil
        }
    }
}

extension RoomRefusal {
    /// The `error` event's code (docs/SIGNALING.md).
    package var code: String {
        switch self {
        case .permissionDenied: "permission_denied"
        case .badOffer: "bad_offer"
        case .badAnswer: "bad_answer"
        case .mutedByServer: "muted_by_server"
        }
    }
}

extension RemovalReason {
    /// The `error` event's code before the close, and the leave reason stored for the session.
    package var code: String {
        switch self {
        case .replaced: "replaced"
        case .roomClosed: "room_closed"
        case .connectionLost: "connection_lost"
        case .removedByApplication: "removed"
        }
    }
}

/// An event the server sends (PROTOCOL.md "Signaling"): a case per event, each with its data as a
/// `Codable` payload, encoded in one place (``encoded()``).
package enum ServerEvent: Sendable, Equatable, Encodable {
    case joinedRoom(JoinedRoom)
    case webrtcAnswer(SDP)
    case webrtcOffer(SDP)
    case userJoined(Peer)
    case userLeft(PeerRef)
    case trackPublished(Track)
    case trackUnpublished(TrackRef)
    case trackPaused(TrackPaused)
    case trackResumed(TrackRef)
    case audioToggled(Toggled)
    case videoToggled(Toggled)
    case screenShareToggled(Toggled)
    case chatMessage(Chat)
    case recordingStarted(Recording)
    case recordingStopped(Recording)
    case imageCaptured(ImageCaptured)
    case iceRestarted(Target)
    case recordingConsent(Consent)
    case error(ErrorData)

    package struct JoinedRoom: Codable, Sendable, Equatable {
        package var roomID, peerID, userID, role, name: String
        package var participants: [Participant]
        package var iceServers: [ICEServerEntry]
        /// True when this is a resumed participant (the same peer, its connections kept).
        package var resumed = false
        /// The room's recent chat, oldest first (a late joiner sees what was said).
        package var messages: [Chat] = []
        /// The room's rule, `notice` or `required`; with `required`, the answers given so far.
        package var recordingConsent = "notice"
        package var consents: [ConsentLine]?
    }
    /// One answer in `joined_room`'s `consents`, with when it was given.
    package struct ConsentLine: Codable, Sendable, Equatable {
        package var userID: String
        package var granted: Bool
        package var at: String
    }
    /// `recording_consent`: `recordingID` is the recording in progress (null when none).
    package struct Consent: Codable, Sendable, Equatable {
        package var recordingID: String?
        package var userID: String
        package var granted: Bool
        package init(recordingID: String?, userID: String, granted: Bool) {
            self.recordingID = recordingID
            self.userID = userID
            self.granted = granted
        }
        package func encode(to encoder: any Encoder) throws {
            // `recording_id` is null, not absent, when nothing is recording.
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(recordingID, forKey: .recordingID)
            try c.encode(userID, forKey: .userID)
            try c.encode(granted, forKey: .granted)
        }
    }
    package struct Participant: Codable, Sendable, Equatable {
        package var peerID, userID, name, role: String
        package var tracks: [TrackInfoData]
    }
    package struct SDP: Codable, Sendable, Equatable { package var target, sdp: String }
    package struct Peer: Codable, Sendable, Equatable { package var peerID, userID, name, role: String }
    package struct PeerRef: Codable, Sendable, Equatable { package var peerID, userID: String }
    package struct TrackInfoData: Codable, Sendable, Equatable {
        package var trackID, kind, source: String
        package var muted, simulcast: Bool
    }
    package struct Track: Codable, Sendable, Equatable {
        package var peerID, trackID, kind, source: String
        package var muted, simulcast: Bool
    }
    package struct TrackRef: Codable, Sendable, Equatable { package var peerID, trackID: String }
    package struct TrackPaused: Codable, Sendable, Equatable { package var peerID, trackID, reason: String }
    package struct Toggled: Codable, Sendable, Equatable {
        package var peerID, userID: String
        package var enabled: Bool
    }
    package struct Chat: Codable, Sendable, Equatable { package var peerID, userID, message, timestamp: String }
    package struct Recording: Codable, Sendable, Equatable { package var recordingID: String }
    package struct ImageCaptured: Codable, Sendable, Equatable { package var snapshotID, userID: String }
    package struct Target: Codable, Sendable, Equatable { package var target: String }
    package struct ErrorData: Codable, Sendable, Equatable { package var code, message: String }

    /// The contract's server event names (PROTOCOL.md, docs/SIGNALING.md): the only place they are
    /// spelled; encoding maps each case to one, decoding switches over them.
    package enum Name: String, CaseIterable, Sendable {
        case joinedRoom = "joined_room"
        case webrtcAnswer = "webrtc_answer"
        case webrtcOffer = "webrtc_offer"
        case userJoined = "user_joined"
        case userLeft = "user_left"
        case trackPublished = "track_published"
        case trackUnpublished = "track_unpublished"
        case trackPaused = "track_paused"
        case trackResumed = "track_resumed"
        case audioToggled = "audio_toggled"
        case videoToggled = "video_toggled"
        case screenShareToggled = "screen_share_toggled"
        case chatMessage = "chat_message"
        case recordingStarted = "recording_started"
        case recordingStopped = "recording_stopped"
        case imageCaptured = "image_captured"
        case iceRestarted = "ice_restarted"
        case recordingConsent = "recording_consent"
        case error = "error"
    }

    /// This event's name.
    package var kind: Name {
        switch self {
        case .joinedRoom: .joinedRoom
        case .webrtcAnswer: .webrtcAnswer
        case .webrtcOffer: .webrtcOffer
        case .userJoined: .userJoined
        case .userLeft: .userLeft
        case .trackPublished: .trackPublished
        case .trackUnpublished: .trackUnpublished
        case .trackPaused: .trackPaused
        case .trackResumed: .trackResumed
        case .audioToggled: .audioToggled
        case .videoToggled: .videoToggled
        case .screenShareToggled: .screenShareToggled
        case .chatMessage: .chatMessage
        case .recordingStarted: .recordingStarted
        case .recordingStopped: .recordingStopped
        case .imageCaptured: .imageCaptured
        case .iceRestarted: .iceRestarted
        case .recordingConsent: .recordingConsent
        case .error: .error
        }
    }

    /// The contract's event name.
    package var name: String { kind.rawValue }

    package func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: SignalingJSON.EnvelopeKeys.self)
        try c.encode(name, forKey: .event)
        switch self {
        case .joinedRoom(let d): try c.encode(d, forKey: .data)
        case .webrtcAnswer(let d), .webrtcOffer(let d): try c.encode(d, forKey: .data)
        case .userJoined(let d): try c.encode(d, forKey: .data)
        case .userLeft(let d): try c.encode(d, forKey: .data)
        case .trackPublished(let d): try c.encode(d, forKey: .data)
        case .trackUnpublished(let d), .trackResumed(let d): try c.encode(d, forKey: .data)
        case .trackPaused(let d): try c.encode(d, forKey: .data)
        case .audioToggled(let d), .videoToggled(let d), .screenShareToggled(let d): try c.encode(d, forKey: .data)
        case .chatMessage(let d): try c.encode(d, forKey: .data)
        case .recordingStarted(let d), .recordingStopped(let d): try c.encode(d, forKey: .data)
        case .imageCaptured(let d): try c.encode(d, forKey: .data)
        case .iceRestarted(let d): try c.encode(d, forKey: .data)
        case .recordingConsent(let d): try c.encode(d, forKey: .data)
        case .error(let d): try c.encode(d, forKey: .data)
        }
    }

    /// The text frame: `{"event": ..., "data": {...}}`, keys in snake_case.
    package func encoded() throws -> String {
        String(decoding: try SignalingJSON.encoder.encode(self), as: UTF8.self)
    }

    /// What the session sends as the event the client gets; `joined_room` carries `iceServers` for
    /// the joining user (with TURN credentials of their own, made at `nowSeconds`).
    package init(_ signal: SessionSignal, iceServers: ICEServerDirectory, nowSeconds: Int64) {
        switch signal {
        case .room(let s): self.init(s, iceServers: iceServers, nowSeconds: nowSeconds)
        case .resumed(let s):
            self.init(s, iceServers: iceServers, nowSeconds: nowSeconds)
            if case .joinedRoom(var data) = self {
                data.resumed = true
                self = .joinedRoom(data)
            }
        case .error(let code, let message), .removed(let code, let message): self = .error(ErrorData(code: code, message: message))
        }
    }

    /// With plain STUN/TURN URLs only.
    package init(_ signal: SessionSignal, iceServers: [String]) {
        self.init(signal, iceServers: ICEServerDirectory(urls: iceServers), nowSeconds: 0)
    }

    /// With plain STUN/TURN URLs only.
    package init(_ signal: RoomSignal, iceServers: [String]) {
        self.init(signal, iceServers: ICEServerDirectory(urls: iceServers), nowSeconds: 0)
    }

    /// A room signal as the event the client is sent.
    package init(_ signal: RoomSignal, iceServers: ICEServerDirectory, nowSeconds: Int64) {
        func peer(_ p: PeerInfo) -> Peer { Peer(peerID: p.peerID, userID: p.userID, name: p.name, role: p.role) }
        func track(_ t: TrackInfo) -> TrackInfoData {
            TrackInfoData(trackID: t.trackID, kind: t.kind.rawValue, source: t.source.rawValue, muted: t.muted, simulcast: t.simulcast)
        }
        switch signal {
        case .joined(let roomID, let p, let participants, let messages, let consents):
            self = .joinedRoom(JoinedRoom(
                roomID: roomID, peerID: p.peerID, userID: p.userID, role: p.role, name: p.name,
                participants: participants.map { Participant(peerID: $0.peer.peerID, userID: $0.peer.userID, name: $0.peer.name,
                                                             role: $0.peer.role, tracks: $0.tracks.map(track)) },
                iceServers: iceServers.servers(userID: p.userID, nowSeconds: nowSeconds),
                messages: messages.map { Chat(peerID: $0.peerID, userID: $0.userID, message: $0.message, timestamp: ControlAPI.iso8601($0.timestampMillis)) },
                recordingConsent: consents == nil ? "notice" : "required",
                consents: consents?.map { ConsentLine(userID: $0.userID, granted: $0.granted, at: ControlAPI.iso8601($0.atMillis)) }))
        case .publisherAnswer(let sdp): self = .webrtcAnswer(SDP(target: "publisher", sdp: sdp))
        case .subscriberOffer(let sdp): self = .webrtcOffer(SDP(target: "subscriber", sdp: sdp))
        case .userJoined(let p): self = .userJoined(peer(p))
        case .userLeft(let peerID, let userID): self = .userLeft(PeerRef(peerID: peerID, userID: userID))
        case .trackPublished(let peerID, let t):
            self = .trackPublished(Track(peerID: peerID, trackID: t.trackID, kind: t.kind.rawValue, source: t.source.rawValue,
                                         muted: t.muted, simulcast: t.simulcast))
        case .trackUnpublished(let peerID, let trackID): self = .trackUnpublished(TrackRef(peerID: peerID, trackID: trackID))
        case .trackPaused(let peerID, let trackID): self = .trackPaused(TrackPaused(peerID: peerID, trackID: trackID, reason: "bandwidth"))
        case .trackResumed(let peerID, let trackID): self = .trackResumed(TrackRef(peerID: peerID, trackID: trackID))
        case .toggled(let kind, let peerID, let userID, let enabled):
            let data = Toggled(peerID: peerID, userID: userID, enabled: enabled)
            self = switch kind {
            case .audio: .audioToggled(data)
            case .video: .videoToggled(data)
            case .screenShare: .screenShareToggled(data)
            }
        case .chat(let peerID, let userID, let message, let timestamp):
            self = .chatMessage(Chat(peerID: peerID, userID: userID, message: message, timestamp: ControlAPI.iso8601(timestamp)))
        case .recordingStarted(let id): self = .recordingStarted(Recording(recordingID: id))
        case .recordingStopped(let id): self = .recordingStopped(Recording(recordingID: id))
        case .imageCaptured(let snapshotID, let userID): self = .imageCaptured(ImageCaptured(snapshotID: snapshotID, userID: userID))
        case .iceRestarted(let target): self = .iceRestarted(Target(target: target.rawValue))
        case .recordingConsent(let recordingID, let userID, let granted):
            self = .recordingConsent(Consent(recordingID: recordingID, userID: userID, granted: granted))
        case .refused(let refusal, let message): self = .error(ErrorData(code: refusal.code, message: message))
        case .removed(let reason, let message): self = .error(ErrorData(code: reason.code, message: message))
        }
    }
}

/// The signaling wire's JSON, one encoder and one decoder for both directions and both ends (the
/// server and `sfu-load`): keys in snake_case from the Swift names, `peerID` <-> `peer_id`.
package enum SignalingJSON {
    package enum EnvelopeKeys: String, CodingKey { case event, data }

    /// A key named at run time (the data of a client event).
    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    package static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// The reverse of `convertToSnakeCase` for our names: Foundation's `convertFromSnakeCase` makes
    /// `peer_id` `peerId`, which no Swift name here is; an `id` or `url` word is upper-cased.
    package static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .custom { path in
            guard let last = path.last else { return Key("") }
            return Key(camelCase(last.stringValue))
        }
        return d
    }()

    static let acronyms: Set<Substring> = ["id", "url"]

    static func camelCase(_ snake: String) -> String {
        let words = snake.split(separator: "_", omittingEmptySubsequences: false)
        guard let first = words.first, words.count > 1 else { return snake }
        return words.dropFirst().reduce(String(first)) { name, word in
            name + (acronyms.contains(word) ? word.uppercased() : word.prefix(1).uppercased() + word.dropFirst())
        }
    }
}

extension ClientEvent: Encodable {
    /// The contract's client event names (PROTOCOL.md, docs/SIGNALING.md): the only place they are
    /// spelled. Decoding switches over these, encoding maps each case to one, so a new event is
    /// added here and the compiler asks for it in both directions.
    package enum Name: String, CaseIterable, Sendable {
        case joinRoom = "join_room"
        case webrtcOffer = "webrtc_offer"
        case webrtcAnswer = "webrtc_answer"
        case iceCandidate = "ice_candidate"
        case toggleAudio = "toggle_audio"
        case toggleVideo = "toggle_video"
        case screenShare = "screen_share"
        case sendMessage = "send_message"
        case startRecording = "start_recording"
        case stopRecording = "stop_recording"
        case captureImage = "capture_image"
        case setLayer = "set_layer"
        case restartICE = "restart_ice"
        case recordingConsent = "recording_consent"
        case leaveRoom = "leave_room"
    }

    /// This event's name.
    package var kind: Name {
        switch self {
        case .joinRoom: .joinRoom
        case .publisherOffer: .webrtcOffer
        case .subscriberAnswer: .webrtcAnswer
        case .iceCandidate: .iceCandidate
        case .toggle(.audio, _): .toggleAudio
        case .toggle(.video, _): .toggleVideo
        case .screenShare: .screenShare
        case .sendMessage: .sendMessage
        case .startRecording: .startRecording
        case .stopRecording: .stopRecording
        case .captureImage: .captureImage
        case .setLayer: .setLayer
        case .restartICE: .restartICE
        case .recordingConsent: .recordingConsent
        case .leaveRoom: .leaveRoom
        }
    }

    /// The contract's event name.
    package var name: String { kind.rawValue }

    /// What a client sends (`sfu-load`, the tests): the frame ``decode(_:)`` reads back as this event.
    package func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: SignalingJSON.EnvelopeKeys.self)
        try c.encode(name, forKey: .event)
        var data = c.nestedContainer(keyedBy: SignalingJSON.Key.self, forKey: .data)
        func put(_ key: String, _ value: (some Encodable)?) throws {
            if let value { try data.encode(value, forKey: SignalingJSON.Key(key)) }
        }
        switch self {
        case .joinRoom(let roomID, let resume):
            try put("room_id", roomID)
            if resume { try put("resume", true) }
        case .publisherOffer(let sdp):
            try put("target", "publisher")
            try put("sdp", sdp)
        case .subscriberAnswer(let sdp):
            try put("target", "subscriber")
            try put("sdp", sdp)
        case .toggle(_, let enabled), .screenShare(let enabled): try put("enabled", enabled)
        case .sendMessage(let text): try put("message", text)
        case .captureImage(let userID, let source, let format):
            try put("user_id", userID)
            try put("source", source)
            try put("format", format)
        case .setLayer(let trackID, let maxSpatial, let maxTemporal):
            try put("track_id", trackID)
            try data.encode(maxSpatial, forKey: SignalingJSON.Key("max_spatial"))
            try data.encode(maxTemporal, forKey: SignalingJSON.Key("max_temporal"))
        case .restartICE: try put("target", ConnectionTarget.subscriber.rawValue)
        case .recordingConsent(let granted): try put("granted", granted)
        case .iceCandidate, .startRecording, .stopRecording, .leaveRoom: break
        }
    }

    /// The text frame a client sends.
    package func encoded() throws -> String {
        String(decoding: try SignalingJSON.encoder.encode(self), as: UTF8.self)
    }
}

extension ServerEvent: Decodable {
    /// What a client reads (`sfu-load`, the tests): an event of the contract, or nil for a frame
    /// that is not one (an unknown event name, a missing or mistyped field).
    package static func decode(_ text: String) -> ServerEvent? {
        try? SignalingJSON.decoder.decode(ServerEvent.self, from: Data(text.utf8))
    }

    package init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: SignalingJSON.EnvelopeKeys.self)
        let raw = try c.decode(String.self, forKey: .event)
        guard let name = Name(rawValue: raw) else {
            throw DecodingError.dataCorruptedError(forKey: .event, in: c, debugDescription: "unknown event '\(raw.prefix(64))'")
        }
        func data<T: Decodable>(_ type: T.Type = T.self) throws -> T { try c.decode(T.self, forKey: .data) }
        switch name {
        case .joinedRoom: self = .joinedRoom(try data())
        case .webrtcAnswer: self = .webrtcAnswer(try data())
        case .webrtcOffer: self = .webrtcOffer(try data())
        case .userJoined: self = .userJoined(try data())
        case .userLeft: self = .userLeft(try data())
        case .trackPublished: self = .trackPublished(try data())
        case .trackUnpublished: self = .trackUnpublished(try data())
        case .trackPaused: self = .trackPaused(try data())
        case .trackResumed: self = .trackResumed(try data())
        case .audioToggled: self = .audioToggled(try data())
        case .videoToggled: self = .videoToggled(try data())
        case .screenShareToggled: self = .screenShareToggled(try data())
        case .chatMessage: self = .chatMessage(try data())
        case .recordingStarted: self = .recordingStarted(try data())
        case .recordingStopped: self = .recordingStopped(try data())
        case .imageCaptured: self = .imageCaptured(try data())
        case .iceRestarted: self = .iceRestarted(try data())
        case .recordingConsent: self = .recordingConsent(try data())
        case .error: self = .error(try data())
        }
    }
}
