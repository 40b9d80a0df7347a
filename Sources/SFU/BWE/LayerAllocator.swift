/// Spends one subscriber's downlink estimate on its video consumers (sans-IO, pure).
///
/// Every track first gets the cheapest layer it can have, by priority (screen share, then the
/// active speaker, then the rest): the lowest spatial layer, with fewer temporal layers if need be.
/// What is left then upgrades the tracks, again by priority, each to the highest layer that fits
/// (above the lowest spatial layer, only with all its temporal layers). A track that cannot have
/// even its lowest layer is paused.
///
/// Hysteresis, so the choice does not flap with a noisy estimate:
/// - keeping a layer needs `keepFactor` times its bitrate to fit (1 by default; the caller lowers it
///   while the path shows no congestion), going down to a layer needs its bitrate to fit;
/// - going above the current layer needs `upgradeHeadroom` times its extra cost to fit, and is not
///   allowed at all while `upgradesAllowed` is false (the caller holds upgrades for a while after a
///   downgrade);
/// - resuming a paused track needs `resumeHeadroom` times its lowest layer (a new track needs no
///   headroom).
package struct LayerAllocator: Sendable {
    package var upgradeHeadroom = 1.15
    package var resumeHeadroom = 1.3
    package var keepFactor = 1.0

    /// A layer: spatial index (0 lowest) and the highest temporal layer forwarded.
    package struct Layer: Sendable, Equatable, Comparable {
        package var spatial: Int
        package var temporal: Int
        package init(spatial: Int, temporal: Int) {
            self.spatial = spatial
            self.temporal = temporal
        }
        package static func < (a: Layer, b: Layer) -> Bool { (a.spatial, a.temporal) < (b.spatial, b.temporal) }
    }

    package enum Choice: Sendable, Equatable {
        case paused
        case layer(Layer)

        package var layer: Layer? {
            if case .layer(let l) = self { return l }
            return nil
        }
    }

    package struct Track: Sendable, Equatable {
        /// Higher goes first (screen 3, active speaker 2, other cameras 1).
        package var priority: Int
        /// `bitrates[s][t]`: bits/s of spatial layer s with temporal layers 0...t; nil where the
        /// publisher does not send that layer.
        package var bitrates: [[Int64?]]
        /// What the track has now (nil: nothing yet, treated like paused for headroom).
        package var current: Choice?
        /// The caller's hold after a recent downgrade.
        package var upgradesAllowed: Bool

        package init(priority: Int, bitrates: [[Int64?]], current: Choice?, upgradesAllowed: Bool = true) {
            self.priority = priority
            self.bitrates = bitrates
            self.current = current
            self.upgradesAllowed = upgradesAllowed
        }

        /// The cheapest layer the publisher sends.
        package var lowestLayer: Layer? { layers.first }

        package func cost(_ l: Layer) -> Int64? {
            guard l.spatial >= 0, l.spatial < bitrates.count, l.temporal >= 0, l.temporal < bitrates[l.spatial].count else { return nil }
            return bitrates[l.spatial][l.temporal]
        }

        /// The available layers, cheapest (lowest) first.
        var layers: [Layer] {
            var out: [Layer] = []
            for s in bitrates.indices {
                for t in bitrates[s].indices where bitrates[s][t] != nil { out.append(Layer(spatial: s, temporal: t)) }
            }
            return out
        }
    }

    package init() {}

    /// The choice per track (same order as `tracks`) for `budget` bits/s of video.
    package func allocate(budget: Double, tracks: [Track]) -> [Choice] {
        var choices = [Choice](repeating: .paused, count: tracks.count)
        var remaining = budget
        let order = tracks.indices.sorted { tracks[$0].priority > tracks[$1].priority || (tracks[$0].priority == tracks[$1].priority && $0 < $1) }
        // Pass 1: the cheapest layer for everyone, by priority. (Lower temporal layers of the
        // lowest spatial layer come before pausing.)
        for i in order {
            let track = tracks[i]
            let layers = track.layers
            guard let lowestSpatial = layers.first?.spatial else { continue }
            let candidates = layers.filter { $0.spatial == lowestSpatial }.reversed()
            for l in candidates {
                guard let cost = track.cost(l) else { continue }
                if Double(cost) * factor(track, l) <= remaining {
                    choices[i] = .layer(l)
                    remaining -= Double(cost)
                    break
                }
            }
        }
        // Pass 2: upgrades, by priority, each track to the best layer that fits.
        for i in order {
            let track = tracks[i]
            guard let chosen = choices[i].layer, let chosenCost = track.cost(chosen) else { continue }
            var best: (Layer, Int64)?
            // Above the lowest spatial layer only whole layers (every temporal layer): a sharper
            // picture at a quarter of the frame rate is worse for a conversation than the layer below.
            let layers = track.layers
            let lowestSpatial = layers.first?.spatial ?? 0
            for l in layers where l > chosen && (l.spatial == lowestSpatial || l.temporal == track.bitrates[l.spatial].count - 1) {
                guard let cost = track.cost(l) else { continue }
                let extra = Double(cost - chosenCost)
                if extra * factor(track, l) <= remaining { best = (l, cost) }
            }
            if let (l, cost) = best {
                remaining -= Double(cost - chosenCost)
                choices[i] = .layer(l)
            }
        }
        return choices
    }

    /// How much of a layer's cost must fit: 1 to keep what the track has (or less), more to go above it.
    func factor(_ track: Track, _ l: Layer) -> Double {
        switch track.current {
        case .layer(let current)? where l == current: return keepFactor
        case .layer(let current)? where l < current: return 1
        case .layer?: return track.upgradesAllowed ? upgradeHeadroom : .infinity
        case .paused?: return track.upgradesAllowed ? resumeHeadroom : .infinity
        case nil: return 1  // a new track: no hysteresis yet
        }
    }
}

