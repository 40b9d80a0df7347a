import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Recorder
import SFU

/// Starts and stops `tracks` recordings of live rooms (docs/RECORDING.md) and keeps their metadata
/// in the store: one row per recording, one per participant file, the audit log and webhooks.
package final class RecordingService: Sendable {
    struct Active: Sendable {
        let roomID: String
        let live: LiveRooms.Live
        let recording: Recorder
        /// The consent list's observer (a room that requires consent) and the task that stores its lines.
        let consents: ConsentWriter
    }

    /// Stores a recording's consent lines in the order the room's loop made them.
    struct ConsentWriter: Sendable {
        let lines: AsyncStream<RecordingConsent>.Continuation
        let task: Task<Void, Never>
        let ledger: NIOLoopBound<RecordingConsentLedger>

        /// Stops following the room (on its loop) and waits for the lines to be stored.
        func finish(in live: LiveRooms.Live) async {
            _ = try? await live.worker.submit { ledger.value.stop(in: live.room.value) }
            lines.finish()
            await task.value
        }
    }

    /// The writer of recording `id`'s consent lines, its ledger made and started on the room's loop
    /// (call there, right after the recorder started: nothing is missed between the two).
    static func consentWriter(id: String, store: MetadataStore, logger: Logger, live: LiveRooms.Live) -> ConsentWriter {
        let (stream, lines) = AsyncStream<RecordingConsent>.makeStream()
        let task = Task {
            var seq: Int64 = 0
            for await line in stream {
                seq += 1
                do { try await store.addRecordingConsents(recordingID: id, [(seq, line)]) } catch {
                    logger.warning("could not store a consent line", metadata: ["recording": "\(id)", "error": "\(error)"])
                }
            }
        }
        let ledger = RecordingConsentLedger { lines.yield($0) }
        ledger.start(in: live.room.value)
        return ConsentWriter(lines: lines, task: task, ledger: NIOLoopBound(ledger, eventLoop: live.worker.eventLoop))
    }

    /// What records the room: one file per participant, or the composite.
    enum Recorder: Sendable {
        case tracks(NIOLoopBound<RoomRecording>)
        case composite(NIOLoopBound<CompositeRecording>)
    }

    let store: MetadataStore
    let live: LiveRooms
    let directory: String
    let webhooks: WebhookDispatcher?
    let logger: Logger
    /// With S3 storage: finished recordings go there (`processing` until they are).
    let uploader: RecordingUploader?
    private let active = NIOLockedValueBox<[String: Active]>([:])

    package init(store: MetadataStore, live: LiveRooms, directory: String, webhooks: WebhookDispatcher?, logger: Logger,
                 uploader: RecordingUploader? = nil) {
        self.uploader = uploader
        self.store = store
        self.live = live
        self.directory = directory
        self.webhooks = webhooks
        self.logger = logger
    }

    package enum StartError: Error { case roomNotFound, roomClosed, alreadyRecording(String) }

    /// The recording in progress in a room, if any.
    package func activeRecording(roomID: String) -> String? {
        active.withLockedValue { $0.first { $0.value.roomID == roomID }?.key }
    }

    /// Starts recording `roomID` (its live room is made if nobody joined yet); `composite` makes it
    /// one composed file instead of one per participant.
    package func start(roomID: String, startedBy: String?, composite: CompositeRecording.Options? = nil, metadata: String? = nil) async throws -> RecordingRecord {
        guard let room = try await store.room(id: roomID) else { throw StartError.roomNotFound }
        guard room.closedAt == nil else { throw StartError.roomClosed }
        let id = ResourceID.recording.make()
        let claimed: String? = active.withLockedValue { a in
            if let existing = a.first(where: { $0.value.roomID == roomID })?.key { return existing }
            return nil
        }
        if let claimed { throw StartError.alreadyRecording(claimed) }
        let liveRoom = try await live.room(for: room)
        let dir = (directory as NSString).appendingPathComponent(id)
        let now = MetadataStore.nowMillis
        let record = RecordingRecord(id: id, roomID: roomID, mode: composite == nil ? "tracks" : "composite", status: .recording, startedAt: now,
                                     layout: composite?.layout.rawValue, metadata: metadata)
        try await store.createRecording(record)
        let bound: Recorder
        let consents: ConsentWriter
        let (store, logger) = (self.store, self.logger)
        if let composite {
            do {
                (bound, consents) = try await liveRoom.worker.submit {
                    let now = MediaWorker.nowNanos
                    let recording = try CompositeRecording(id: id, directory: dir, fileID: ResourceID.file.make(), options: composite,
                                                           nowNanos: now, logger: logger)
                    recording.start(in: liveRoom.room.value, nowNanos: now)
                    return (.composite(NIOLoopBound(recording, eventLoop: liveRoom.worker.eventLoop)),
                            Self.consentWriter(id: id, store: store, logger: logger, live: liveRoom))
                }
            } catch {
                try? await store.finishRecording(id: id, status: .failed, endedAt: now, durationMs: 0, failureReason: "the composite could not start: \(error)")
                throw error
            }
        } else {
            (bound, consents) = try await liveRoom.worker.submit {
                let recording = RoomRecording(id: id, directory: dir)
                recording.start(in: liveRoom.room.value)
                return (.tracks(NIOLoopBound(recording, eventLoop: liveRoom.worker.eventLoop)),
                        Self.consentWriter(id: id, store: store, logger: logger, live: liveRoom))
            }
        }
        let raced: Bool = active.withLockedValue { a in
            if a.contains(where: { $0.value.roomID == roomID }) { return true }
            a[id] = Active(roomID: roomID, live: liveRoom, recording: bound, consents: consents)
            return false
        }
        if raced {
            // Another start won meanwhile: undo this one.
            await consents.finish(in: liveRoom)
            _ = await Self.stopRecorder(bound, in: liveRoom)
            try? await store.finishRecording(id: id, status: .failed, endedAt: now, durationMs: 0, failureReason: "another recording started at the same time")
            throw StartError.alreadyRecording(activeRecording(roomID: roomID) ?? "")
        }
        try? await EventLog.append(RoomEvent(roomID: roomID, at: now, kind: "recording_started", userID: startedBy, detail: id,
                                             actor: startedBy.map { "user:" + $0 } ?? "api", subject: "recording:" + id,
                                             data: ["mode": record.mode]),
                                   webhook: .recordingStarted(recordingID: id, roomID: roomID, startedAtMillis: now), store: store, webhooks: webhooks)
        logger.info("recording started", metadata: ["recording": "\(id)", "room": "\(roomID)"])
        return record
    }

    /// Stops a recording: finalizes every file and records the metadata. A finished one is returned as it is.
    package func stop(id: String, stoppedBy: String? = nil, reason: String? = nil) async throws -> RecordingRecord? {
        guard let entry = active.withLockedValue({ $0.removeValue(forKey: id) }) else { return try await store.recording(id: id) }
        // The consent list is complete before the metadata is read back (and sent in the webhook).
        await entry.consents.finish(in: entry.live)
        let finalizing: [PendingRecorderFile]
        switch entry.recording {
        case .tracks(let r):
            finalizing = ((try? await entry.live.worker.submit { r.value.stop(in: entry.live.room.value) }) ?? []).map { .file($0) }
        case .composite(let r):
            let pending = try? await entry.live.worker.submit { r.value.stop(in: entry.live.room.value, nowNanos: MediaWorker.nowNanos) }
            finalizing = pending.map { [PendingRecorderFile.composite($0)] } ?? []
            // Encoding may still be draining: `processing` until the file is complete.
            try? await store.finishRecording(id: id, status: .processing, endedAt: MetadataStore.nowMillis, durationMs: nil, failureReason: nil)
        }
        let now = MetadataStore.nowMillis
        var duration: Int64 = 0
        var errors: [String] = []
        var written = 0
        for p in finalizing {
            let (file, error) = await p.finalize()
            if let error { errors.append(error) }
            guard file.sizeBytes > 0, file.videoFrames + file.audioFrames > 0 else {
                unlink(file.path)
                continue
            }
            written += 1
            duration = max(duration, file.durationMs)
            try? await store.addRecordingFile(RecordingFileRecord(
                id: file.id, recordingID: id, userID: file.userID, trackKinds: file.trackKinds, fileName: file.fileName, path: file.path,
                sizeBytes: Int64(file.sizeBytes), source: entry.recording.isComposite ? "composite" : file.source, format: file.format,
                videoCodec: file.videoCodec, audioCodec: file.audioCodec,
                resolution: file.width.map { "\($0)x\(file.height ?? 0)" }, durationMs: file.durationMs))
        }
        let failure: String? = errors.first.map { "writing a file failed: \($0)" }
        // The recording lasted from its start to now; each file has its own media duration.
        let startedAt = (try? await store.recording(id: id))?.startedAt ?? now
        // S3 storage: `processing` while the files go up (never `completed` before they are); when
        // nothing could be queued, `completed` as without S3.
        var uploading = failure == nil && written > 0 && uploader != nil
        try await store.finishRecording(id: id, status: uploading ? .processing : failure == nil ? .completed : .failed, endedAt: now,
                                        durationMs: max(now - startedAt, 0), failureReason: failure)
        if uploading, (try? await uploader?.enqueue(recordingID: id)) != true {
            uploading = false
            try await store.finishRecording(id: id, status: .completed, endedAt: now, durationMs: max(now - startedAt, 0), failureReason: nil)
        }
        let record = try await store.recording(id: id)
        // While uploading, the uploader sends `recording_finished` once the files are in S3.
        try? await EventLog.append(RoomEvent(roomID: entry.roomID, at: now, kind: "recording_stopped", userID: stoppedBy, detail: reason ?? id,
                                             actor: stoppedBy.map { "user:" + $0 } ?? (reason == nil ? "api" : "server"), subject: "recording:" + id,
                                             data: reason.map { ["reason": $0] } ?? [:]),
                                   webhook: uploading ? nil : record.map { .recordingFinished($0) }, store: store, webhooks: webhooks)
        logger.info(uploading ? "recording finished; uploading" : "recording finished",
                    metadata: ["recording": "\(id)", "files": "\(written)", "duration_ms": "\(duration)"])
        return record
    }

    /// Stops a recorder on its room's loop (a start that lost a race); the files are not kept.
    static func stopRecorder(_ recorder: Recorder, in live: LiveRooms.Live) async -> Int {
        switch recorder {
        case .tracks(let r): return (try? await live.worker.submit { r.value.stop(in: live.room.value).count }) ?? 0
        case .composite(let r):
            guard let pending = try? await live.worker.submit({ r.value.stop(in: live.room.value, nowNanos: MediaWorker.nowNanos) }) else { return 0 }
            _ = await pending.finalize()
            return 1
        }
    }

    /// Stops the recording of a room that is closing.
    package func stopAll(roomID: String, reason: String) async {
        let ids = active.withLockedValue { $0.filter { $0.value.roomID == roomID }.map(\.key) }
        for id in ids { _ = try? await stop(id: id, reason: reason) }
    }

    package func stopEverything(reason: String) async {
        let ids = active.withLockedValue { Array($0.keys) }
        for id in ids { _ = try? await stop(id: id, reason: reason) }
    }
}

extension RecordingService.Recorder {
    var isComposite: Bool { if case .composite = self { true } else { false } }
}

/// A file being finished: a participant's (its last writes queued) or the composite (still encoding).
enum PendingRecorderFile: Sendable {
    case file(PendingFile)
    case composite(PendingComposite)

    func finalize() async -> (RecordedFile, String?) {
        switch self {
        case .file(let p): await p.finalize()
        case .composite(let p): await p.finalize()
        }
    }
}
