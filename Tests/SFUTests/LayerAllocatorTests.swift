import Foundation
import RTP
import Testing
import TestSupport
@testable import SFU

/// A 720p simulcast camera as Chromium sends it: q/h/f, three temporal layers each (cumulative).
let camera: [[Int64?]] = [[60_000, 100_000, 150_000], [200_000, 350_000, 500_000], [600_000, 1_000_000, 1_500_000]]
let audioRate = 40_000.0

typealias Layer = LayerAllocator.Layer

@Suite("Layer allocation")
struct LayerAllocatorTests {
    let allocator = LayerAllocator()

    @Test func screenShareFirstThenTheActiveSpeakerThenTheRest() {
        let screen = LayerAllocator.Track(priority: 3, bitrates: [[800_000]], current: .layer(Layer(spatial: 0, temporal: 0)))
        let speaker = LayerAllocator.Track(priority: 2, bitrates: camera, current: .layer(Layer(spatial: 2, temporal: 2)))
        let other = LayerAllocator.Track(priority: 1, bitrates: camera, current: .layer(Layer(spatial: 2, temporal: 2)))
        // Listed in another order than their priority.
        let tracks = [other, speaker, screen]
        #expect(allocator.allocate(budget: 1_200_000, tracks: tracks)
            == [.layer(Layer(spatial: 0, temporal: 2)), .layer(Layer(spatial: 0, temporal: 2)), .layer(Layer(spatial: 0, temporal: 0))])
        #expect(allocator.allocate(budget: 1_700_000, tracks: tracks)
            == [.layer(Layer(spatial: 0, temporal: 2)), .layer(Layer(spatial: 1, temporal: 2)), .layer(Layer(spatial: 0, temporal: 0))])
        #expect(allocator.allocate(budget: 2_500_000, tracks: tracks)
            == [.layer(Layer(spatial: 0, temporal: 2)), .layer(Layer(spatial: 2, temporal: 2)), .layer(Layer(spatial: 0, temporal: 0))])
        #expect(allocator.allocate(budget: 2_900_000, tracks: tracks)
            == [.layer(Layer(spatial: 1, temporal: 2)), .layer(Layer(spatial: 2, temporal: 2)), .layer(Layer(spatial: 0, temporal: 0))])
        // Too little for the screen share: it is paused, the cameras still get the budget.
        #expect(allocator.allocate(budget: 400_000, tracks: tracks)
            == [.layer(Layer(spatial: 0, temporal: 2)), .layer(Layer(spatial: 0, temporal: 2)), .paused])
    }

    /// A keyframe lifts the top layer's measured bitrate above the estimate for a moment. With the
    /// default (strict) rule the track goes down; with a keep factor (the subscriber sets 0.8 while
    /// the path shows no congestion) it stays, and only keeping is eased: going up still needs the
    /// headroom, going down to a layer still needs all of its cost.
    @Test func aKeepFactorEasesOnlyKeepingTheCurrentLayer() {
        var spiking = camera
        spiking[2][2] = 1_700_000  // the top layer with a keyframe in its window
        let onTop = LayerAllocator.Track(priority: 1, bitrates: spiking, current: .layer(Layer(spatial: 2, temporal: 2)))
        var eased = LayerAllocator()
        eased.keepFactor = 0.8
        #expect(allocator.allocate(budget: 1_600_000, tracks: [onTop]) == [.layer(Layer(spatial: 1, temporal: 2))])
        #expect(eased.allocate(budget: 1_600_000, tracks: [onTop]) == [.layer(Layer(spatial: 2, temporal: 2))])
        // Below 80% of its cost even the eased rule leaves it.
        #expect(eased.allocate(budget: 1_300_000, tracks: [onTop]) == [.layer(Layer(spatial: 1, temporal: 2))])
        // Not on the top layer: the same budget does not buy the way up.
        let onMiddle = LayerAllocator.Track(priority: 1, bitrates: spiking, current: .layer(Layer(spatial: 1, temporal: 2)))
        #expect(eased.allocate(budget: 1_600_000, tracks: [onMiddle]) == [.layer(Layer(spatial: 1, temporal: 2))])
    }

    @Test func fewerTemporalLayersOfTheLowestLayerComeBeforePausing() {
        let track = LayerAllocator.Track(priority: 1, bitrates: camera, current: .layer(Layer(spatial: 0, temporal: 2)))
        #expect(allocator.allocate(budget: 120_000, tracks: [track]) == [.layer(Layer(spatial: 0, temporal: 1))])
        #expect(allocator.allocate(budget: 70_000, tracks: [track]) == [.layer(Layer(spatial: 0, temporal: 0))])
        #expect(allocator.allocate(budget: 50_000, tracks: [track]) == [.paused])
        // Upper spatial layers only whole: 700 kbit/s is h with every temporal layer, not f at 7.5 fps.
        #expect(allocator.allocate(budget: 700_000, tracks: [LayerAllocator.Track(priority: 1, bitrates: camera, current: .layer(Layer(spatial: 2, temporal: 2)))])
            == [.layer(Layer(spatial: 1, temporal: 2))])
    }

    @Test func layersThePublisherDoesNotSendAreNeverChosen() {
        let topMissing: [[Int64?]] = [camera[0], camera[1], [nil]]
        let track = LayerAllocator.Track(priority: 1, bitrates: topMissing, current: nil)
        #expect(allocator.allocate(budget: 10_000_000, tracks: [track]) == [.layer(Layer(spatial: 1, temporal: 2))])
        let lowMissing: [[Int64?]] = [[nil], camera[1], camera[2]]
        #expect(allocator.allocate(budget: 300_000, tracks: [LayerAllocator.Track(priority: 1, bitrates: lowMissing, current: nil)])
            == [.layer(Layer(spatial: 1, temporal: 0))])
    }

    @Test func aNoisyEstimateDoesNotMakeTheChoiceFlap() {
        var rng = SeededGenerator(seed: 7)
        var current: LayerAllocator.Choice? = .layer(Layer(spatial: 1, temporal: 2))
        var changes = 0
        for _ in 0..<400 {
            // ±6% around what h costs.
            let budget = 500_000 * (0.94 + Double(rng.next() % 1200) / 10_000)
            let choice = allocator.allocate(budget: budget, tracks: [LayerAllocator.Track(priority: 1, bitrates: camera, current: current)])[0]
            if choice != current { changes += 1 }
            // Never more than the budget.
            if let l = choice.layer { #expect(Double(camera[l.spatial][l.temporal] ?? 0) <= budget) }
            current = choice
        }
        // It has to leave h the first time the budget dips under it; going back up needs 15% headroom.
        #expect(changes == 1, "the choice changed \(changes) times")
        // Keeping a layer needs no headroom; going up does, and a hold forbids it.
        let atQ = LayerAllocator.Track(priority: 1, bitrates: camera, current: .layer(Layer(spatial: 0, temporal: 2)))
        #expect(allocator.allocate(budget: 540_000, tracks: [atQ]) == [.layer(Layer(spatial: 0, temporal: 2))])
        #expect(allocator.allocate(budget: 560_000, tracks: [atQ]) == [.layer(Layer(spatial: 1, temporal: 2))])
        var held = atQ
        held.upgradesAllowed = false
        #expect(allocator.allocate(budget: 5_000_000, tracks: [held]) == [.layer(Layer(spatial: 0, temporal: 2))])
    }
}

