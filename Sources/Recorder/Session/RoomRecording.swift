import Foundation
import SFU

/// A `tracks` recording of one room: an observer of the room that keeps one ParticipantRecording
/// (one file) per publishing participant and source (camera with microphone; screen share),
/// attaching to tracks as they are published and finishing a participant's files when it leaves.
/// With consent required (``Room/mayRecord(_:)``), a participant is recorded only while it has
/// granted consent: withdrawing finishes its files as a leave does, granting again starts new ones.
/// Confined to the room's loop.
package final class RoomRecording: RoomObserver {
    package let id: String
    package let directory: String
    private struct Key: Hashable {
        var peerID: String
        var source: TrackSource
    }
    private var files: [Key: ParticipantRecording] = [:]
    /// Files made so far per participant and source (a later one gets its own name).
    private var made: [Key: Int] = [:]
    private var done: [PendingFile] = []
    package private(set) var isStopped = false

    package init(id: String, directory: String) {
        self.id = id
        self.directory = directory
    }

    /// Starts recording everything `room` publishes now and later, and tells everyone in the room.
    package func start(in room: Room) {
        room.addObserver(self)
        room.activeRecordingID = id
        for (peer, producer) in room.publishedTracks() where room.mayRecord(peer) {
            file(for: peer, source: ParticipantRecording.fileSource(of: producer)).attach(producer)
        }
        room.broadcast(.recordingStarted(id: id))
    }

    /// Stops, tells everyone, and returns the files to finalize.
    package func stop(in room: Room) -> [PendingFile] {
        guard !isStopped else { return [] }
        isStopped = true
        room.removeObserver(self)
        if room.activeRecordingID == id { room.activeRecordingID = nil }
        room.broadcast(.recordingStopped(id: id))
        for f in files.values.sorted(by: { $0.fileID < $1.fileID }) { done.append(f.stop()) }
        files.removeAll()
        return done
    }

    private func file(for peer: PeerInfo, source: TrackSource) -> ParticipantRecording {
        let key = Key(peerID: peer.peerID, source: source)
        if let f = files[key] { return f }
        made[key, default: 0] += 1
        let f = ParticipantRecording(peer: peer, source: source, directory: directory, fileID: ResourceID.file.make(), part: made[key] ?? 1)
        files[key] = f
        return f
    }


    package func room(_ room: Room, didPublish producer: Producer, of peer: PeerInfo, nowNanos: Int64) {
        guard !isStopped, room.mayRecord(peer) else { return }
        file(for: peer, source: ParticipantRecording.fileSource(of: producer)).attach(producer)
    }

    package func room(_ room: Room, didUnpublish producer: Producer, of peer: PeerInfo) {
        files[Key(peerID: peer.peerID, source: ParticipantRecording.fileSource(of: producer))]?.detach(producer)
    }

    package func room(_ room: Room, didChangeConsentOf peer: PeerInfo, nowNanos: Int64) {
        guard !isStopped else { return }
        if room.mayRecord(peer) {
            for (publisher, producer) in room.publishedTracks() where publisher.peerID == peer.peerID {
                file(for: peer, source: ParticipantRecording.fileSource(of: producer)).attach(producer)
            }
        } else {
            finishFiles(of: peer)
        }
    }

    package func room(_ room: Room, didRemove peer: PeerInfo) {
        finishFiles(of: peer)
    }

    private func finishFiles(of peer: PeerInfo) {
        for key in files.keys.filter({ $0.peerID == peer.peerID }).sorted(by: { $0.source.rawValue < $1.source.rawValue }) {
            // Finished now, closed now (the metadata is still collected at stop): a recording of a
            // long call with many joins and leaves does not keep a descriptor per departed file.
            guard let f = files.removeValue(forKey: key) else { continue }
            let pending = f.stop()
            pending.closeSoon()
            done.append(pending)
        }
    }
}
