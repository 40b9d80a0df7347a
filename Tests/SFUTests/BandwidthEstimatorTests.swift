import Foundation
import RTP
import Testing
import TestSupport
@testable import SFU

/// A bottleneck link on a fake clock: a FIFO drained at `capacity` (drop-tail at 400 ms of queue by default),
/// 25 ms of propagation, seeded random loss, optional constant cross traffic sharing the queue.
struct SimulatedLink {
    var capacity: Double
    var loss: Double = 0
    var crossTraffic: Double = 0
    var propagationNanos: Int64 = 25_000_000
    /// Drop-tail at this much queue (a `tc tbf ... latency 50ms` holds about 80 ms).
    var maxQueueNanos: Int64 = 400_000_000
    var queueFreeAt: Int64 = 0
    var rng = SeededGenerator(seed: 99)
    var crossCredit: Double = 0

    /// When a packet of `size` sent at `now` arrives, or nil if dropped.
    mutating func send(size: Int, now: Int64) -> Int64? {
        if loss > 0, Double(rng.next() % 10_000) / 10_000 < loss { return nil }
        let start = max(now, queueFreeAt)
        guard start - now <= maxQueueNanos else { return nil }
        queueFreeAt = start + Int64(Double(size * 8) / capacity * 1e9)
        return queueFreeAt + propagationNanos
    }

    /// Cross traffic for `dt`: occupies the queue like our packets do.
    mutating func cross(now: Int64, dtNanos: Int64) {
        guard crossTraffic > 0 else { return }
        crossCredit += crossTraffic * Double(dtNanos) / 1e9 / 8
        while crossCredit >= 1200 {
            crossCredit -= 1200
            _ = send(size: 1200, now: now)
        }
    }
}

/// Sender + receiver + estimator: the sender paces 1200-byte packets at the estimate (up to
/// `desired`), stamps transport-wide sequence numbers, the receiver's TWCCRecorder sends feedback
/// every 100 ms, the estimator (through SendHistory, as on a real subscriber transport) updates.
struct EstimatorSimulation {
    var link: SimulatedLink
    var estimator = BandwidthEstimator()
    var history = SendHistory()
    var recorder = TWCCRecorder(senderSSRC: 1, mediaSSRC: 2)
    var now: Int64 = 0
    var sequence: UInt16 = 0
    var budget: Double = 0
    var inFlight: [(arrival: Int64, seq: UInt16)] = []
    var lastFeedback: Int64 = 0
    var desired: Double = 5_000_000
    var trace: [(t: Double, estimate: Double)] = []
    /// What the sender sends, given the estimate (the allocator's spending); default: the estimate up to `desired`.
    var rateToSend: ((_ estimate: Double, _ nowNanos: Int64) -> Double)?
    /// An audio packet of this many bytes every 20 ms beside the rest (0: none), as a call has.
    var audioBytes = 0
    /// A simulcast subscriber's allocation instead of `rateToSend`: the highest of these layers
    /// (bits/s, lowest first) that the estimate carries (1.15x to go up, 1x to stay), sent as 30
    /// frames a second, each switch starting with a keyframe of `keyframeBytes`; the estimator is
    /// told what the layer costs, as the subscriber does.
    var layers: [Double] = []
    var keyframeBytes = 0
    var layer = 0
    var layerSwitches = 0

    init(capacity: Double) { link = SimulatedLink(capacity: capacity) }

    /// A `tc tbf`-like bottleneck on a LAN: a queue of `queueNanos`, 2 ms of propagation, a 5 ms RTT.
    static func lan(capacity: Double, queueNanos: Int64 = 80_000_000) -> EstimatorSimulation {
        var sim = EstimatorSimulation(capacity: capacity)
        sim.link.maxQueueNanos = queueNanos
        sim.link.propagationNanos = 2_000_000
        sim.estimator.setRTT(nanos: 5_000_000)
        return sim
    }

    mutating func send(size: Int, probe: Int?) {
        history.onSent(sequence: sequence, sendNanos: now, size: size, probeCluster: probe)
        if let arrival = link.send(size: size, now: now) { inFlight.append((arrival, sequence)) }
        sequence &+= 1
    }

