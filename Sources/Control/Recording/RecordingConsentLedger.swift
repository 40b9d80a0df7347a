import Foundation
import SFU

/// A recording's consent list (PROTOCOL.md `consents: [{user_id, granted, at}]`, docs/RECORDING.md
/// "Consent"), kept while it records a room that requires consent: each participant who may
/// publish with its answer when the recording started (or when it joined later), then every change.
/// A room observer confined to the room's loop; its lines go out in order through `add` (the
/// recording service's writer, which stores them one after the other).
final class RecordingConsentLedger: RoomObserver {
    private let add: @Sendable (RecordingConsent) -> Void
    private let clock: @Sendable () -> Int64

    init(clock: @escaping @Sendable () -> Int64 = { MetadataStore.nowMillis }, add: @escaping @Sendable (RecordingConsent) -> Void) {
        self.clock = clock
        self.add = add
    }

    /// Writes everyone's answer as it stands and follows the room; nothing in a room on notice.
    func start(in room: Room) {
        guard room.recordingConsentRequired else { return }
        room.addObserver(self)
        let now = clock()
        for summary in room.summaries() where summary.peer.canPublish { note(summary.peer, in: room, nowMillis: now) }
    }

    func stop(in room: Room) { room.removeObserver(self) }

    /// The participant's answer: when it was given, or (none yet: not granted) now.
    private func note(_ peer: PeerInfo, in room: Room, nowMillis: Int64) {
        if let c = room.recordingConsents[peer.userID] {
            add(c)
        } else {
            add(RecordingConsent(userID: peer.userID, granted: false, atMillis: nowMillis))
        }
    }

    func room(_ room: Room, didJoin peer: PeerInfo, nowNanos: Int64) {
        guard peer.canPublish else { return }
        note(peer, in: room, nowMillis: clock())
    }

    func room(_ room: Room, didChangeConsentOf peer: PeerInfo, nowNanos: Int64) {
        note(peer, in: room, nowMillis: clock())
    }

    func room(_ room: Room, didPublish producer: Producer, of peer: PeerInfo, nowNanos: Int64) {}
    func room(_ room: Room, didUnpublish producer: Producer, of peer: PeerInfo) {}
    func room(_ room: Room, didRemove peer: PeerInfo) {}
}
