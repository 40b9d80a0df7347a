import Foundation

/// audio or video.
package enum MediaKind: String, Sendable, Equatable, Codable {
    case audio, video
}

/// Where a track comes from (PROTOCOL.md `source`).
package enum TrackSource: String, Sendable, Equatable, Codable {
    case microphone, camera, screen
}

/// Who a participant is, from its join token.
package struct PeerInfo: Sendable, Equatable {
    package var peerID: String
    package var userID: String
    package var name: String
    package var role: String
    package var canPublish: Bool
    package var canSubscribe: Bool

    package init(peerID: String, userID: String, name: String, role: String, canPublish: Bool, canSubscribe: Bool) {
        self.peerID = peerID
        self.userID = userID
        self.name = name
        self.role = role
        self.canPublish = canPublish
        self.canSubscribe = canSubscribe
    }
}

/// A published track as the signaling and the API show it.
package struct TrackInfo: Sendable, Equatable {
    package var trackID: String
    package var kind: MediaKind
    package var source: TrackSource
    package var muted: Bool
    package var simulcast: Bool
}

/// A chat message as the room passed it on (`chat_message`, and the recent history in `joined_room`).
package struct ChatLine: Sendable, Equatable {
    package var peerID: String
    package var userID: String
    package var message: String
    package var timestampMillis: Int64
    package init(peerID: String, userID: String, message: String, timestampMillis: Int64) {
        self.peerID = peerID
        self.userID = userID
        self.message = message
        self.timestampMillis = timestampMillis
    }
}

/// A participant and its tracks (joined_room, the participants route).
/// A participant's answer to recording (docs/RECORDING.md "Consent"), kept by user id for the room's
/// life: the same user leaving and coming back keeps it.
package struct RecordingConsent: Sendable, Equatable {
    package var userID: String
    package var granted: Bool
    package var atMillis: Int64
    package init(userID: String, granted: Bool, atMillis: Int64) {
        self.userID = userID
        self.granted = granted
        self.atMillis = atMillis
    }
}

package struct ParticipantSummary: Sendable, Equatable {
    package var peer: PeerInfo
    package var tracks: [TrackInfo]
}

/// Live quality figures of one participant, from RTCP and our receive statistics.
package struct QualityFigures: Sendable, Equatable {
    /// Round-trip time to the participant (from its receiver reports on our sender reports), ms.
    package var rttMs: Double?
    /// Uplink loss: fraction of the participant's packets we did not receive (last interval, 0...1).
    package var uplinkLoss: Double?
    /// Downlink loss the participant reports for what we send it (0...1).
    package var downlinkLoss: Double?
    /// Interarrival jitter of what the participant sends us, ms (largest of its tracks).
    package var jitterMs: Double?
    /// Bitrate the participant publishes, bits/s (last second): in all, of its audio, of its video.
    package var publishBitrate: Int64
    package var audioBitrate: Int64 = 0
    package var videoBitrate: Int64 = 0
    /// Bitrate we send the participant, bits/s (last second).
    package var subscribeBitrate: Int64
    /// The estimated downlink to the participant, bits/s (transport-cc GCC, or its REMB).
    package var downlinkEstimate: Int64?
}

/// What one participant receives of one remote track (the participants route).
package struct SubscriptionSnapshot: Sendable, Equatable {
    package var peerID: String
    package var trackID: String
    package var kind: MediaKind
    package var source: TrackSource
    /// Paused by the allocator (the downlink cannot carry it).
    package var paused: Bool
    /// Layers for simulcast video (spatial 0 = lowest); nil otherwise or before the first keyframe.
    package var spatialLayer: Int?
    package var targetSpatialLayer: Int?
    package var temporalLayer: Int?
    package var targetTemporalLayer: Int?
    package var maxSpatial: Int?
    package var maxTemporal: Int?
    package var layerSwitches: Int
    /// Bitrate forwarded, bits/s (last second).
    package var bitrate: Int64
    /// Video: the size of the layer forwarded (from its last keyframe) and the frames forwarded a
    /// second (last second); nil for audio or before anything was forwarded.
    package var width: Int? = nil
    package var height: Int? = nil
    package var fps: Double? = nil
}

/// A live participant for the Control API.
package struct ParticipantSnapshot: Sendable, Equatable {
    package var peer: PeerInfo
    package var tracks: [TrackInfo]
    package var quality: QualityFigures
    package var joinedNanos: Int64
    package var subscriptions: [SubscriptionSnapshot] = []
}