/// The sender side of a subscriber transport on a simulated link: every 250 ms the allocator spends
/// the estimate on one simulcast camera (plus audio), with the same 4 s upgrade hold after a
/// downgrade as SubscriberConnection; the link carries what was chosen, the estimator probes.
final class AllocatingSender {
    let allocator = LayerAllocator()
    var current: LayerAllocator.Choice?
    var lastAllocation: Int64 = -1_000_000_000
    /// As SubscriberConnection holds upgrades after downgrades.
    var hold = UpgradeHold(baseNanos: 4_000_000_000)
    var spend = audioRate
    /// The capacity available to us right now (the test keeps it in step with the link).
    var available: Double
    var trace: [(t: Double, spend: Double, available: Double, choice: LayerAllocator.Choice?)] = []

    init(available: Double) { self.available = available }

    func rate(estimate: Double, nowNanos: Int64) -> Double {
        if nowNanos - lastAllocation >= 250_000_000 {
            lastAllocation = nowNanos
            let held = hold.holds(at: nowNanos)
            let choice = allocator.allocate(budget: max(0, estimate - audioRate),
                                            tracks: [.init(priority: 1, bitrates: camera, current: current, upgradesAllowed: !held)])[0]
            if let old = current?.layer, choice.layer.map({ $0 < old }) ?? true { hold.downgraded(at: nowNanos) }
            current = choice
            spend = audioRate + Double(choice.layer.flatMap { camera[$0.spatial][$0.temporal] } ?? 0)
        }
        trace.append((Double(nowNanos) / 1e9, spend, available, current))
        return spend
    }

