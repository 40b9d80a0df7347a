/// One subscriber's downlink decisions, without a room or a socket (sans-IO, pure): the estimate
/// (GCC over transport-cc feedback, or the subscriber's REMB), the warm-up, the layer allocation
/// with its holds and pause rules, and the probe schedule. The subscriber connection feeds it what
/// it saw (feedback, REMB, the video tracks' layers and bitrates) and applies the decisions that come
/// out (targets, pauses, resumes, padding to send); the per-track memory of the allocation (chosen
/// once, upgrade hold, when paused) lives here, not in the consumers.
struct DownlinkController {
    /// How often the allocation runs (a drop of the estimate below what is sent runs it at once).
    static let allocationIntervalNanos: Int64 = 250_000_000
    /// The upgrade hold after one downgrade (``UpgradeHold`` doubles it for each further one in a minute).
    static let upgradeHoldNanos: Int64 = 4_000_000_000
    /// A track paused for bandwidth may resume this long after the pause (with the allocator's
    /// resume headroom): pausing is the last resort, and coming back must be quick (it was held by
    /// the 4 s upgrade hold: 4.2 s without video in issue 20's runs).
    static let resumeHoldNanos: Int64 = 1_000_000_000
    /// With transport-cc, video is paused only while the estimator has cut for congestion (delay or
    /// loss) within this long: a low estimate without that evidence (application-limited, start-up)
    /// keeps the lowest layer.
    static let pauseEvidenceNanos: Int64 = 2_000_000_000
    /// With transport-cc, video is paused only once its lowest layer has not fitted for this long
    /// (every allocation round in between said so, each with congestion seen); until then it keeps
    /// the lowest layer. The first feedback after a limit falls on a path (a 5 Mbit/s layer meeting
    /// a 500 kbit/s link) reports the burst that overflowed it, and the loss cut leaves an estimate
    /// far under the link for a second or so: pausing on that one report stopped the video for a
    /// second on a link that carries the lowest layer three times over (issue 20's 1080p runs).
    /// A path that really cannot carry it goes on reporting loss and delay, and is paused 2 s later.
    static let pauseAfterStarvedNanos: Int64 = 2_000_000_000
    /// A downgrade this soon after an upgrade undoes it: the upgrade failed (``TrackMemory/lastUpgradeNanos``).
    static let failedUpgradeNanos: Int64 = 3_000_000_000
    /// While the estimator has cut nothing for congestion for this long, the current layers are kept
    /// as long as `uncongestedKeepFactor` of their cost fits: a layer's measured bitrate jumps with
    /// each keyframe (and with a publisher's encoder starting a layer), and a path that carries it
    /// without a congestion signal is no reason to leave it. A congested path keeps the strict rule.
    static let quietBeforeKeepToleranceNanos: Int64 = 5_000_000_000
    static let uncongestedKeepFactor = 0.8
    /// After a cut for delay overuse (without loss), the current layers are kept as long as
    /// ``afterDelayCutKeepFactor`` of their cost fits while the path still keeps up with what we
    /// send (``BandwidthEstimator/deliveryRatio`` at least ``keepingUpRatio``: over the last 500 ms
    /// the packets arrived over a span at most ~15 % longer than they were sent over). GCC's
    /// estimate climbs past a link that the media fill to 75-80 % (a 1080p publisher's middle
    /// layer on a 1.2 Mbit/s link), meets the delay signal of a frame's or keyframe's queue and is
    /// cut to 0.9x the acked rate, which is about what the layers cost: with the strict rule the
    /// subscriber fell to the lower layer at every cut, one every 2-3 s (issue 20). A link that
    /// really carries less than we send delivers at its own rate, its queue growing for as long as
    /// we send (the ratio falls to its share of our rate), or overflows (loss): then the strict rule
    /// applies. The cut leaves 0.9x what was delivered, so the video budget is then ~0.85x what the
    /// current layers cost (audio comes off first): keeping them must need less than that.
    static let afterDelayCutKeepFactor = 0.7
    static let keepingUpRatio = 0.87
    /// Video is paced (``MediaPacer``) while the estimator has cut for congestion (delay or loss)
    /// within this long. A path that has shown none is not a bottleneck near our rate, and pacing
    /// it would only hold keyframes back: its estimate is application-limited (1.5x what is sent),
    /// so 1.1x of it spreads a keyframe over tens of milliseconds for nothing (the load benchmark's
    /// p99 went from 1.6 to 38 ms with pacing always on). A link that the media fill (issue 20's
    /// 1.2 Mbit/s with a 1080p publisher) shows a cut every few seconds and stays paced.
    static let pacingAfterCongestionNanos: Int64 = 10_000_000_000
    /// Until 3 s of transport-cc feedback (or 3 s after a REMB-only subscriber connected) the
    /// estimate is mostly the start value: nothing is paused on it.
    static let warmUpNanos: Int64 = 3_000_000_000
    /// A REMB beyond any real link (the field reaches 2^81) is taken as "no limit we could use".
    static let maxREMBBitsPerSecond: UInt64 = 10_000_000_000
    /// Going down from a layer whose cost is this many times the video budget stops it at once
    /// rather than at the new layer's keyframe.
    static let dropCurrentOverBudget = 1.2
    /// Priorities of the allocation: a screen share first, then the active speaker, then the rest.
    enum Priority {
        static let screen = 3, activeSpeaker = 2, camera = 1
    }