    /// Runs `seconds` in 5 ms steps.
    mutating func run(seconds: Double) {
        let end = now + Int64(seconds * 1e9)
        while now < end {
            now += 5_000_000
            link.cross(now: now, dtNanos: 5_000_000)
            estimator.desiredBitrate = desired
            if let probe = estimator.probeToSend(nowNanos: now) {
                // The probe cluster goes out at its rate over ~15 ms (in 1 ms slots here).
                var sent = 0
                var slot: Int64 = 0
                let perMs = probe.bitrate / 8 / 1000
                var credit = 0.0
                while sent < probe.bytes {
                    credit += perMs
                    while credit >= 1200, sent < probe.bytes {
                        let saved = now
                        now = saved + slot * 1_000_000
                        send(size: 1200, probe: probe.cluster)
                        now = saved
                        credit -= 1200
                        sent += 1200
                    }
                    slot += 1
                }
            }
            if audioBytes > 0, now % 20_000_000 == 0 { send(size: audioBytes, probe: nil) }
            if !layers.isEmpty {
                let before = layer
                while layer + 1 < layers.count, estimator.estimate >= 1.15 * layers[layer + 1] { layer += 1 }
                while layer > 0, estimator.estimate < layers[layer] { layer -= 1 }
                if layer != before {
                    layerSwitches += 1
                    budget += Double(keyframeBytes)
                }
                estimator.allocatedBitrate = layers[layer]
                budget += (now % 33_333_333 < 5_000_000 ? layers[layer] * 33.3 / 5 : 0) * 0.005 / 8
            } else {
                budget += (rateToSend?(estimator.estimate, now) ?? min(estimator.estimate, desired)) * 0.005 / 8
            }
            while budget >= 1200 {
                send(size: 1200, probe: nil)
                budget -= 1200
            }
            // Arrivals up to now go to the receiver.
            inFlight.sort { $0.arrival < $1.arrival }
            while let first = inFlight.first, first.arrival <= now {
                recorder.record(sequenceNumber: first.seq, arrivalMicros: first.arrival / 1000)
                inFlight.removeFirst()
            }
            if now - lastFeedback >= 100_000_000 {
                lastFeedback = now
                for fb in recorder.buildFeedback() {
                    // The feedback reaches us one propagation delay later; close enough to "now" here.
                    estimator.onFeedback(history.onFeedback(fb), nowNanos: now + link.propagationNanos)
                }
            }
            trace.append((Double(now) / 1e9, estimator.estimate))
        }
    }

    /// The estimates after `seconds`, and their mean.
    func steady(after seconds: Double) -> (values: [Double], mean: Double) {
        let values = trace.filter { $0.t > seconds }.map(\.estimate)
        return (values, values.reduce(0, +) / Double(max(values.count, 1)))
    }

    /// The last time in the trace the estimate was outside `range` (nil: never after `from`).
    func lastOutside(_ range: ClosedRange<Double>, from: Double) -> Double? {
        trace.last { $0.t >= from && !range.contains($0.estimate) }?.t
    }
}

@Suite("Bandwidth estimation on simulated links")
struct BandwidthEstimatorTests {
    @Test func convergesToAFixedCapacityFromTheStart() {
        var sim = EstimatorSimulation(capacity: 1_500_000)
        sim.run(seconds: 15)
        // Within 20% of capacity after at most 5 s, and it stays there.
        let settled = sim.lastOutside(1_200_000...1_800_000, from: 0) ?? 0
        #expect(settled < 5, "estimate outside ±20% until \(settled) s; end \(sim.estimator.estimate)")
    }

    /// A subscriber joins a room with one 1.6 Mbit/s camera that has no simulcast (an aiortc or
    /// Firefox publisher) on a fast link: the start estimate (300 kbit/s) must reach what the track
    /// needs with headroom before the allocator's 3 s warm-up ends, or the track is paused.
    @Test func startUpProbingReachesTheDesiredRateWithinASecondAndAHalf() {
        var sim = EstimatorSimulation(capacity: 50_000_000)
        sim.desired = 1_600_000 * 1.15
        sim.run(seconds: 4)
        let reached = sim.trace.first { $0.estimate >= 1_600_000 * 1.15 }?.t
        #expect(reached.map { $0 < 1.5 } == true, "the estimate reached the desired rate after \(reached ?? -1) s")
    }

