import Foundation
import Logging
import SFU

/// Samples every live participant's quality figures (rtt, loss, jitter, bitrate) into the store's
/// quality_samples table every `interval`; a failed write (database down) is logged and skipped.
struct QualitySampler: Sendable {
    let store: MetadataStore
    let live: LiveRooms
    let logger: Logger

    func sampleOnce() async {
        let now = MetadataStore.nowMillis
        for (id, room) in live.all {
            guard let snapshot = try? await room.run({ $0.snapshot(nowNanos: MediaWorker.nowNanos) }) else { continue }
            for p in snapshot {
                let sample = Self.sample(p, roomID: id, at: now)
                do {
                    try await store.addQualitySample(sample)
                } catch {
                    logger.debug("quality sample not stored", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// A participant's figures as stored: those of the live participants route, the videos it
    /// receives as JSON.
    static func sample(_ p: ParticipantSnapshot, roomID: String, at: Int64) -> QualitySample {
        let q = p.quality
        let loss = [q.uplinkLoss, q.downlinkLoss].compactMap { $0 }.max()
        let received = p.subscriptions.filter { $0.kind == .video }.map {
            QualitySampleListBody.Received(peerID: $0.peerID, trackID: $0.trackID, width: $0.width, height: $0.height, fps: $0.fps,
                                           bitrateBps: $0.bitrate, paused: $0.paused)
        }
        let json = (try? JSONEncoder().encode(received)).map { String(decoding: $0, as: UTF8.self) }
        return QualitySample(roomID: roomID, participantSessionID: p.peer.peerID, at: at, rttMs: q.rttMs, lossFraction: loss, jitterMs: q.jitterMs,
                             bitrateBps: q.publishBitrate, uplinkLoss: q.uplinkLoss, downlinkLoss: q.downlinkLoss, audioBitrateBps: q.audioBitrate,
                             videoBitrateBps: q.videoBitrate, subscribeBitrateBps: q.subscribeBitrate, availableBandwidthBps: q.downlinkEstimate,
                             grade: QualityGrade.of(q, subscriptions: p.subscriptions).rawValue, subscriptionsJSON: json)
    }

    func run(interval: Duration = .seconds(10)) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            await sampleOnce()
        }
    }
}
