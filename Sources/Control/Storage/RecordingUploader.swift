import Foundation
import Logging
import SFU

/// Moves finished recordings to S3 storage (docs/RECORDING.md "S3 storage"). A recording whose
/// files are queued here is `processing`; each file goes up whole (up to the part size) or as a
/// multipart upload, is checked (the object's size is the file's), gets its `object_key`, and its
/// local copy is removed; once every file is up the recording is `completed` with `storage: "s3"`.
/// A failed attempt is retried with backoff (1 s doubling, at most a minute apart); after the last
/// one the recording is `failed` with the reason and the local files that did not go up are kept.
/// The queue lives in the store: after a restart the uploads go on, a multipart upload from the
/// parts S3 already has (ListParts).
package actor RecordingUploader {
    package let client: S3Client
    let store: MetadataStore
    let webhooks: WebhookDispatcher?
    let logger: Logger
    /// Milliseconds since the Unix epoch.
    let clock: @Sendable () -> Int64
    private var worker: Task<Void, Never>?
    private let signal = WakeSignal()
    private var stopped = false
    package private(set) var filesUploaded = 0
    package private(set) var filesFailed = 0

    package init(client: S3Client, store: MetadataStore, webhooks: WebhookDispatcher?, logger: Logger,
                 clock: @escaping @Sendable () -> Int64 = { MetadataStore.nowMillis }) {
        self.client = client
        self.store = store
        self.webhooks = webhooks
        self.logger = logger
        self.clock = clock
    }

    package var configuration: S3Configuration { client.configuration }

    /// Starts the worker: what the store holds from before a restart goes first.
    package func start() {
        guard worker == nil, !stopped else { return }
        worker = Task { await self.work() }
    }

    package func stop() {
        stopped = true
        worker?.cancel()
        worker = nil
        signal.wake()
    }

    /// Queues the recording's files (those on disk) and marks it `processing`.
    /// - Returns: false when it has no file to upload (nothing was queued).
    @discardableResult
    package func enqueue(recordingID: String) async throws -> Bool {
        guard let record = try await store.recording(id: recordingID) else { return false }
        let now = clock()
        let uploads = record.files.filter { $0.objectKey == nil && FileManager.default.fileExists(atPath: $0.path) }.map {
            StorageUpload(fileID: $0.id, recordingID: recordingID, path: $0.path,
                          objectKey: configuration.objectKey(recordingID: recordingID, fileName: $0.fileName), nextAttemptAt: now, createdAt: now)
        }
        guard !uploads.isEmpty else { return false }
        // `processing` first: a recording is never `completed` (deletable) with uploads queued.
        try await store.setRecordingStorage(id: recordingID, storage: record.storage, status: .processing, failureReason: nil)
        try await store.addUploads(uploads)
        logger.info("recording queued for S3", metadata: ["recording": "\(recordingID)", "files": "\(uploads.count)"])
        wake()
        return true
    }

    /// Whether the store holds uploads of this recording (the reconciler leaves those alone).
    package func hasUploads(recordingID: String) async -> Bool {
        !((try? await store.uploads(recordingID: recordingID)) ?? []).isEmpty
    }

    // MARK: worker

    private func wake() { signal.wake() }

    private func nap(millis: Int64) async {
        guard !stopped else { return }
        await signal.sleep(millis: millis)
    }

    /// Recordings still `processing` whose uploads have all ended (the server stopped, or the
    /// store failed, between the last upload and its bookkeeping): finished now.
    private func sweep() async {
        for r in (try? await store.recordings(status: .processing)) ?? [] {
            let uploads = (try? await store.uploads(recordingID: r.id)) ?? []
            if !uploads.isEmpty, !uploads.contains(where: { $0.state == .pending }) { await finishIfDone(recordingID: r.id) }
        }
    }

    private func work() async {
        await sweep()
        while !stopped, !Task.isCancelled {
            let pending: [StorageUpload]
            do {
                pending = try await store.pendingUploads()
            } catch {
                logger.warning("upload queue unreadable; retrying", metadata: ["error": "\(error)"])
                await nap(millis: 2_000)
                continue
            }
            let now = clock()
            guard let due = pending.first(where: { $0.nextAttemptAt <= now }) else {
                if pending.isEmpty { await sweep() }
                await nap(millis: pending.map { $0.nextAttemptAt - now }.min() ?? 60_000)
                continue
            }
            await attempt(due)
        }
    }

    private func attempt(_ upload: StorageUpload) async {
        var u = upload
        u.attempts += 1
        do {
            try await send(&u)
            u.lastError = nil
            try await store.setObjectKey(fileID: u.fileID, key: u.objectKey)
            var done = u
            done.state = .done
            try await store.updateUpload(done)
            u = done
            filesUploaded += 1
            // The file is in S3 and checked: the media host keeps no copy.
            unlink(u.path)
            logger.info("recording file uploaded", metadata: ["recording": "\(u.recordingID)", "file": "\(u.fileID)", "key": "\(u.objectKey)",
                                                              "attempts": "\(u.attempts)"])
        } catch {
            u.lastError = "\(error)"
            if u.attempts >= configuration.uploadAttempts {
                u.state = .failed
                filesFailed += 1
                // Parts already up are not left in the bucket (billed, invisible).
                if let id = u.uploadID { try? await client.abortMultipartUpload(key: u.objectKey, uploadID: id) }
                logger.error("recording upload given up; the local file is kept",
                             metadata: ["recording": "\(u.recordingID)", "file": "\(u.fileID)", "attempts": "\(u.attempts)", "error": "\(error)"])
            } else {
                let delay = Backoff.seconds(afterAttempt: u.attempts, first: configuration.retryBaseSeconds, cap: 60)
                u.nextAttemptAt = clock() + Int64(delay * 1000)
                logger.warning("recording upload failed; retrying", metadata: ["recording": "\(u.recordingID)", "file": "\(u.fileID)",
                                                                              "attempt": "\(u.attempts)", "retry_in_s": "\(delay)", "error": "\(error)"])
            }
            // Kept even when the store is down: the next pass reads it again.
            try? await store.updateUpload(u)
        }
        if u.state != .pending { await finishIfDone(recordingID: u.recordingID) }
    }

    /// Puts the file in S3: one PUT up to the part size, else a multipart upload that goes on from
    /// the parts already there. The object's size is checked against the file's.
    private func send(_ u: inout StorageUpload) async throws {
        guard let handle = FileHandle(forReadingAtPath: u.path) else {
            throw S3Error(status: nil, code: nil, message: "the local file \(u.path) is gone")
        }
        defer { try? handle.close() }
        let size = Int64(try handle.seekToEnd())
        let partSize = Int64(configuration.partSize)
        if size <= partSize {
            try handle.seek(toOffset: 0)
            try await client.put(key: u.objectKey, bytes: Array(try handle.read(upToCount: Int(size)) ?? Data()))
        } else {
            var parts: [S3Client.Part] = []
            if let id = u.uploadID {
                do {
                    parts = try await client.listParts(key: u.objectKey, uploadID: id)
                } catch let e as S3Error where e.code == "NoSuchUpload" || e.status == 404 {
                    u.uploadID = nil
                }
            }
            if u.uploadID == nil {
                u.uploadID = try await client.createMultipartUpload(key: u.objectKey)
                // Kept at once: a restart goes on with this upload.
                try await store.updateUpload(u)
            }
            guard let uploadID = u.uploadID else { return }
            let count = Int((size + partSize - 1) / partSize)
            var have: [Int: S3Client.Part] = [:]
            for p in parts where p.number <= count {
                let expected = p.number < count ? partSize : size - partSize * Int64(count - 1)
                if p.size == expected { have[p.number] = p }
            }
            if !have.isEmpty {
                logger.info("resuming a multipart upload", metadata: ["recording": "\(u.recordingID)", "file": "\(u.fileID)",
                                                                       "parts_there": "\(have.count)", "parts": "\(count)"])
            }
            for number in 1...count where have[number] == nil {
                guard !stopped, !Task.isCancelled else { throw CancellationError() }
                let offset = partSize * Int64(number - 1)
                try handle.seek(toOffset: UInt64(offset))
                let bytes = Array(try handle.read(upToCount: Int(min(partSize, size - offset))) ?? Data())
                let etag = try await client.uploadPart(key: u.objectKey, uploadID: uploadID, number: number, bytes: bytes)
                have[number] = S3Client.Part(number: number, etag: etag, size: Int64(bytes.count))
                logger.info("recording part uploaded", metadata: ["recording": "\(u.recordingID)", "file": "\(u.fileID)",
                                                                   "part": "\(number)", "parts": "\(count)"])
            }
            try await client.completeMultipartUpload(key: u.objectKey, uploadID: uploadID, parts: Array(have.values))
        }
        let stored = try await client.size(key: u.objectKey)
        guard stored == size else {
            throw S3Error(status: nil, code: nil, message: "the object has \(stored.map(String.init) ?? "no") bytes, the file \(size)")
        }
    }

    /// Once none of the recording's files is pending: `completed` in S3, or `failed` with the reason
    /// (its local files kept); audited, and the `recording_finished` webhook sent.
    private func finishIfDone(recordingID: String) async {
        guard let all = try? await store.uploads(recordingID: recordingID), !all.contains(where: { $0.state == .pending }) else { return }
        let failed = all.filter { $0.state == .failed }
        let reason = failed.first.map { "uploading \(failed.count) of \(all.count) files to S3 failed after \($0.attempts) attempts: \($0.lastError ?? "")" }
        do {
            try await store.setRecordingStorage(id: recordingID, storage: failed.isEmpty ? "s3" : "local", status: failed.isEmpty ? .completed : .failed,
                                                failureReason: reason.map { $0 + "; the local files are kept" })
            guard let record = try await store.recording(id: recordingID) else { return }
            if failed.isEmpty, let folder = record.files.first.map({ ($0.path as NSString).deletingLastPathComponent }),
               (try? FileManager.default.contentsOfDirectory(atPath: folder))?.isEmpty == true {
                try? FileManager.default.removeItem(atPath: folder)
            }
            var data = ["files": String(all.count)]
            if let reason { data["reason"] = reason }
            try await EventLog.append(RoomEvent(roomID: record.roomID, at: clock(), kind: failed.isEmpty ? "recording_uploaded" : "recording_upload_failed",
                                                actor: "server", subject: "recording:" + recordingID, data: data),
                                      webhook: .recordingFinished(record), store: store, webhooks: webhooks)
            logger.notice(failed.isEmpty ? "recording stored in S3" : "recording upload failed",
                          metadata: ["recording": "\(recordingID)", "files": "\(all.count)", "failed": "\(failed.count)"])
        } catch {
            logger.error("could not record the end of an upload", metadata: ["recording": "\(recordingID)", "error": "\(error)"])
        }
    }
}
