import Foundation
import Logging

/// Closes rooms whose time is up (PROTOCOL.md room options): empty for `empty_timeout_s` (since
/// creation or since the last participant left), or open for `max_duration_s`. Closing goes through
/// ``RoomLifecycle``, as a close through the API does.
/// Runs as a background task, once a second; the store is the source of truth.
package struct RoomJanitor: Sendable {
    package let store: MetadataStore
    package let webhooks: WebhookDispatcher?
    package let logger: Logger
    package let live: LiveRooms?
    package let recordings: RecordingService?

    package init(store: MetadataStore, webhooks: WebhookDispatcher?, logger: Logger, live: LiveRooms? = nil, recordings: RecordingService? = nil) {
        self.live = live
        self.recordings = recordings
        self.store = store
        self.webhooks = webhooks
        self.logger = logger
    }

    var lifecycle: RoomLifecycle { RoomLifecycle(store: store, webhooks: webhooks, live: live, recordings: recordings, logger: logger) }

    /// One pass; returns the ids closed.
    @discardableResult
    package func sweep(nowMillis: Int64) async throws -> [String] {
        var closed: [String] = []
        for occupancy in try await store.openRoomOccupancy() {
            let room = occupancy.room
            let present = occupancy.present > 0
            let emptySince = occupancy.lastLeftAt.map { max($0, room.createdAt) } ?? room.createdAt
            let reason: RoomLifecycle.CloseReason?
            if nowMillis - room.createdAt >= Int64(room.maxDurationS) * 1000 {
                reason = .maxDuration
            } else if !present, nowMillis - emptySince >= Int64(room.emptyTimeoutS) * 1000 {
                reason = .emptyTimeout
            } else {
                reason = nil
            }
            guard let reason else { continue }
            try await lifecycle.close(room, reason: reason, nowMillis: nowMillis)
            closed.append(room.id)
        }
        return closed
    }

    /// Sweeps every `interval` until the task is cancelled; a failed pass (database down) is logged and retried.
    package func run(interval: Duration = .seconds(1)) async {
        while !Task.isCancelled {
            do {
                try await sweep(nowMillis: MetadataStore.nowMillis)
            } catch {
                logger.warning("room janitor pass failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: interval)
        }
    }
}