    /// What we choose not to send while a track is paused for bandwidth says nothing about the
    /// path: the estimate must not fall with it, or the paused track can never afford to resume.
    /// Without a paused track a stale estimate keeps what the path carried without congestion for
    /// 30 s (issue 20), then decays to 1.5x what is sent (at least the start rate).
    @Test(arguments: [true, false])
    func anApplicationLimitedEstimateHoldsOnlyWhileATrackIsPaused(_ paused: Bool) {
        var sim = EstimatorSimulation(capacity: 50_000_000)
        sim.desired = 2_000_000
        sim.run(seconds: 5)
        let before = sim.estimator.estimate
        #expect(before >= 1_800_000)
        // Audio only from now on, and nothing to probe for.
        sim.desired = 40_000
        sim.estimator.holdWhileApplicationLimited = paused
        sim.rateToSend = { _, _ in 40_000 }
        sim.run(seconds: 10)
        // Either way, 10 s later it still knows the path carried the 2 Mbit/s it was sent (a probe
        // may have raised it higher; that much was never carried for long).
        #expect(sim.estimator.estimate >= 1_800_000, "fell from \(before) to \(sim.estimator.estimate) while sending 40 kbit/s")
        sim.run(seconds: 25)
        if paused {
            #expect(sim.estimator.estimate >= before, "fell from \(before) to \(sim.estimator.estimate) while sending 40 kbit/s")
        } else {
            // 35 s after the path last carried more, that is stale: back to the start rate.
            #expect(sim.estimator.estimate == sim.estimator.configuration.startBitrate, "\(sim.estimator.estimate)")
        }
    }

    /// Issue 20's field case: on a 500 kbit/s link (a `tc tbf` queue of ~80 ms) a subscriber whose
    /// allocation drops to the lowest layer (~190 kbit/s with audio) for 20 s. The estimate fell to
    /// exactly 300,000 then (1.5x what was sent, at least the start rate), under the 360 kbit/s
    /// middle layer the link carries; it keeps what the link carried without congestion instead.
    @Test func aSubscriberSendingLittleKeepsTheEstimateOfItsLink() {
        var sim = EstimatorSimulation(capacity: 500_000)
        sim.link.maxQueueNanos = 80_000_000
        sim.desired = 600_000
        sim.run(seconds: 10)
        let learned = sim.estimator.estimate
        #expect(learned >= 400_000, "\(learned)")
        sim.desired = 190_000
        sim.rateToSend = { _, _ in 190_000 }
        sim.run(seconds: 20)
        let later = sim.trace.filter { $0.t > 10 }.map(\.estimate)
        #expect(!later.contains(300_000))
        #expect((later.min() ?? 0) >= 0.85 * min(learned, 500_000), "fell to \(Int(later.min() ?? 0)) from \(Int(learned))")
    }

    /// A temporal cap leaves a stream that is mostly keyframes: bursts, and little in between. The
    /// acked rate of the quiet half-seconds is far below the stream's average; an application-limited
    /// estimate must not follow it down under what the allocation costs (set by the subscriber), or
    /// the allocator would drop a layer the path carries. Before issue 20 the `false` case fell under
    /// 500 kbit/s (what the field did); what the path carried without congestion now holds it too.
    @Test(arguments: [false, true])
    func anApplicationLimitedEstimateStaysAboveWhatTheAllocationCosts(_ known: Bool) {
        var sim = EstimatorSimulation(capacity: 50_000_000)
        sim.desired = 2_000_000
        sim.run(seconds: 5)
        #expect(sim.estimator.estimate >= 1_800_000)
        // 500 kbit/s on average: 2 Mbit/s for 200 ms of every second, 125 kbit/s otherwise.
        sim.desired = 500_000
        sim.estimator.allocatedBitrate = known ? 500_000 : 0
        sim.rateToSend = { _, now in now % 1_000_000_000 < 200_000_000 ? 2_000_000 : 125_000 }
        sim.run(seconds: 40)
        // Well past the 30 s the first phase's ~2 Mbit/s counts as carried.
        let lowest = sim.trace.filter { $0.t > 38 }.map(\.estimate).min() ?? 0
        #expect(lowest >= 1.5 * 500_000, "fell to \(Int(lowest)) bit/s under a 500 kbit/s allocation")
    }

