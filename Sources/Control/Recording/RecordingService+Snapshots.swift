import Foundation
import NIOCore
import Recorder
import SFU

/// Snapshots (PROTOCOL.md): a still of a participant's current video. On the room's loop a
/// ``SnapshotTap`` asks the publisher for a keyframe and catches the first one of the stream the
/// recorder would take (the highest simulcast layer that sends); off the loop it is decoded with
/// libvpx (VP8) or libavcodec (H.264), encoded as JPEG or PNG, stored under `<recordings dir>/snapshots/` with a metadata row,
/// and announced with a `snapshot_taken` webhook.
extension RecordingService {
    package enum SnapshotError: Error, Equatable {
        case roomNotFound
        case participantNotFound
        /// The participant publishes no (unmuted) video of that source.
        case noVideo(source: String)
        case keyframeTimeout
        case failed(String)
    }

    /// How long a snapshot waits for the keyframe it asked for.
    static let snapshotKeyframeTimeout = TimeAmount.seconds(3)

    package func takeSnapshot(roomID: String, userID: String, source: TrackSource, format: SnapshotFormat,
                             takenBy: String? = nil) async throws -> SnapshotRecord {
        guard let room = try await store.room(id: roomID) else { throw SnapshotError.roomNotFound }
        guard room.closedAt == nil, let liveRoom = live.existing(roomID) else { throw SnapshotError.participantNotFound }
        let loop = liveRoom.worker.eventLoop
        let promise = loop.makePromise(of: AssembledFrame.self)
        let started: Result<FrameAssembler.Codec, SnapshotError> = try await liveRoom.worker.submit {
            let r = liveRoom.room.value
            guard let peerID = r.peerID(userID: userID) else { return .failure(.participantNotFound) }
            guard let producer = r.publishedTracks().first(where: { $0.peer.peerID == peerID && $0.producer.kind == .video
                && $0.producer.source == source && !$0.producer.muted })?.producer else { return .failure(.noVideo(source: source.rawValue)) }
            let tap = NIOLoopBound(SnapshotTap(producer: producer, nowNanos: MediaWorker.nowNanos) { promise.succeed($0) }, eventLoop: loop)
            loop.scheduleTask(in: Self.snapshotKeyframeTimeout) {
                guard !tap.value.isDone else { return }
                tap.value.cancel()
                promise.fail(SnapshotError.keyframeTimeout)
            }
            return .success(FrameAssembler.Codec(producer.codec))
        }
        let codec: FrameAssembler.Codec
        switch started {
        case .success(let c): codec = c
        case .failure(let error):
            promise.fail(error)
            throw error
        }
        let frame = try await promise.futureResult.get()
        let image: I420Image
        do {
            if codec == .h264 {
                image = try H264Decoder.decodeKeyframe(frame.data)
            } else {
                guard case .picture(let picture) = try VP8Decoder().decode(frame.data) else { throw SnapshotError.failed("the keyframe did not decode") }
                image = picture
            }
        } catch let error as SnapshotError {
            throw error
        } catch {
            throw SnapshotError.failed("\(error)")
        }
        let bytes: [UInt8]
        do { bytes = try SnapshotImage.encode(image, as: format) } catch { throw SnapshotError.failed("\(error)") }
        let id = ResourceID.snapshot.make()
        let dir = (directory as NSString).appendingPathComponent("snapshots")
        let path = (dir as NSString).appendingPathComponent("\(id).\(format.fileExtension)")
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        } catch {
            throw SnapshotError.failed("cannot write \(path): \(error)")
        }
        let record = SnapshotRecord(id: id, roomID: roomID, userID: userID, source: source.rawValue, takenAt: MetadataStore.nowMillis,
                                    width: image.width, height: image.height, format: format.rawValue, sizeBytes: Int64(bytes.count), path: path)
        try await store.addSnapshot(record)
        try? await EventLog.append(RoomEvent(roomID: roomID, at: record.takenAt, kind: "snapshot_taken", userID: takenBy, detail: id,
                                             actor: takenBy.map { "user:" + $0 } ?? "api", subject: "user:" + userID,
                                             data: ["snapshot_id": id, "source": source.rawValue]),
                                   webhook: .snapshotTaken(record), store: store, webhooks: webhooks)
        logger.info("snapshot taken", metadata: ["snapshot": "\(id)", "room": "\(roomID)", "user": "\(userID)", "size": "\(image.width)x\(image.height)"])
        return record
    }
}
