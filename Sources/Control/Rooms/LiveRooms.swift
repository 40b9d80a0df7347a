import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SFU

/// The rooms that have a live ``Room`` on a media worker. A room is made on its first join, pinned
/// to one worker (round robin), and lives until it is closed (API, empty timeout, max duration).
package final class LiveRooms: Sendable {
    package struct Live: Sendable {
        package let worker: MediaWorker
        package let room: NIOLoopBound<Room>

        /// Runs `body` with the room on its worker's loop.
        package func run<T: Sendable>(_ body: @escaping @Sendable (Room) throws -> T) async throws -> T {
            let room = self.room
            return try await worker.submit { try body(room.value) }
        }
    }

    let media: MediaRuntime
    let logger: Logger
    private let rooms = NIOLockedValueBox<[String: Live]>([:])
    /// Rooms closed since the start: a join that raced the close (or carries a room record read
    /// before it) must not make the room live again.
    private let closed = NIOLockedValueBox<Set<String>>([])
    /// Tokens refused after their user was removed (``TokenRevocations``).
    package let revocations = TokenRevocations()

    package init(media: MediaRuntime, logger: Logger) {
        self.media = media
        self.logger = logger
    }

    /// The live room for `record`, made on a worker if it has none yet.
    /// - Throws: ``RoomJoinError/closed`` when the room was closed (whatever `record` says).
    package func room(for record: RoomRecord) async throws -> Live {
        if let live = existing(record.id) { return live }
        guard record.closedAt == nil, !isClosed(record.id) else { throw RoomJoinError.closed }
        let worker = media.pickWorker()
        let candidates = media.candidates(for: worker)
        let context = media.dtlsContext
        let logger = self.logger
        let made = try await worker.submit {
            let room = Room(id: record.id, maxParticipants: record.maxParticipants, host: worker, dtlsContext: context,
                            candidates: candidates, logger: logger)
            room.recordingConsentRequired = record.consentRequired
            return Live(worker: worker, room: NIOLoopBound(room, eventLoop: worker.eventLoop))
        }
        let (live, raced) = rooms.withLockedValue { rooms -> (Live, Bool) in
            if let other = rooms[record.id] { return (other, false) }  // a concurrent first join won
            // Checked under the lock `close` takes first: a close that ran meanwhile wins.
            if closed.withLockedValue({ $0.contains(record.id) }) { return (made, true) }
            rooms[record.id] = made
            return (made, false)
        }
        if raced {
            _ = try? await made.run { $0.close(message: "the room closed") }
            throw RoomJoinError.closed
        }
        return live
    }

    /// Whether `id` was closed while this server ran.
    package func isClosed(_ id: String) -> Bool { closed.withLockedValue { $0.contains(id) } }

    package func existing(_ id: String) -> Live? { rooms.withLockedValue { $0[id] } }

    package var all: [(id: String, live: Live)] { rooms.withLockedValue { $0.map { ($0.key, $0.value) } } }

    /// Closes a live room: everyone is told `room_closed` and disconnected.
    package func close(_ id: String, message: String) async {
        guard let live = rooms.withLockedValue({ rooms -> Live? in
            closed.withLockedValue { _ = $0.insert(id) }
            return rooms.removeValue(forKey: id)
        }) else { return }
        _ = try? await live.run { $0.close(message: message) }
    }

    /// Closes every live room (server shutdown).
    package func closeAll(message: String) async {
        for (id, _) in all { await close(id, message: message) }
    }
}