    /// transport-cc on what we send (the client's answer kept the extension); without it the
    /// estimate is the subscriber's REMB.
    var transportCC = false
    var estimator = BandwidthEstimator()
    var allocator = LayerAllocator()
    private(set) var remb: UInt64?
    private var estimatorFed = false
    private var firstFeedbackNanos: Int64?
    private var connectedNanos: Int64?
    /// When the allocation last ran (0: run at the next chance).
    private(set) var lastAllocationNanos: Int64 = 0
    /// What the allocation last spent, bits/s (video chosen + audio).
    private(set) var allocatedBitrate: Int64 = 0
    /// Video pauses for bandwidth so far.
    private(set) var pausedTotal = 0

    /// What the allocation remembers of a track between rounds.
    struct TrackMemory: Equatable {
        /// A layer was chosen for it at least once.
        var allocated = false
        /// Upgrades wait after a downgrade, longer after several in a minute.
        var upgradeHold = UpgradeHold(baseNanos: DownlinkController.upgradeHoldNanos)
        /// When it was last paused for bandwidth (its resume hold).
        var pausedNanos: Int64?
        /// When it was last moved up a spatial layer, and the estimate then (``failedUpgradeNanos``).
        var lastUpgradeNanos: Int64?
        var estimateAtUpgrade = 0.0
        /// Since when every round found its lowest layer not fitting, while it is not paused
        /// (``pauseAfterStarvedNanos``); nil while it fits.
        var starvedSinceNanos: Int64?
    }
    private(set) var memory: [UInt32: TrackMemory] = [:]

    /// The downlink estimate: GCC from transport-cc once feedback arrived, or the subscriber's REMB.
    var estimate: Double? {
        if transportCC { return estimatorFed ? estimator.estimate : nil }
        return remb.map { Double($0) }  // (not Double.init: that picks init(bitPattern:) for UInt64)
    }

    func warmingUp(nowNanos: Int64) -> Bool {
        let since = transportCC ? firstFeedbackNanos : connectedNanos
        return since.map { nowNanos - $0 < Self.warmUpNanos } ?? true
    }

    /// Whether the downlink shows congestion within `window`: for a REMB subscriber its REMB is the
    /// receiver's own verdict (always true); with transport-cc, a cut for delay or loss that recent.
    func congestionSeen(within window: Int64 = Self.pauseEvidenceNanos, nowNanos: Int64) -> Bool {
        guard transportCC else { return true }
        return estimator.lastCongestionNanos.map { nowNanos - $0 < window } ?? false
    }

    /// Whether video is paced now: past the warm-up (before it the estimate is mostly the start
    /// value), and only on a path that showed congestion within ``pacingAfterCongestionNanos``
    /// (transport-cc), or always for a REMB subscriber (no congestion signal of our own).
    func pacingWanted(nowNanos: Int64) -> Bool {
        !warmingUp(nowNanos: nowNanos) && congestionSeen(within: Self.pacingAfterCongestionNanos, nowNanos: nowNanos)
    }

    // MARK: Input

    mutating func connected(atNanos nanos: Int64) { connectedNanos = nanos }

