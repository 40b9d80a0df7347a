import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SFU

/// The rooms that have a live ``Room`` on a media worker. A room is made on its first join, pinned
/// to one worker (round robin), and lives until it is closed (API, empty timeout, max duration).
public final class LiveRooms: Sendable {
    public struct Live: Sendable {
        public let worker: MediaWorker
        public let room: NIOLoopBound<Room>

        /// Runs `body` with the room on its worker's loop.
        public func run<T: Sendable>(_ body: @escaping @Sendable (Room) throws -> T) async throws -> T {
            let room = self.room
            return try await worker.submit { try body(room.value) }
        }
    }

    let media: MediaRuntime
    let logger: Logger
    private let rooms = NIOLockedValueBox<[String: Live]>([:])

    public init(media: MediaRuntime, logger: Logger) {
        self.media = media
        self.logger = logger
    }

    /// The live room for `record`, made on a worker if it has none yet.
    public func room(for record: RoomRecord) async throws -> Live {
        if let live = existing(record.id) { return live }
        let worker = media.pickWorker()
        let candidates = media.candidates(for: worker)
        let context = media.dtlsContext
        let logger = self.logger
        let made = try await worker.submit {
            Live(worker: worker, room: NIOLoopBound(Room(id: record.id, maxParticipants: record.maxParticipants, host: worker, dtlsContext: context,
                                                       candidates: candidates, logger: logger), eventLoop: worker.eventLoop))
        }
        return rooms.withLockedValue { rooms in
            if let other = rooms[record.id] { return other }  // a concurrent first join won
            rooms[record.id] = made
            return made
        }
    }

    public func existing(_ id: String) -> Live? { rooms.withLockedValue { $0[id] } }

    public var all: [(id: String, live: Live)] { rooms.withLockedValue { $0.map { ($0.key, $0.value) } } }

    /// Closes a live room: everyone is told `room_closed` and disconnected.
    public func close(_ id: String, message: String) async {
        guard let live = rooms.withLockedValue({ $0.removeValue(forKey: id) }) else { return }
        _ = try? await live.run { $0.close(message: message) }
    }

    /// Closes every live room (server shutdown).
    public func closeAll(message: String) async {
        for (id, _) in all { await close(id, message: message) }
    }
}
