/// One person in a room: who they are, their signaling sink, their two peer connections and the
/// tracks they publish. Confined to the room's event loop.
package final class Participant {
    package let peer: PeerInfo
    let sink: (RoomSignal) -> Void
    var publisher: PublisherConnection?
    var subscriber: SubscriberConnection?
    /// Published tracks, in publication order.
    var producers: [Producer] = []
    /// What the participant itself asked for (`toggle_audio` / `toggle_video`).
    var audioEnabled = true
    var videoEnabled = true
    /// Muted by the room's owner (the control API): the participant cannot clear it.
    var serverMuted: Set<MediaKind> = []

    /// Whether the participant's microphone (audio) or camera (video) is forwarded: it wants it on
    /// and the server has not muted it.
    func isEnabled(_ kind: MediaKind) -> Bool {
        (kind == .audio ? audioEnabled : videoEnabled) && !serverMuted.contains(kind)
    }
    /// `screen_share {enabled: true}` came: the next new video section is the screen.
    var screenSharePending = false
    let joinedNanos: Int64
    var removed = false

    init(peer: PeerInfo, joinedNanos: Int64, sink: @escaping (RoomSignal) -> Void) {
        self.peer = peer
        self.joinedNanos = joinedNanos
        self.sink = sink
    }

    /// Whether others' tracks of `kind` are forwarded to this participant (always, today; a later
    /// per-subscriber choice hooks in here).
    func receiving(_ kind: MediaKind) -> Bool { true }

    var summary: ParticipantSummary {
        ParticipantSummary(peer: peer, tracks: producers.map(\.info))
    }

    func subscriptions(nowNanos: Int64) -> [SubscriptionSnapshot] {
        guard let subscriber else { return [] }
        return subscriber.slots.compactMap(\.consumer).map { c in
            c.rate.roll(nowNanos: nowNanos)
            c.frameRate.roll(nowNanos: nowNanos)
            let layered = c.producer.simulcast
            let temporal = c.producer.kind == .video && c.producer.codec == .vp8
            var s = SubscriptionSnapshot(peerID: c.producer.peerID, trackID: c.producer.trackID, kind: c.producer.kind, source: c.producer.source,
                                         paused: c.allocationPaused, spatialLayer: layered ? c.currentSpatial : nil,
                                         targetSpatialLayer: layered ? c.targetSpatial : nil,
                                         temporalLayer: temporal && c.currentSpatial != nil ? c.currentTemporal : nil,
                                         targetTemporalLayer: temporal ? c.targetTemporal : nil,
                                         maxSpatial: c.maxSpatial, maxTemporal: c.maxTemporal, layerSwitches: c.layerSwitches,
                                         bitrate: c.rate.bitsPerSecond)
            if c.producer.kind == .video, let spatial = c.currentSpatial ?? (layered ? nil : 0), c.producer.streams.indices.contains(spatial) {
                let size = c.producer.streams[spatial].resolution
                (s.width, s.height) = (size?.width, size?.height)
                s.fps = c.allocationPaused ? 0 : (c.frameRate.perSecond * 10).rounded() / 10
            }
            return s
        }
    }

    func quality(nowNanos: Int64) -> QualityFigures {
        var uplinkLoss: Double?
        var jitterMs: Double?
        var publishBitrate: Int64 = 0, audio: Int64 = 0, video: Int64 = 0
        for p in producers {
            for stream in p.streams {
                stream.rate.roll(nowNanos: nowNanos)
                publishBitrate += stream.rate.bitsPerSecond
                if p.kind == .audio { audio += stream.rate.bitsPerSecond } else { video += stream.rate.bitsPerSecond }
                if let r = stream.lastReport {
                    uplinkLoss = max(uplinkLoss ?? 0, Double(r.fractionLost) / 256)
                    jitterMs = max(jitterMs ?? 0, Double(r.jitter) * 1000 / Double(p.clockRate))
                }
            }
        }
        subscriber?.rate.roll(nowNanos: nowNanos)
        return QualityFigures(rttMs: subscriber?.rttNanos.map { Double($0) / 1_000_000 }, uplinkLoss: uplinkLoss,
                              downlinkLoss: subscriber?.downlinkLoss, jitterMs: jitterMs, publishBitrate: publishBitrate,
                              audioBitrate: audio, videoBitrate: video, subscribeBitrate: subscriber?.rate.bitsPerSecond ?? 0,
                              downlinkEstimate: subscriber?.downlinkEstimate.map { Int64($0) })
    }
}