    /// Issue 20: under a `tc tbf` limit (500 kbit/s, ~80 ms of queue) on a LAN (a few ms of RTT)
    /// the estimate used 25-75% of the link. At steady state its mean must be within 15% of the
    /// link's rate. (Near the last overuse the estimate grows by one packet per RTT, ~0.96 Mbit/s a
    /// second at a 10 ms RTT; libwebrtc adds one per RTT + 100 ms. That slower climb was tried,
    /// e9c10fa, and reverted: on the E2E's 1.2 Mbit/s link it lowered the mean estimate.)
    @Test(arguments: [500_000.0, 1_200_000.0, 2_500_000.0])
    func aLimitedLinkIsUsedWithinFifteenPercentAtSteadyState(_ capacity: Double) {
        var sim = EstimatorSimulation.lan(capacity: capacity)
        sim.desired = 5_000_000
        // Frames, as the SFU forwards them (no pacer): each 33 ms frame's packets in one 5 ms step.
        sim.rateToSend = { estimate, now in now % 33_333_333 < 5_000_000 ? estimate * 33.3 / 5 : 0 }
        sim.run(seconds: 40)
        let (_, mean) = sim.steady(after: 10)
        #expect(abs(mean - capacity) <= 0.15 * capacity, "mean estimate \(Int(mean)) on a \(Int(capacity)) bit/s link")
    }

    /// Issue 20 with an HD publisher: under a limit the subscriber sends a layer well below the link,
    /// because the next one does not fit (150 kbit/s of a 500 kbit/s link, 600 kbit/s of 1.2 Mbit/s),
    /// and only probes can tell what the link carries. Each probe overfills a small queue (the
    /// `tc tbf` of the E2E, ~80 ms) and the delay detector reports it: that is the probe's own
    /// queue, which the media alone drain, not congestion. The estimate's mean at steady state must
    /// still be within 15% of the link (it was 341 and 841 kbit/s in the E2E: each probe's overuse
    /// cut it to 0.9x the media's rate, and it decayed to the 300 kbit/s start rate between probes).
    @Test(arguments: [(500_000.0, 150_000.0), (1_200_000.0, 600_000.0)])
    func anApplicationLimitedSubscriberKnowsItsLinkWithinFifteenPercent(_ capacity: Double, _ sending: Double) {
        var sim = EstimatorSimulation.lan(capacity: capacity)
        // What the next layer would need, with headroom: probing goes on.
        sim.desired = 2_500_000 * 1.15
        sim.estimator.allocatedBitrate = sending
        sim.audioBytes = 120
        // The layer's frames, each in one burst (the SFU forwards a frame's packets together).
        sim.rateToSend = { _, now in now % 33_333_333 < 5_000_000 ? sending * 33.3 / 5 : 0 }
        sim.run(seconds: 40)
        let (steady, mean) = sim.steady(after: 10)
        #expect(abs(mean - capacity) <= 0.15 * capacity, "mean estimate \(Int(mean)) on a \(Int(capacity)) bit/s link, \(Int(sending)) bit/s sent")
        // Nor does it dip after each probe: a dip under what the next layer needs switches down and
        // up again, a keyframe each time (the E2E's 320 <-> 640 flips at 1.2 Mbit/s; before, the
        // minimum here was 232 and 665 kbit/s). Nor above the link by more than a probe's margin.
        #expect((steady.min() ?? 0) >= 0.85 * capacity, "lowest \(Int(steady.min() ?? 0)) on a \(Int(capacity)) bit/s link")
        #expect((steady.max() ?? 0) <= 1.1 * capacity, "peak \(Int(steady.max() ?? 0))")
    }

