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
                let q = p.quality
                let loss = [q.uplinkLoss, q.downlinkLoss].compactMap { $0 }.max()
                let sample = QualitySample(roomID: id, participantSessionID: p.peer.peerID, at: now, rttMs: q.rttMs, lossFraction: loss,
                                           jitterMs: q.jitterMs, bitrateBps: q.publishBitrate)
                do {
                    try await store.addQualitySample(sample)
                } catch {
                    logger.debug("quality sample not stored", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    func run(interval: Duration = .seconds(10)) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            await sampleOnce()
        }
    }
}