    /// When the subscriber last moved to another address (nil: never). Packets sent before that
    /// went to a path that was gone: feedback that reports them lost or late tells of the outage,
    /// not of congestion on the new path, and is left out (a phone that changed networks kept its
    /// video paused for the loss of the seconds it was unreachable).
    private(set) var pathChangedNanos: Int64?
    /// How long after a move feedback is screened for packets sent before it (feedback on them
    /// comes within a few round trips; the screen costs a pass over each feedback).
    static let pathChangeScreenNanos: Int64 = 10_000_000_000

    mutating func pathChanged(atNanos nanos: Int64) {
        pathChangedNanos = nanos
        estimator.pathChanged()
        lastAllocationNanos = 0
    }

    mutating func received(remb bitrate: UInt64) { remb = min(bitrate, Self.maxREMBBitsPerSecond) }

    /// transport-cc feedback's packet results. - Returns: true when the estimate just fell below
    /// what the allocation spends: reallocate now, not in up to 250 ms.
    mutating func received(feedback results: [PacketResult], rttNanos: Int64?, nowNanos: Int64) -> Bool {
        let before = estimator.estimate
        if let rttNanos { estimator.setRTT(nanos: rttNanos) }
        if let moved = pathChangedNanos, nowNanos - moved < Self.pathChangeScreenNanos {
            estimator.onFeedback(results.filter { $0.sendNanos >= moved }, nowNanos: nowNanos)
        } else {
            estimator.onFeedback(results, nowNanos: nowNanos)
        }
        if !results.isEmpty, !estimatorFed {
            estimatorFed = true
            firstFeedbackNanos = nowNanos
        }
        guard estimator.estimate < before, estimator.estimate < Double(allocatedBitrate) else { return false }
        lastAllocationNanos = 0
        return true
    }

    /// The subscriber changed its caps (`set_layer`): allocate at the next chance.
    mutating func reallocateSoon() { lastAllocationNanos = 0 }

    /// A track is gone: its memory goes with it.
    mutating func forget(_ key: UInt32) { memory[key] = nil }

    // MARK: Allocation

    /// A video track as the allocation sees it.
    struct VideoTrack {
        /// The consumer's SSRC: the key of the decisions and of the track's memory.
        var key: UInt32
        var priority: Int
        /// Per spatial layer up to the subscriber's cap, per temporal layer: bits/s, nil where not sent.
        var bitrates: [[Int64?]]
        /// The top stream's size when a keyframe told it (what probing aims at).
        var topResolution: (width: Int, height: Int)?
        /// The layer the consumer targets now, and what it forwards.
        var target: LayerAllocator.Layer
        var currentSpatial: Int?
        var currentTemporal: Int
        /// Paused for bandwidth now.
        var paused: Bool
    }

    enum Decision: Equatable {
        /// Pause the track for bandwidth (`track_paused`).
        case pause(UInt32, estimate: Double)
        /// Resume it (`track_resumed`), from the layer of the `target` decision that follows.
        case resume(UInt32, estimate: Double)
        /// Target this layer; `dropCurrent`: stop the current layer now (it is far over the budget);
        /// `changed`: a new choice (first, or another layer).
        case target(UInt32, LayerAllocator.Layer, dropCurrent: Bool, changed: Bool)
    }

    /// Whether the allocation is due (its interval is over, or something asked for it).
    func allocationDue(nowNanos: Int64) -> Bool { nowNanos - lastAllocationNanos >= Self.allocationIntervalNanos }