    /// The other side of the rule above: overuse after a probe is left alone only while the media
    /// alone leave room on the link. When the link itself falls under what the media need (600
    /// kbit/s sent, the link from 1.2 Mbit/s to 400 kbit/s), the estimate still falls at once.
    @Test func aLinkThatFallsUnderTheMediaIsStillMetAfterProbes() {
        var sim = EstimatorSimulation.lan(capacity: 1_200_000)
        sim.desired = 2_500_000 * 1.15
        sim.estimator.allocatedBitrate = 600_000
        sim.audioBytes = 120
        sim.rateToSend = { _, now in now % 33_333_333 < 5_000_000 ? 600_000 * 33.3 / 5 : 0 }
        sim.run(seconds: 20)
        #expect(sim.estimator.estimate >= 1_000_000)
        sim.link.capacity = 400_000
        sim.run(seconds: 2)
        let fell = sim.trace.first { $0.t > 20 && $0.estimate < 500_000 }?.t
        #expect(fell.map { $0 < 21 } == true, "the estimate fell under 500 kbit/s \((fell ?? -1) - 20) s after the link went to 400 kbit/s")
    }

    /// The E2E's flip-flop at 1.2 Mbit/s (issue 20, 1 run in 10): after 500 kbit/s on the 320 layer
    /// (150 kbit/s), the link opens to 1.2 Mbit/s; a probe lifts the estimate, the subscriber takes
    /// the 640 layer (550 kbit/s) and its keyframe's burst fills the small queue; the overuse that
    /// follows cut the estimate to 0.9x the acked rate (mostly the 320 layer), back down, and the
    /// next probe lifted it again: 10 switches in 20 s. A burst of our own right after a probe
    /// drains while the layer leaves room on the link. (The simulated link shows the flip-flop with
    /// a keyframe well above its queue: 13 switches in 25 s before, 1 after.)
    @Test func aKeyframeBurstAfterAProbeDoesNotSwitchTheLayerBackDown() {
        var sim = EstimatorSimulation.lan(capacity: 500_000)
        sim.desired = 2_500_000 * 1.15
        sim.audioBytes = 120
        sim.layers = [150_000, 550_000, 2_500_000]
        // A keyframe far above what the queue holds: it overfills it (delay, then drops) at each switch.
        sim.keyframeBytes = 60_000
        sim.link.maxQueueNanos = 50_000_000
        sim.run(seconds: 15)
        #expect(sim.layer == 0)
        sim.link.capacity = 1_200_000
        sim.run(seconds: 5)
        let settled = sim.layerSwitches
        sim.run(seconds: 25)
        #expect(sim.layer == 1, "on layer \(sim.layer) of a 1.2 Mbit/s link")
        #expect(sim.layerSwitches - settled <= 1, "\(sim.layerSwitches - settled) switches in the 25 s after the first 5 at 1.2 Mbit/s")
    }

    @Test func followsAStepDownAndAStepUp() {
        var sim = EstimatorSimulation(capacity: 2_500_000)
        sim.run(seconds: 10)
        sim.link.capacity = 500_000
        sim.run(seconds: 10)
        let down = (sim.lastOutside(400_000...600_000, from: 10) ?? 10) - 10
        #expect(down < 5, "after the step down the estimate settled only \(down) s later (now \(sim.estimator.estimate))")
        sim.link.capacity = 2_500_000
        sim.run(seconds: 10)
        let up = (sim.lastOutside(2_000_000...3_000_000, from: 20) ?? 20) - 20
        #expect(up < 5, "after the step up the estimate settled only \(up) s later (now \(sim.estimator.estimate))")
    }

    /// The E2E case (issue 8): the subscriber gets the top layer (1.6 Mbit/s) when its link drops
    /// to 500 kbit/s behind a shallow queue (tc tbf, 80 ms). The sender keeps sending what it sent
    /// (the SFU switches layers only on the estimate), so the first decrease has to land near the new
    /// capacity: a decrease to 90% of the last 500 ms would still be far above it, and the layer
    /// chosen on it would not fit either (a second switch, a second freeze).
    @Test func aStepDownBehindAShallowQueueIsMetInOneDecrease() throws {
        var sim = EstimatorSimulation(capacity: 2_500_000)
        sim.rateToSend = { _, _ in 1_600_000 }
        sim.run(seconds: 10)
        #expect(sim.estimator.estimate > 1_600_000)
        sim.link.capacity = 500_000
        sim.link.maxQueueNanos = 80_000_000
        sim.run(seconds: 1)
        // The first value below 1.5 Mbit/s after the step is the first decrease.
        let first = try #require(sim.trace.first { $0.t > 10 && $0.estimate < 1_500_000 })
        #expect(first.t < 10.4, "first decrease \(first.t - 10) s after the step")
        #expect(first.estimate < 600_000, "first decrease to \(Int(first.estimate)) bit/s")
    }