/// How long upgrades wait after a downgrade (pure): the base hold after a downgrade, doubled for
/// each further downgrade that comes within a minute of the previous hold's end (4, 8, 16, 32, then
/// 64 s with a 4 s base); a minute without one after the hold ends starts again from the base. A
/// subscription whose estimate hovers around a layer's threshold then settles to one try up (and
/// back down) a minute instead of switching every few seconds, each switch costing a keyframe
/// (issue 20: at most 2 spatial switches a minute at a steady constraint). The hold does not apply
/// once the estimate is 1.5x what it was at the downgrade: the path changed (a limit was lifted),
/// and the climb back must not wait a minute.
package struct UpgradeHold: Sendable, Equatable {
    package var baseNanos: Int64
    package static let memoryNanos: Int64 = 60_000_000_000
    package static let maxDoublings = 4
    package static let pathChangeFactor = 1.5
    package private(set) var lastDowngradeNanos: Int64?
    /// The downlink estimate at the last downgrade (nil: not known).
    package private(set) var estimateAtDowngrade: Double?
    /// Doublings of the base for the current hold.
    package private(set) var level = 0

    package init(baseNanos: Int64) { self.baseNanos = baseNanos }

    package mutating func downgraded(at nanos: Int64, estimate: Double? = nil) {
        if let last = lastDowngradeNanos, nanos - last < holdNanos + Self.memoryNanos {
            level = min(level + 1, Self.maxDoublings)
        } else {
            level = 0
        }
        lastDowngradeNanos = nanos
        estimateAtDowngrade = estimate
    }

    /// How long upgrades wait after the last downgrade.
    package var holdNanos: Int64 { baseNanos << Int64(level) }

    /// Whether upgrades are held at `nanos` (with the downlink estimate then, when known).
    package func holds(at nanos: Int64, estimate: Double? = nil) -> Bool {
        guard let last = lastDowngradeNanos else { return false }
        if let now = estimate, let then = estimateAtDowngrade, now >= Self.pathChangeFactor * then { return false }
        return nanos - last < holdNanos
    }
}