    /// Spends the estimate on the video tracks after `audio` bits/s, and tells the estimator what is
    /// wanted (probing aims at it) and spent. - Returns: what to apply, in order.
    mutating func allocate(audio: Int64, video: [VideoTrack], nowNanos: Int64) -> [Decision] {
        lastAllocationNanos = nowNanos
        var tracks: [LayerAllocator.Track] = []
        var desired = audio
        for v in video {
            var top = v.bitrates.last { $0.contains { $0 != nil } }?.compactMap { $0 }.last ?? 0
            // A simulcast publisher's top layer starts small while its encoder ramps up: probe for what
            // it will need (its nominal rate) from the start, or the estimate lags one probe a second
            // behind it and the subscriber falls off the top layer the first time it costs its due.
            if v.bitrates.count > 1, v.bitrates.last?.contains(where: { $0 != nil }) == true {
                top = max(top, Self.nominalBitrate(spatial: v.bitrates.count - 1, of: v.bitrates.count, resolution: v.topResolution))
            }
            // Probing aims past the top layer by the upgrade headroom, or the allocator could never take it.
            desired += Int64(Double(top) * allocator.upgradeHeadroom)
            let m = memory[v.key] ?? TrackMemory()
            let current: LayerAllocator.Choice? = v.paused ? .paused : (m.allocated ? .layer(v.target) : nil)
            let held = v.paused ? m.pausedNanos.map { nowNanos - $0 < Self.resumeHoldNanos } ?? false
                : m.upgradeHold.holds(at: nowNanos, estimate: estimate)
            tracks.append(.init(priority: v.priority, bitrates: v.bitrates, current: current, upgradesAllowed: !held))
        }
        estimator.desiredBitrate = Double(desired)
        estimator.holdWhileApplicationLimited = video.contains { $0.paused }
        guard let estimate else { return [] }
        allocator.keepFactor = keepFactor(nowNanos: nowNanos)
        let budget = max(0, estimate - Double(audio))
        let choices = allocator.allocate(budget: budget, tracks: tracks)
        var spent = audio
        var decisions: [Decision] = []
        for (i, v) in video.enumerated() {
            // A track that sends nothing yet keeps what it has; the next round decides.
            guard tracks[i].bitrates.contains(where: { $0.contains { $0 != nil } }) else { continue }
            var m = memory[v.key] ?? TrackMemory()
            var choice = choices[i]
            if choice == .paused, !v.paused, let lowest = tracks[i].lowestLayer {
                if warmingUp(nowNanos: nowNanos) || !congestionSeen(nowNanos: nowNanos) {
                    // The first seconds' estimate is the start value, not a measurement, and without a
                    // congestion signal a low estimate is no evidence that the path cannot carry video:
                    // keep (or start on) the lowest layer.
                    choice = .layer(lowest)
                    m.starvedSinceNanos = nil
                } else if transportCC {
                    // One cut is not yet sustained evidence: keep the lowest layer until the rounds
                    // have found it not fitting for ``pauseAfterStarvedNanos``.
                    let since = m.starvedSinceNanos ?? nowNanos
                    m.starvedSinceNanos = since
                    if nowNanos - since < Self.pauseAfterStarvedNanos { choice = .layer(lowest) }
                }
            } else {
                m.starvedSinceNanos = nil
            }
            switch choice {
            case .paused:
                if !v.paused {
                    m.pausedNanos = nowNanos
                    pausedTotal += 1
                    decisions.append(.pause(v.key, estimate: estimate))
                }
            case .layer(let l):
                // Coming out of a pause starts from the lowest layers: that is not a downgrade, and must
                // not hold the climb back for 4 s.
                if v.paused { decisions.append(.resume(v.key, estimate: estimate)) }
                if m.allocated, !v.paused, l < v.target {
                    // The hold is lifted when the estimate grows to 1.5x what it was at the downgrade
                    // (the path changed). After an upgrade that failed, that is the estimate the
                    // upgrade was made on: the cut that undid it (0.9x the acked rate, mostly the
                    // lower layer's) is no measure of the path, and a probe back to where it was
                    // lifted the hold at once (issue 20: 1080p at 1.2 Mbit/s went up and down every
                    // 2-3 s, each time on the estimate the probe restored).
                    var reference = estimate
                    if let up = m.lastUpgradeNanos, nowNanos - up < Self.failedUpgradeNanos { reference = max(reference, m.estimateAtUpgrade) }
                    m.upgradeHold.downgraded(at: nowNanos, estimate: reference)
                }
                if m.allocated, !v.paused, l.spatial > v.target.spatial {
                    m.lastUpgradeNanos = nowNanos
                    m.estimateAtUpgrade = estimate
                }
                var drop = false
                if let current = v.currentSpatial, l.spatial < current,
                   let cost = tracks[i].cost(.init(spatial: current, temporal: min(v.currentTemporal, tracks[i].bitrates[current].count - 1))),
                   Double(cost) > Self.dropCurrentOverBudget * budget {
                    drop = true
                }
                decisions.append(.target(v.key, l, dropCurrent: drop, changed: !m.allocated || l != v.target))
                m.allocated = true
                spent += tracks[i].cost(l) ?? 0
            }
            memory[v.key] = m
        }
        allocatedBitrate = spent
        estimator.allocatedBitrate = Double(spent)
        return decisions
    }

