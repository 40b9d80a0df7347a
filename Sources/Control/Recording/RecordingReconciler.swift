import Foundation
import Logging
import Recorder
import SFU

/// At start: recordings a crash left `recording` are finalized from what is on disk. Each file is
/// scanned (WebMScan), cut back to its last complete cluster so it decodes to its end, and recorded
/// with its recovered duration; the recording becomes `completed`, or `failed` when no file holds a
/// frame.
package struct RecordingReconciler: Sendable {
    package let store: MetadataStore
    package let directory: String
    package let webhooks: WebhookDispatcher?
    package let logger: Logger
    /// With S3 storage: a reconciled recording's files are queued for upload.
    package let uploader: RecordingUploader?

    package init(store: MetadataStore, directory: String, webhooks: WebhookDispatcher?, logger: Logger, uploader: RecordingUploader? = nil) {
        self.uploader = uploader
        self.store = store
        self.directory = directory
        self.webhooks = webhooks
        self.logger = logger
    }

    /// - Returns: the ids reconciled.
    @discardableResult
    package func reconcile() async throws -> [String] {
        var done: [String] = []
        // A composite still draining (`processing`) when the server died is finalized the same way.
        let unfinished = try await store.recordings(status: .recording) + store.recordings(status: .processing)
        for recording in unfinished {
            // Uploading to S3 when the server stopped: the uploader goes on with it.
            if let uploader, await uploader.hasUploads(recordingID: recording.id) { continue }
            let dir = (directory as NSString).appendingPathComponent(recording.id)
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".webm") || $0.hasSuffix(".mkv") }.sorted()
            var duration: Int64 = 0
            var files = 0
            for name in names {
                let path = (dir as NSString).appendingPathComponent(name)
                // Scanned element by element from disk: a recording may be gigabytes.
                guard let scan = WebMScan(path: path), scan.videoFrames + scan.audioFrames > 0 else { continue }
                if scan.validLength < scan.scannedLength { truncate(path, off_t(scan.validLength)) }
                let known = recording.files.contains { $0.fileName == name }
                if !known {
                    var kinds: [String] = []
                    if scan.videoFrames > 0 { kinds.append("video") }
                    if scan.audioFrames > 0 { kinds.append("audio") }
                    // `<user_id>-<peer_id>[-screen].webm`: the peer id follows the last "-pe_".
                    let mkv = name.hasSuffix(".mkv")
                    let stem = String(name.dropLast(mkv ? ".mkv".count : ".webm".count))
                    let user = stem.range(of: "-pe_", options: .backwards).map { String(stem[..<$0.lowerBound]) } ?? stem
                    try await store.addRecordingFile(RecordingFileRecord(
                        id: ResourceID.file.make(), recordingID: recording.id, userID: user, trackKinds: kinds, fileName: name,
                        path: path, sizeBytes: Int64(scan.validLength), source: recording.mode == "composite" ? "composite" : stem.hasSuffix("-screen") ? "screen" : "camera", format: mkv ? "mkv" : "webm",
                        videoCodec: scan.videoFrames > 0 ? (mkv ? "h264" : "vp8") : nil,
                        audioCodec: scan.audioFrames > 0 ? "opus" : nil,
                        resolution: scan.videoFrames > 0 ? scan.width.map { "\($0)x\(scan.height ?? 0)" } : nil, durationMs: scan.durationMs))
                }
                files += 1
                duration = max(duration, scan.durationMs)
            }
            let failure: String? = files == 0 ? "the server stopped during the recording and no file on disk holds a frame" : nil
            try await store.finishRecording(id: recording.id, status: failure == nil ? .completed : .failed,
                                            endedAt: recording.startedAt + duration, durationMs: duration, failureReason: failure)
            // With S3 storage the files are queued (`processing`); the uploader sends `recording_finished`.
            var uploading = false
            if failure == nil, let uploader { uploading = (try? await uploader.enqueue(recordingID: recording.id)) == true }
            let record = try await store.recording(id: recording.id)
            try? await EventLog.append(RoomEvent(id: ResourceID.event.make(), roomID: recording.roomID, at: MetadataStore.nowMillis,
                                                 kind: "recording_stopped", detail: "reconciled after a restart", actor: "server",
                                                 subject: "recording:" + recording.id, data: ["reason": "reconciled after a restart"]),
                                       webhook: uploading ? nil : record.map { .recordingFinished($0) }, store: store, webhooks: webhooks)
            logger.notice("recording reconciled after a restart", metadata: ["recording": "\(recording.id)", "files": "\(files)",
                                                                             "duration_ms": "\(duration)",
                                                                             "status": "\(uploading ? "uploading" : failure == nil ? "completed" : "failed")"])
            done.append(recording.id)
        }
        return done
    }
}
