import Foundation

/// Downlink bandwidth estimation in the GCC family (draft-ietf-rmcat-gcc, libwebrtc's
/// goog_cc), sans-IO: transport-cc results in, an estimate out.
///
/// - Delay-based: packets are grouped by send time (5 ms bursts); the change of one-way delay
///   between groups is accumulated, smoothed, and its trend (least-squares slope over 20 groups)
///   compared with an adaptive threshold; overuse cuts the rate to 90% of what was delivered (over
///   the last 500 ms, or the last 150 ms when that is less: a step down is met at once),
///   normal use grows it (8%/s far from the last overuse point, about a packet per RTT near it).
/// - Loss-based: under 2% loss grows, over 10% cuts by half the loss.
/// - Probing: when the estimate has been stable for a second and is below what the subscriber
///   could use, a probe cluster is sent at twice the estimate; the rate it arrives at raises the
///   estimate at once (how an upgrade discovers headroom without waiting for 8%/s). A probe the
///   path could not carry whole, sent while the media fill the estimate near the last overuse,
///   raises it no further than what the path delivered at that overuse: the burst saw the
///   bottleneck's capacity, cross traffic included.
/// The estimate is the smaller of the two, never below `minBitrate`.
package struct BandwidthEstimator: Sendable {
    package struct Configuration: Sendable {
        package var startBitrate: Double = 300_000
        package var minBitrate: Double = 50_000
        package var maxBitrate: Double = 20_000_000
        package init() {}
    }

    package enum Usage: Sendable, Equatable { case normal, overusing, underusing }

    package let configuration: Configuration
    package private(set) var estimate: Double
    package private(set) var usage: Usage = .normal
    package private(set) var lossFraction: Double = 0
    private var delayBased: Double
    private var lossBased: Double
    // Inter-arrival grouping.
    private var groupFirstSend: Int64?
    private var groupLastSend: Int64 = 0
    private var groupLastArrival: Int64 = 0
    private var previousGroup: (send: Int64, arrival: Int64)?
    // Trendline.
    private var accumulatedDelayMs: Double = 0
    private var smoothedDelayMs: Double = 0
    private var samples: [(arrivalMs: Double, delayMs: Double)] = []
    private var firstArrivalNanos: Int64?
    private var numDeltas = 0
    private var threshold: Double = 12.5
    private var lastThresholdUpdateNanos: Int64?
    private var overuseStartNanos: Int64?
    private var previousTrend: Double = 0
    // Rate control.
    private var lastRateUpdateNanos: Int64?
    private var lastDecreaseNanos: Int64?
    private var bitrateAtOveruse: Double?
    private var acked: [(arrivalNanos: Int64, sendNanos: Int64, size: Int)] = []
    package private(set) var ackedBitrate: Double?
    /// How the path kept up with what was sent over the acked window (its last 500 ms): the span
    /// the packets were sent over divided by the span they arrived over. About 1 while the path
    /// delivers at the rate we send (a burst's queue comes and goes within the window); the path's
    /// share of our rate when it carries less and its queue keeps growing. nil until the window
    /// spans 100 ms.
    package private(set) var deliveryRatio: Double?
    /// What arrived over the last `recentAckedWindowNanos` only: at a step down of the path, the
    /// rate the bottleneck delivers now, where `ackedBitrate` still holds half a second of the old rate.
    package private(set) var recentAckedBitrate: Double?
    static let recentAckedWindowNanos: Int64 = 150_000_000
    private var rttNanos: Int64 = 100_000_000
    // Loss window.
    private var lossWindow: [(nanos: Int64, lost: Bool)] = []
    private var lastLossUpdateNanos: Int64?
    // Probing.
    private var nextProbeCluster = 1
    private var probes: [Int: (rate: Double, started: Int64, packets: Int)] = [:]
    /// Results of each probe cluster so far (a cluster can span feedbacks).
    private var probeResults: [Int: [PacketResult]] = [:]
    private var lastProbeNanos: Int64?
    private var stableSinceNanos: Int64?
    /// The rate the subscriber's layers could use: probing stops there.
    package var desiredBitrate: Double = 0
    /// A probe the path did not hold (overuse soon after): later probes stay under 90% of it
    /// until `probeCapUntil`; each new failure doubles how long.
    private var probeCap: Double?
    private var probeCapUntil: Int64 = 0
    private var probeCapHoldNanos: Int64 = 5_000_000_000
    private var lastProbeSuccess: (nanos: Int64, rate: Double)?
    private var lastLossDecreaseNanos: Int64?
    /// Set by the subscriber while a video track is paused for bandwidth: the estimate then does not
    /// decay for being application-limited.
    package var holdWhileApplicationLimited = false
    /// Set by the subscriber: what its current layers cost (their measured bitrates, audio
    /// included). An application-limited estimate decays to 1.5x the larger of this and the acked
    /// rate: the acked rate of a keyframe-heavy stream (a temporal cap leaves mostly keyframes)
    /// swings well below its average between keyframes, and the estimate must not follow it down
    /// under what the allocation needs.
    package var allocatedBitrate: Double = 0
    /// When the estimate was last cut for loss, nil if never.
    package var lastLossCongestionNanos: Int64? { lastLossDecreaseNanos }
    /// When the estimate was last cut for delay overuse, nil if never.
    package var lastDelayCongestionNanos: Int64? { lastDecreaseNanos }
    /// When the estimate was last cut for congestion (delay overuse or loss), nil if never.
    package var lastCongestionNanos: Int64? {
        switch (lastDecreaseNanos, lastLossDecreaseNanos) {
        case let (d?, l?): max(d, l)
        case let (d, l): d ?? l
        }
    }
    /// When a probe last raised the estimate.
    private var lastProbeRaise: Int64?
    /// What the path delivered without a congestion signal: the acked rate, sampled every 500 ms
    /// while the delay signal is normal, for ``provenWindowNanos``. An application-limited estimate
    /// does not decay below the highest of them (a subscriber that sends less for a while keeps
    /// what it learned about its path); congestion removes the samples above the new estimate.
    private var provenSamples: [(nanos: Int64, bitrate: Double)] = []
    static let provenWindowNanos: Int64 = 30_000_000_000
    /// A full video packet (bytes): the step of additive increase near a known limit (one packet
    /// per RTT, libwebrtc's AIMD) and the size probe clusters are counted in.
    package static let typicalPacketBytes = 1200
    /// The highest rate the path carried without congestion in the last ``provenWindowNanos`` (nil: none).
    package var provenBitrate: Double? { provenSamples.map(\.bitrate).max() }
    /// When the last probe came back at 80% of its rate or more: the next may follow at once.
    private var probeCarried: Int64?
    /// Every packet reported over the last ``recentWindowNanos`` of send time (media and probes):
    /// a probe is measured with the media sent beside it, since both fill the path.
    private var recent: [(send: Int64, arrival: Int64?, size: Int)] = []
    static let recentWindowNanos: Int64 = 1_500_000_000
    /// The last probe's measurement: when, and the rate the path delivered the probe and the media
    /// beside it at (what arrived when the probe saturated the path, else what it carried).
    private var probeMeasurement: (nanos: Int64, rate: Double)?
    /// After a probe, this long, overuse is a burst of our own (the probe's queue, the keyframe of a
    /// layer the new estimate allowed) when the subscriber's media alone leave ``drainingShare`` of
    /// what the probe measured free: the queue drains by itself, and the estimate is not cut for it.
    static let probeQueueNanos: Int64 = 1_000_000_000
    static let drainingShare = 0.2

    package init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        estimate = configuration.startBitrate
        delayBased = configuration.startBitrate
        lossBased = configuration.maxBitrate
    }

    package mutating func setRTT(nanos: Int64) { rttNanos = max(10_000_000, nanos) }

    /// The subscriber's path changed (it moved to another address: a network change, an ICE
    /// restart). The delay filter's state belongs to the old path (its base delay, its groups) and
    /// is started again, and the loss window forgets the outage; the estimate, the acked and proven
    /// rates are kept: what was learned is discarded only by what the new path says.
    package mutating func pathChanged() {
        groupFirstSend = nil
        previousGroup = nil
        accumulatedDelayMs = 0
        smoothedDelayMs = 0
        samples.removeAll()
        firstArrivalNanos = nil
        numDeltas = 0
        overuseStartNanos = nil
        previousTrend = 0
        usage = .normal
        lossWindow.removeAll()
        lossFraction = 0
        probes.removeAll()
        probeResults.removeAll()
        recent.removeAll()
        probeMeasurement = nil
    }

    /// A probe cluster to send now, if one is due: its id (stamp it on the packets' send-history
    /// entries), the rate to send at and how many bytes.
    package mutating func probeToSend(nowNanos: Int64, packetSize: Int = BandwidthEstimator.typicalPacketBytes) -> (cluster: Int, bitrate: Double, bytes: Int)? {
        // Anything short of the desired rate is worth a probe: an application-limited estimate no
        // longer grows by itself, so the last 10% before an upgrade's headroom come from probes too.
        guard desiredBitrate > estimate, usage == .normal, let stable = stableSinceNanos else { return nil }
        // At start-up (no overuse or loss yet), a probe the path carried almost whole is followed by
        // the next one at once (libwebrtc's exponential "further probing"): from the start rate to a
        // 2 Mbit/s track in three steps of ~150 ms, not three seconds. Otherwise one probe a second,
        // after 500 ms without overuse.
        let startingUp = bitrateAtOveruse == nil && lastLossDecreaseNanos == nil
        let chained = startingUp && (probeCarried.map { nowNanos - $0 < 1_000_000_000 } ?? false)
        if !chained {
            guard nowNanos - stable >= 500_000_000 else { return nil }
            if let last = lastProbeNanos, nowNanos - last < 1_000_000_000 { return nil }
        }
        probeCarried = nil
        var rate = min(estimate * 2, max(desiredBitrate, estimate) * 1.2, configuration.maxBitrate)
        if let cap = probeCap, nowNanos < probeCapUntil {
            // Running close to the cap for 2 s without overuse: the path may have grown, lift it.
            if estimate >= 0.9 * cap, nowNanos - stable >= 2_000_000_000 {
                probeCap = nil
            } else {
                rate = min(rate, 0.9 * cap)
            }
        }
        guard rate > estimate * 1.1 else { return nil }
        let cluster = nextProbeCluster
        nextProbeCluster += 1
        lastProbeNanos = nowNanos
        // 15 ms worth at the probe rate, at least 5 packets' worth.
        let bytes = max(6000, Int(rate * 0.015 / 8))
        probes[cluster] = (rate, nowNanos, (bytes + packetSize - 1) / max(packetSize, 1))
        return (cluster, rate, bytes)
    }

    /// Feeds the results of one transport-cc feedback.
    package mutating func onFeedback(_ results: [PacketResult], nowNanos: Int64) {
        guard !results.isEmpty else { return }
        for r in results {
            lossWindow.append((nowNanos, r.arrivalNanos == nil))
            recent.append((r.sendNanos, r.arrivalNanos, r.size))
            guard let arrival = r.arrivalNanos else { continue }
            if let c = r.probeCluster { probeResults[c, default: []].append(r) }
            acked.append((arrival, r.sendNanos, r.size))
            addToGroups(send: r.sendNanos, arrival: arrival, nowNanos: nowNanos)
        }
        updateAcked()
        if let newest = recent.last?.send, let first = recent.first?.send, newest - first > Self.recentWindowNanos {
            recent.removeAll { newest - $0.send > Self.recentWindowNanos }
        }
        for (cluster, probe) in probes {
            let got = probeResults[cluster]?.count ?? 0
            if got * 10 >= probe.packets * 8 || nowNanos - probe.started > 1_000_000_000 {
                evaluateProbe(cluster, probeResults.removeValue(forKey: cluster) ?? [], nowNanos: nowNanos)
            }
        }
        updateLoss(nowNanos: nowNanos)
        updateRate(nowNanos: nowNanos)
    }

    // MARK: delay-based

    private mutating func addToGroups(send: Int64, arrival: Int64, nowNanos: Int64) {
        guard let first = groupFirstSend else {
            groupFirstSend = send
            groupLastSend = send
            groupLastArrival = arrival
            return
        }
        if send - first <= 5_000_000 {
            groupLastSend = max(groupLastSend, send)
            groupLastArrival = max(groupLastArrival, arrival)
            return
        }
        // The group is complete: compare it with the previous one.
        let current = (send: groupLastSend, arrival: groupLastArrival)
        if let previous = previousGroup {
            let sendDelta = Double(current.send - previous.send) / 1e6
            let arrivalDelta = Double(current.arrival - previous.arrival) / 1e6
            updateTrendline(delayDeltaMs: arrivalDelta - sendDelta, arrivalNanos: current.arrival, nowNanos: nowNanos)
        }
        previousGroup = current
        groupFirstSend = send
        groupLastSend = send
        groupLastArrival = arrival
    }

    private mutating func updateTrendline(delayDeltaMs: Double, arrivalNanos: Int64, nowNanos: Int64) {
        if firstArrivalNanos == nil { firstArrivalNanos = arrivalNanos }
        numDeltas = min(numDeltas + 1, 1000)
        accumulatedDelayMs += delayDeltaMs
        smoothedDelayMs = 0.9 * smoothedDelayMs + 0.1 * accumulatedDelayMs
        samples.append((Double(arrivalNanos - (firstArrivalNanos ?? arrivalNanos)) / 1e6, smoothedDelayMs))
        if samples.count > 20 { samples.removeFirst() }
        guard samples.count == 20 else { return }
        let meanX = samples.map(\.arrivalMs).reduce(0, +) / 20
        let meanY = samples.map(\.delayMs).reduce(0, +) / 20
        var num = 0.0, den = 0.0
        for s in samples {
            num += (s.arrivalMs - meanX) * (s.delayMs - meanY)
            den += (s.arrivalMs - meanX) * (s.arrivalMs - meanX)
        }
        let slope = den == 0 ? 0 : num / den
        let trend = Double(min(numDeltas, 60)) * slope * 4
        detect(trend: trend, nowNanos: nowNanos)
    }

    private mutating func detect(trend: Double, nowNanos: Int64) {
        if trend > threshold {
            if overuseStartNanos == nil { overuseStartNanos = nowNanos }
            if let start = overuseStartNanos, nowNanos - start >= 10_000_000, trend >= previousTrend {
                usage = .overusing
            }
        } else if trend < -threshold {
            overuseStartNanos = nil
            usage = .underusing
        } else {
            overuseStartNanos = nil
            usage = .normal
        }
        previousTrend = trend
        // Adapt the threshold (skipped for spikes far above it).
        let dtMs = Double(min(nowNanos - (lastThresholdUpdateNanos ?? nowNanos), 100_000_000)) / 1e6
        lastThresholdUpdateNanos = nowNanos
        if abs(trend) < threshold + 15 {
            let k = abs(trend) < threshold ? 0.039 : 0.0087
            threshold = min(max(threshold + k * (abs(trend) - threshold) * dtMs, 6), 600)
        }
    }

    private mutating func updateAcked() {
        guard let last = acked.last?.arrivalNanos else { return }
        acked.removeAll { last - $0.arrivalNanos > 500_000_000 }
        guard let first = acked.first?.arrivalNanos, last - first >= 100_000_000 else { return }
        ackedBitrate = Self.bitrate(acked[...], first: first, last: last)
        var sentFirst = Int64.max, sentLast = Int64.min
        for a in acked {
            sentFirst = min(sentFirst, a.sendNanos)
            sentLast = max(sentLast, a.sendNanos)
        }
        deliveryRatio = sentLast - sentFirst >= 100_000_000 ? Double(sentLast - sentFirst) / Double(last - first) : nil
        let recent = acked.drop { last - $0.arrivalNanos > Self.recentAckedWindowNanos }
        if let recentFirst = recent.first?.arrivalNanos, last - recentFirst >= Self.recentAckedWindowNanos / 2 {
            recentAckedBitrate = Self.bitrate(recent, first: recentFirst, last: last)
        } else {
            recentAckedBitrate = nil
        }
    }

    /// Bits/s of the packets after the first (which marks the start of the span) from `first` to `last`.
    private static func bitrate(_ packets: ArraySlice<(arrivalNanos: Int64, sendNanos: Int64, size: Int)>, first: Int64, last: Int64) -> Double {
        Double(packets.dropFirst().reduce(0) { $0 + $1.size }) * 8 * 1e9 / Double(last - first)
    }

    private mutating func updateRate(nowNanos: Int64) {
        let dt = Double(nowNanos - (lastRateUpdateNanos ?? nowNanos)) / 1e9
        lastRateUpdateNanos = nowNanos
        switch usage {
        case .overusing:
            stableSinceNanos = nil
            if let success = lastProbeSuccess, nowNanos - success.nanos < 1_500_000_000 {
                // The probe overshot what the path holds over time (cross traffic, a short burst).
                if let cap = probeCap, nowNanos < probeCapUntil, success.rate >= 0.9 * cap {
                    probeCapHoldNanos = min(probeCapHoldNanos * 2, 60_000_000_000)
                } else if probeCap == nil || nowNanos >= probeCapUntil {
                    probeCapHoldNanos = 5_000_000_000
                }
                probeCap = min(probeCap.flatMap { nowNanos < probeCapUntil ? $0 : nil } ?? .infinity, success.rate)
                probeCapUntil = nowNanos + probeCapHoldNanos
                lastProbeSuccess = nil
            }
            // The probe's own queue: later probes wait (the cap above), the estimate stays.
            if probeQueueDraining(nowNanos: nowNanos) { break }
            if lastDecreaseNanos.map({ nowNanos - $0 >= rttNanos + 100_000_000 }) ?? true {
                // What the path delivers now: the last 150 ms when they say less than the last 500 ms
                // (a step down is then met in one decrease, not in several RTTs of overshoot).
                let base = [ackedBitrate, recentAckedBitrate].compactMap { $0 }.min() ?? delayBased
                delayBased = max(configuration.minBitrate, min(delayBased, 0.9 * base))
                bitrateAtOveruse = base
                lastDecreaseNanos = nowNanos
                forgetProven(above: base)
            }
        case .underusing:
            stableSinceNanos = nil  // queues draining: hold
        case .normal:
            if stableSinceNanos == nil { stableSinceNanos = nowNanos }
            if let acked = ackedBitrate, provenSamples.last.map({ nowNanos - $0.nanos >= 500_000_000 }) ?? true {
                provenSamples.append((nowNanos, acked))
            }
            provenSamples.removeAll { nowNanos - $0.nanos > Self.provenWindowNanos }
            let before = delayBased
            if nearLastOveruse {
                // Near the last known limit: about one packet per RTT.
                delayBased += Double(Self.typicalPacketBytes * 8) * dt / (Double(rttNanos) / 1e9)
            } else {
                delayBased *= pow1_08(dt)
            }
            // Do not grow far beyond what is actually sent: an application-limited sender learns
            // nothing about the path.
            // A stale estimate decays to 1.5x what is sent (acked, or allocated when more), but not
            // below what the path carried without congestion in the last 30 s (at least the start
            // rate): one far above a shared link's fair share (a probe measures the bottleneck, cross
            // traffic and all) would make every probe overshoot it, while a subscriber that sends
            // less for a while (a lower layer, audio only) must not lose what it learned about its
            // path (issue 20: it fell to exactly the 300 kbit/s start rate on a 500 kbit/s link).
            // It does not fall while video is paused for bandwidth (what we chose not to send says
            // nothing about the path, libwebrtc's AIMD rule, or the paused track could never afford
            // to resume), nor for 2 s after a probe raised it, so the sender has time to use it.
            if let acked = ackedBitrate, case let sending = max(acked, allocatedBitrate), delayBased > 1.5 * sending + 10_000 {
                let learned = max(provenBitrate ?? 0, configuration.startBitrate)
                let cap = max(1.5 * sending + 10_000, min(before, learned))
                let probedRecently = lastProbeRaise.map { nowNanos - $0 < 2_000_000_000 } ?? false
                delayBased = holdWhileApplicationLimited || probedRecently ? max(before, cap) : cap
            }
        }
        delayBased = min(max(delayBased, configuration.minBitrate), configuration.maxBitrate)
        estimate = max(configuration.minBitrate, min(delayBased, lossBased))
    }

    /// Overuse that a burst of our own caused: a probe measured the path within ``probeQueueNanos``
    /// and the subscriber's media alone (what its allocation costs, the layer the probe let it take
    /// included) leave ``drainingShare`` of what the path delivered then free. That queue is the
    /// probe's own, or the keyframe burst of the layer switched to on the new estimate, and the
    /// media drain it: cutting the estimate to 0.9x the acked rate for it, which is mostly the
    /// lower layer sent before, throws away what the probe just measured (issue 20: a small
    /// `tc tbf` queue cut the estimate after every probe, and at 1.2 Mbit/s a subscriber flipped
    /// between two layers every second: probe, upgrade, the keyframe's queue, cut, downgrade).
    /// Overuse that lasts past the window, or loss, still cuts.
    private func probeQueueDraining(nowNanos: Int64) -> Bool {
        guard let probe = probeMeasurement, nowNanos - probe.nanos < Self.probeQueueNanos, allocatedBitrate > 0 else { return false }
        return allocatedBitrate <= (1 - Self.drainingShare) * probe.rate
    }

    /// Congestion at `bitrate`: what was carried above it is no longer proven.
    private mutating func forgetProven(above bitrate: Double) {
        provenSamples.removeAll { $0.bitrate > bitrate }
    }

    /// Within 15% of the rate the path delivered at the last overuse: the delay signal found our limit here.
    private var nearLastOveruse: Bool {
        guard let atOveruse = bitrateAtOveruse else { return false }
        return abs(delayBased - atOveruse) < 0.15 * atOveruse
    }

    /// 1.08 to the power `seconds` (8%/s), one second at most per update.
    private func pow1_08(_ seconds: Double) -> Double { pow(1.08, min(max(seconds, 0), 1)) }

    // MARK: loss-based

    private mutating func updateLoss(nowNanos: Int64) {
        lossWindow.removeAll { nowNanos - $0.nanos > 1_000_000_000 }
        guard lossWindow.count >= 20 else { return }
        lossFraction = Double(lossWindow.filter(\.lost).count) / Double(lossWindow.count)
        let dt = Double(nowNanos - (lastLossUpdateNanos ?? nowNanos)) / 1e9
        lastLossUpdateNanos = nowNanos
        if lossFraction > 0.10 {
            // At most one decrease per RTT + 300 ms (GCC), and never below most of what did arrive:
            // a sender that keeps overshooting while it switches down must not drive the estimate
            // to the floor.
            if lastLossDecreaseNanos.map({ nowNanos - $0 >= rttNanos + 300_000_000 }) ?? true {
                lastLossDecreaseNanos = nowNanos
                let floor = max(configuration.minBitrate, 0.85 * (ackedBitrate ?? 0))
                lossBased = max(floor, min(lossBased, estimate) * (1 - 0.5 * lossFraction))
                forgetProven(above: lossBased)
            }
        } else if lossFraction < 0.02 {
            lossBased = min(configuration.maxBitrate, max(lossBased, estimate) * pow1_08(dt))
        } else {
            lossBased = max(min(lossBased, configuration.maxBitrate), estimate)
        }
    }

    // MARK: probing

    private mutating func evaluateProbe(_ cluster: Int, _ packets: [PacketResult], nowNanos: Int64) {
        guard let probe = probes.removeValue(forKey: cluster), packets.count >= 4 else { return }
        let sorted = packets.sorted { ($0.arrivalNanos ?? 0) < ($1.arrivalNanos ?? 0) }
        guard let firstArrival = sorted.first?.arrivalNanos, let lastArrival = sorted.last?.arrivalNanos, lastArrival > firstArrival else { return }
        let sends = packets.map(\.sendNanos)
        guard let firstSend = sends.min(), let lastSend = sends.max(), lastSend > firstSend else { return }
        // Everything sent and received over the probe's spans, the media beside it included: the
        // path carried both (a probe sent on top of the media overfills a link the probe alone fits).
        let sentBytes = recent.reduce(0) { $0 + ($1.send > firstSend && $1.send <= lastSend ? $1.size : 0) }
        let receivedBytes = recent.reduce(0) { acc, r in
            guard let a = r.arrival, a > firstArrival, a <= lastArrival else { return acc }
            return acc + r.size
        }
        let receiveRate = Double(receivedBytes) * 8 * 1e9 / Double(lastArrival - firstArrival)
        let sendRate = Double(sentBytes) * 8 * 1e9 / Double(lastSend - firstSend)
        var measured = min(receiveRate, sendRate, probe.rate)
        let saturated = receiveRate < 0.9 * sendRate
        // What the path delivered: at saturation, what arrived (what it carries); else what it carried.
        var delivered = saturated ? receiveRate : measured
        // Received at under 90% of its send rate, the probe saturated the path: it measured the
        // bottleneck, not our share of it (cross traffic hardly interleaves with a 15 ms burst).
        // While the media fill the estimate near the last overuse, that share is at most what the
        // path delivered then (libwebrtc probes only an application-limited sender).
        if saturated, nearLastOveruse, let atOveruse = bitrateAtOveruse,
           let acked = ackedBitrate, acked >= 0.9 * delayBased {
            measured = min(measured, atOveruse)
            delivered = min(delivered, atOveruse)
        }
        probeMeasurement = (nowNanos, delivered)
        // What a saturating probe delivered counts as carried, as media the path carried do.
        if saturated { provenSamples.append((nowNanos, delivered)) }
        // The path carried the probe: the estimate may jump to what arrived.
        if measured > delayBased {
            // If overuse follows, the cap is what the probe raised the estimate to (the path held it only briefly).
            lastProbeSuccess = (lastRateUpdateNanos ?? 0, 0.95 * measured)
            lastProbeRaise = lastRateUpdateNanos ?? 0
            if measured >= 0.8 * probe.rate { probeCarried = lastRateUpdateNanos ?? 0 }
            delayBased = min(configuration.maxBitrate, 0.95 * measured)
            lossBased = max(lossBased, delayBased)
            estimate = max(configuration.minBitrate, min(delayBased, lossBased))
        }
    }
}