/// What the room tells one participant's signaling connection. The Control layer turns these into
/// PROTOCOL.md events.
package enum RoomSignal: Sendable, Equatable {
    /// `messages`: the room's recent chat (``Room/chatHistoryLimit`` at most, oldest first).
    /// `consents`: nil when the room records on notice; with `required`, the answers given so far.
    case joined(roomID: String, peer: PeerInfo, participants: [ParticipantSummary], messages: [ChatLine] = [], consents: [RecordingConsent]? = nil)
    case publisherAnswer(sdp: String)
    case subscriberOffer(sdp: String)
    /// The server gave this connection new ICE credentials (the answer or offer that carries them
    /// comes with or right after this): an ICE restart.
    case iceRestarted(ConnectionTarget)
    case userJoined(PeerInfo)
    case userLeft(peerID: String, userID: String)
    case trackPublished(peerID: String, track: TrackInfo)
    case trackUnpublished(peerID: String, trackID: String)
    /// A participant switched its microphone, camera or screen share on or off.
    case toggled(ToggleKind, peerID: String, userID: String, enabled: Bool)
    case chat(peerID: String, userID: String, message: String, timestampMillis: Int64)
    case recordingStarted(id: String)
    case recordingStopped(id: String)
    /// A participant granted or withdrew its consent to be recorded (the recording in progress, if any).
    case recordingConsent(recordingID: String?, userID: String, granted: Bool)
    /// The answer to a participant's snapshot request: the snapshot taken of `userID`.
    case imageCaptured(snapshotID: String, userID: String)
    /// The subscriber's downlink cannot carry this video: forwarding stopped until it can.
    case trackPaused(peerID: String, trackID: String)
    case trackResumed(peerID: String, trackID: String)
    /// Something the participant asked was refused: the connection stays.
    case refused(RoomRefusal, message: String)
    /// The participant is out of the room; the connection must close after telling the client.
    case removed(RemovalReason, message: String)
}

/// What a participant switched on or off (``RoomSignal/toggled(_:peerID:userID:enabled:)``).
package enum ToggleKind: Sendable, Equatable {
    case audio, video, screenShare
}

/// Why the room refused what a participant asked (the Control layer names them for the client).
package enum RoomRefusal: Sendable, Equatable {
    /// Its token's permissions do not allow it (publish, subscribe).
    case permissionDenied
    /// Its publisher offer could not be answered (does not apply, too many tracks).
    case badOffer
    /// Its answer to the subscriber offer could not be applied.
    case badAnswer
    /// It tried to unmute what the room's owner muted.
    case mutedByServer
}

/// Which of a participant's two peer connections.
package enum ConnectionTarget: String, Sendable {
    case publisher, subscriber
}

/// Why a participant is no longer in the room.
package enum RemovalReason: Sendable, Equatable {
    /// The same user joined from another connection.
    case replaced
    /// The room was closed.
    case roomClosed
    /// One of its transports ended (ICE consent lost, DTLS failure or close).
    case connectionLost
    /// The application removed it (the control API).
    case removedByApplication

    /// How logs and transport close reasons name it.
    package var logName: String {
        switch self {
        case .replaced: "replaced"
        case .roomClosed: "room_closed"
        case .connectionLost: "connection_lost"
        case .removedByApplication: "removed"
        }
    }
}

/// Sees a room's tracks come and go (the recorder).
package protocol RoomObserver: AnyObject {
    func room(_ room: Room, didPublish producer: Producer, of peer: PeerInfo, nowNanos: Int64)
    func room(_ room: Room, didUnpublish producer: Producer, of peer: PeerInfo)
    func room(_ room: Room, didRemove peer: PeerInfo)
    /// A participant joined (it has published nothing yet).
    func room(_ room: Room, didJoin peer: PeerInfo, nowNanos: Int64)
    /// A track was muted or unmuted (`producer.muted` says which).
    func room(_ room: Room, didToggle producer: Producer, of peer: PeerInfo, nowNanos: Int64)
    /// With consent required, the participant granted or withdrew it (``Room/mayRecord(_:)`` says
    /// what holds now).
    func room(_ room: Room, didChangeConsentOf peer: PeerInfo, nowNanos: Int64)
}

extension RoomObserver {
    package func room(_ room: Room, didJoin peer: PeerInfo, nowNanos: Int64) {}
    package func room(_ room: Room, didToggle producer: Producer, of peer: PeerInfo, nowNanos: Int64) {}
    package func room(_ room: Room, didChangeConsentOf peer: PeerInfo, nowNanos: Int64) {}
}

/// Why a join fails.
package enum RoomJoinError: Error, Equatable, Sendable {
    case full(max: Int)
    case closed
}

/// Where a room's transports are registered and its datagrams go (the media worker).
package protocol SessionHost: DatagramSink {
    func add(_ session: WorkerSession)
    func remove(_ session: WorkerSession)
    /// The session's local ICE ufrag changed from `oldUfrag` (an ICE restart): route by the new one.
    func rekey(_ session: WorkerSession, from oldUfrag: String)
    /// Calls `session.wake(nowNanos:)` at `atNanos` (or as soon after as the host's timers allow),
    /// for pacing finer than the 20 ms tick.
    func wake(_ session: WorkerSession, atNanos: Int64)
    /// The number of the write batch a datagram sent now goes out in; ``writtenNanos(batch:)``
    /// says when that batch was written to the socket (the datagram's real send time).
    var writeBatch: UInt64 { get }
    /// When write batch `batch` was written; nil if not yet, or too long ago to remember.
    func writtenNanos(batch: UInt64) -> Int64?
}

extension SessionHost {
    /// A host without timers: the session's next tick comes instead.
    package func wake(_ session: WorkerSession, atNanos: Int64) {}
    /// A host that sends at once: the time a datagram was queued is its send time.
    package var writeBatch: UInt64 { 0 }
    package func writtenNanos(batch: UInt64) -> Int64? { nil }
}

enum RandomID {
    static let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)
    static func make(_ prefix: String, length: Int = 12) -> String {
        var g = SystemRandomNumberGenerator()
        return prefix + String(decoding: (0..<length).map { _ in alphabet[Int(g.next(upperBound: UInt32(alphabet.count)))] }, as: UTF8.self)
    }
}