    @Test func toleratesTwoPercentRandomLoss() {
        var sim = EstimatorSimulation(capacity: 1_500_000)
        sim.link.loss = 0.02
        sim.run(seconds: 15)
        let settled = sim.lastOutside(1_200_000...1_800_000, from: 0) ?? 0
        #expect(settled < 5, "with 2% loss the estimate was outside ±20% until \(settled) s; end \(sim.estimator.estimate)")
    }

    /// Issue 8: a probe burst arrives at the link's full 2 Mbit/s (the cross traffic hardly shares its
    /// 15 ms), faster than the 1.5 Mbit/s the path gives us over time; it must not lift the estimate
    /// above the share the delay signal found (it did every few seconds, to ~1.9 Mbit/s).
    @Test func sharesWithCrossTraffic() {
        var sim = EstimatorSimulation(capacity: 2_000_000)
        sim.link.crossTraffic = 500_000
        sim.run(seconds: 15)
        let settled = sim.lastOutside(1_200_000...1_800_000, from: 0) ?? 0
        let inBand = sim.trace.filter { $0.t >= 5 && (1_200_000...1_800_000).contains($0.estimate) }.count
        #expect(Double(inBand) / Double(sim.trace.filter { $0.t >= 5 }.count) > 0.9)
        #expect(settled < 5, "with 500 kbit/s of cross traffic the estimate was outside ±20% of 1.5 Mbit/s until \(settled) s")
    }

    /// The other side of `sharesWithCrossTraffic`: near the last overuse a probe that saturates the path
    /// counts for no more than what the path delivered then, so when the path frees up (the cross
    /// traffic ends, or the link grows a little) the increase has to leave that neighbourhood before
    /// probes count in full again. Still within 20% in under 5 s.
    @Test(arguments: [true, false])
    func aPathThatFreesUpIsFound(_ crossTrafficEnds: Bool) {
        var sim = EstimatorSimulation(capacity: crossTrafficEnds ? 2_000_000 : 1_500_000)
        sim.link.crossTraffic = crossTrafficEnds ? 500_000 : 0
        sim.run(seconds: 20)
        sim.link.crossTraffic = 0
        sim.link.capacity = 2_000_000
        sim.run(seconds: 10)
        let settled = (sim.lastOutside(1_600_000...2_400_000, from: 20) ?? 20) - 20
        #expect(settled < 5, "the estimate settled within 20% of 2 Mbit/s only \(settled) s later (now \(sim.estimator.estimate))")
    }
}

@Suite("Send history")
struct SendHistoryTests {
    /// Every subscriber connection keeps one: 4,096 entries of 32 bytes (128 KiB), not more.
    @Test func entriesStayCompact() {
        #expect(MemoryLayout<SendHistory.Sent>.stride == 32)
        #expect(SendHistory().capacity == 4096)
        #expect(SendHistory(capacity: 1000).capacity == 1024)
    }

    /// A packet's send time is when the host wrote the batch it was queued in (the rest of the
    /// batch's processing is not path delay); one whose batch time is unknown (not written yet,
    /// or forgotten) keeps the time it was queued.
    @Test func sendTimesAreWhenTheBatchWasWritten() {
        var history = SendHistory()
        var recorder = TWCCRecorder(senderSSRC: 1, mediaSSRC: 2)
        history.onSent(sequence: 10, sendNanos: 1_000_000, size: 100, batch: 7)
        history.onSent(sequence: 11, sendNanos: 1_200_000, size: 100, batch: 7)
        history.onSent(sequence: 12, sendNanos: 2_000_000, size: 100, batch: 8)
        for s: UInt16 in 10...12 { recorder.record(sequenceNumber: s, arrivalMicros: 5000 + Int64(s)) }
        let written: [UInt64: Int64] = [7: 1_900_000]
        let results = recorder.buildFeedback().flatMap { history.onFeedback($0) { written[$0] } }
        #expect(results.map(\.sequence) == [10, 11, 12])
        #expect(results.map(\.sendNanos) == [1_900_000, 1_900_000, 2_000_000])
    }
}
