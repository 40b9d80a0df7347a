import Foundation
import Logging

/// Deleting recordings: `DELETE /v1/recordings/{id}` and the retention schedule
/// (`SFU_RECORDING_RETENTION_DAYS`). The files go (each file, then the recording's folder if
/// empty); the metadata stays with status `deleted` and `deleted_at` (for the audit trail, which
/// gets `recording_deleted`), and a `recording_deleted` webhook is sent. A recording still being
/// written (recording, processing) is not deleted.
package struct RecordingDeletion: Sendable {
    let store: MetadataStore
    let webhooks: WebhookDispatcher?
    let logger: Logger
    /// Where files with an `object_key` are (their objects are deleted too).
    let storage: S3Client?

    package init(store: MetadataStore, webhooks: WebhookDispatcher?, logger: Logger, storage: S3Client? = nil) {
        self.storage = storage
        self.store = store
        self.webhooks = webhooks
        self.logger = logger
    }

    package enum Failure: Error, Equatable {
        case notFound
        /// Still recording or processing: stop it first.
        case active(RecordingRecord.Status)
    }

    /// Deletes a finished recording's files and marks it deleted; `actor` for the audit trail
    /// (`api`, or `server` for retention). Deleting a deleted recording returns it unchanged.
    @discardableResult
    package func delete(id: String, actor: String, reason: String? = nil, nowMillis: Int64 = MetadataStore.nowMillis) async throws -> RecordingRecord {
        guard let record = try await store.recording(id: id) else { throw Failure.notFound }
        switch record.status {
        case .deleted: return record
        case .recording, .processing: throw Failure.active(record.status)
        case .completed, .failed: break
        }
        var failures: [String] = []
        for file in record.files {
            guard let key = file.objectKey else { continue }
            guard let storage else {
                failures.append("\(file.id): in S3 storage, and this server has no SFU_STORAGE_URL")
                continue
            }
            do { try await storage.delete(key: key) } catch { failures.append("\(file.id): \(error)") }
        }
        for file in record.files where FileManager.default.fileExists(atPath: file.path) {
            do { try FileManager.default.removeItem(atPath: file.path) } catch { failures.append("\(file.id): \(error)") }
        }
        // The recording's own folder, when nothing else is left in it.
        let folders = Set(record.files.map { ($0.path as NSString).deletingLastPathComponent })
        for folder in folders where (try? FileManager.default.contentsOfDirectory(atPath: folder))?.isEmpty == true {
            try? FileManager.default.removeItem(atPath: folder)
        }
        guard failures.isEmpty else {
            logger.error("recording files not deleted", metadata: ["recording": "\(id)", "errors": "\(failures)"])
            throw CocoaError(.fileWriteNoPermission, userInfo: [NSLocalizedDescriptionKey: "could not delete \(failures.joined(separator: "; "))"])
        }
        guard try await store.markRecordingDeleted(id: id, at: nowMillis) else {
            // Deleted meanwhile by another request: that one wrote the audit event.
            return try await store.recording(id: id) ?? record
        }
        var data = ["files": String(record.files.count)]
        if let reason { data["reason"] = reason }
        let deleted = try await store.recording(id: id) ?? record
        try? await EventLog.append(RoomEvent(roomID: record.roomID, at: nowMillis, kind: "recording_deleted", actor: actor,
                                             subject: "recording:" + id, data: data),
                                   webhook: .recordingDeleted(deleted), store: store, webhooks: webhooks)
        logger.notice("recording deleted", metadata: ["recording": "\(id)", "actor": "\(actor)", "files": "\(record.files.count)"])
        return deleted
    }

    /// Deletes every finished recording that ended more than `days` days before `nowMillis`.
    /// - Returns: the ids deleted.
    @discardableResult
    package func applyRetention(days: Int, nowMillis: Int64 = MetadataStore.nowMillis) async -> [String] {
        let cutoff = nowMillis - Int64(days) * 86_400_000
        guard let old = try? await store.recordingsEnded(before: cutoff) else { return [] }
        var deleted: [String] = []
        for record in old {
            do {
                try await delete(id: record.id, actor: "server", reason: "retention (\(days) days)", nowMillis: nowMillis)
                deleted.append(record.id)
            } catch {
                logger.warning("retention could not delete a recording", metadata: ["recording": "\(record.id)", "error": "\(error)"])
            }
        }
        return deleted
    }

    /// Applies the retention at start and then every hour.
    package func run(days: Int, every interval: Duration = .seconds(3600)) async {
        while !Task.isCancelled {
            let deleted = await applyRetention(days: days)
            if !deleted.isEmpty { logger.notice("retention deleted recordings", metadata: ["count": "\(deleted.count)", "days": "\(days)"]) }
            try? await Task.sleep(for: interval)
        }
    }
}