    /// How much of the current layers' cost must fit to keep them: all of it after a cut for loss
    /// within ``quietBeforeKeepToleranceNanos``, or after a cut for delay while the path does not
    /// keep up with what we send; ``afterDelayCutKeepFactor`` after a cut for delay while it does;
    /// ``uncongestedKeepFactor`` without a cut.
    func keepFactor(nowNanos: Int64) -> Double {
        let recent = { (t: Int64?) in t.map { nowNanos - $0 < Self.quietBeforeKeepToleranceNanos } ?? false }
        if recent(estimator.lastLossCongestionNanos) { return 1 }
        guard recent(estimator.lastDelayCongestionNanos) else { return Self.uncongestedKeepFactor }
        guard let ratio = estimator.deliveryRatio, ratio >= Self.keepingUpRatio else { return 1 }
        return Self.afterDelayCutKeepFactor
    }

    /// Nominal bitrates for a layer that is sending but not measured yet (first second), and what
    /// probing aims at for a simulcast track's top layer: libwebrtc's maximum bitrate for the
    /// layer's size when a keyframe told it (``nominalBitrate(width:height:)``), else by position.
    static func nominalBitrate(spatial: Int, of count: Int, resolution: (width: Int, height: Int)? = nil) -> Int64 {
        if let r = resolution, r.width > 0, r.height > 0 { return nominalBitrate(width: r.width, height: r.height) }
        let top = [1_500_000, 500_000, 150_000] as [Int64]
        return top[min(max(count - 1 - spatial, 0), 2)]
    }

    /// libwebrtc's maximum simulcast bitrate for a layer of this size (its kSimulcastFormats table,
    /// the row with the most pixels not above the layer's): 1920x1080 5 Mbit/s, 1280x720 2.5 Mbit/s,
    /// 960x540 1.2 Mbit/s, 640x360 700 kbit/s, 480x270 450 kbit/s, 320x180 200 kbit/s.
    static func nominalBitrate(width: Int, height: Int) -> Int64 {
        let rows: [(pixels: Int, bitrate: Int64)] = [(1920 * 1080, 5_000_000), (1280 * 720, 2_500_000), (960 * 540, 1_200_000),
                                                     (640 * 360, 700_000), (480 * 270, 450_000), (320 * 180, 200_000)]
        let pixels = width * height
        return rows.first { pixels >= $0.pixels }?.bitrate ?? 200_000
    }

    // MARK: Probing

    /// A probe cluster going out as padding at its rate: `sent` of `bytes` since `started`.
    private(set) var probe: (cluster: Int, bitrate: Double, bytes: Int, sent: Int, started: Int64)?
    private(set) var paddingBytesSent = 0

    /// The padding packets of a probe cluster due now (nil: none). The cluster is paced at its rate
    /// over its ~15 ms: the estimator measures the rate it was sent at from the packets' send
    /// times, so a cluster sent in one burst (one send time) says nothing. `carrier` finds what
    /// carries the padding (a video consumer with RTX), asked only while a cluster is going out;
    /// without one the cluster is dropped.
    mutating func probeDue<Carrier>(nowNanos: Int64, packetSize: Int, carrier: () -> Carrier?) -> (cluster: Int, packets: Int, carrier: Carrier)? {
        guard transportCC else { return nil }
        if probe == nil, let p = estimator.probeToSend(nowNanos: nowNanos, packetSize: packetSize) {
            probe = (p.cluster, p.bitrate, p.bytes, 0, nowNanos)
        }
        guard let current = probe else { return nil }
        guard let found = carrier() else {
            probe = nil
            return nil
        }
        // Due: what the rate allows since the start, plus the packet that opens the next interval.
        let elapsed = Double(nowNanos - current.started) / 1e9
        let due = min(current.bytes, Int(current.bitrate * elapsed / 8) + packetSize)
        let packets = due > current.sent ? (due - current.sent + packetSize - 1) / packetSize : 0
        return (current.cluster, packets, found)
    }

    /// `packets` of the due padding went out. - Returns: when the cluster's next packet is due (at
    /// least a millisecond on, the loop's timer resolution), nil when the cluster is done.
    mutating func probeSent(packets: Int, packetSize: Int, nowNanos: Int64) -> Int64? {
        paddingBytesSent += packets * packetSize
        guard var current = probe else { return nil }
        current.sent += packets * packetSize
        guard current.sent < current.bytes else {
            probe = nil
            return nil
        }
        probe = current
        let next = current.started + Int64(Double(current.sent) * 8 / current.bitrate * 1e9)
        return max(next, nowNanos + 1_000_000)
    }
}