    /// The longest time the chosen layers (plus audio) were above what the link had for us, s.
    func longestOverrun(from: Double = 0) -> Double {
        var longest = 0.0
        var start: Double?
        for e in trace where e.t >= from {
            if e.spend > e.available {
                if start == nil { start = e.t }
                longest = max(longest, e.t - (start ?? e.t))
            } else {
                start = nil
            }
        }
        return longest
    }

    /// The first time from `from` on that the choice was `layer` and stayed so to the end.
    func settledOn(_ layer: Layer, from: Double) -> Double? {
        guard let last = trace.last, last.choice == .layer(layer) else { return nil }
        let lastOther = trace.last { $0.t >= from && $0.choice != .layer(layer) }
        return (lastOther?.t ?? from) - from
    }
}

@Suite("Layer allocation on simulated links")
struct AllocationSimulationTests {
    static func simulation(capacity: Double) -> (EstimatorSimulation, AllocatingSender) {
        var sim = EstimatorSimulation(capacity: capacity)
        let sender = AllocatingSender(available: capacity)
        // As SubscriberConnection asks the estimator: the top layer with the upgrade headroom.
        sim.desired = audioRate + 1_500_000 * LayerAllocator().upgradeHeadroom
        sim.rateToSend = { sender.rate(estimate: $0, nowNanos: $1) }
        return (sim, sender)
    }

    @Test func aFixedLinkGetsTheBestLayerThatFitsAndNeverMore() {
        let (sim0, sender) = Self.simulation(capacity: 1_000_000)
        var sim = sim0
        sim.run(seconds: 20)
        #expect(sender.longestOverrun() < 2, "over the link for \(sender.longestOverrun()) s")
        // h (500 kbit/s) fits, f (1.5 Mbit/s) does not.
        let settled = sender.settledOn(Layer(spatial: 1, temporal: 2), from: 0)
        #expect(settled.map { $0 < 8 } == true, "settled on h after \(settled ?? -1) s; ended on \(String(describing: sender.current))")
    }

    @Test func aStepDownAndUpIsFollowed() {
        let (sim0, sender) = Self.simulation(capacity: 2_500_000)
        var sim = sim0
        sim.run(seconds: 15)
        let top = sender.settledOn(Layer(spatial: 2, temporal: 2), from: 0)
        #expect(top.map { $0 < 10 } == true, "reached f after \(top ?? -1) s")
        // The patient walks out of Wi-Fi range: 500 kbit/s.
        sim.link.capacity = 500_000
        sender.available = 500_000
        sim.run(seconds: 15)
        #expect(sender.longestOverrun(from: 15) < 2, "over the link for \(sender.longestOverrun(from: 15)) s after the step down")
        let low = sender.settledOn(Layer(spatial: 0, temporal: 2), from: 15)
        #expect(low.map { $0 < 5 } == true, "settled on q \(low ?? -1) s after the step down; \(String(describing: sender.current))")
        // And back.
        sim.link.capacity = 2_500_000
        sender.available = 2_500_000
        sim.run(seconds: 25)
        let back = sender.settledOn(Layer(spatial: 2, temporal: 2), from: 30)
        #expect(back.map { $0 < 20 } == true, "back on f \(back ?? -1) s after the step up")
    }

    @Test func twoPercentRandomLossDoesNotCostTheTopLayer() {
        let (sim0, sender) = Self.simulation(capacity: 2_500_000)
        var sim = sim0
        sim.link.loss = 0.02
        sim.run(seconds: 20)
        let top = sender.settledOn(Layer(spatial: 2, temporal: 2), from: 0)
        #expect(top.map { $0 < 10 } == true, "with 2% loss: on f after \(top ?? -1) s; ended on \(String(describing: sender.current))")
        #expect(sender.longestOverrun() < 2)
    }

    @Test func crossTrafficLeavesLessAndTheChoiceFollows() {
        let (sim0, sender) = Self.simulation(capacity: 1_500_000)
        var sim = sim0
        sim.link.crossTraffic = 700_000
        sender.available = 800_000
        sim.run(seconds: 20)
        #expect(sender.longestOverrun() < 2, "over our share for \(sender.longestOverrun()) s")
        let h = sender.settledOn(Layer(spatial: 1, temporal: 2), from: 0)
        #expect(h.map { $0 < 10 } == true, "with cross traffic: on h after \(h ?? -1) s; ended on \(String(describing: sender.current))")
    }
}
