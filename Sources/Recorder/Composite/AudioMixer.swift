import Foundation

/// Mixes the participants' decoded audio on one timeline, sans-IO: each source's PCM is placed at
/// its sample position (48 kHz, from the publisher's sender reports), and ``mix(from:count:)`` sums
/// a window of every source into stereo with a soft limiter. Missing samples (gaps, muted or absent
/// sources) are silence. Samples for a window already mixed are dropped (counted).
package struct AudioMixer: Sendable {
    package static let sampleRate = 48000

    struct Source {
        /// Sample index of `data[0]` (stereo frames).
        var start: Int64
        /// Interleaved stereo, full scale = 1.
        var data: [Float] = []
        var end: Int64 { start + Int64(data.count / 2) }
    }

    private var sources: [String: Source] = [:]
    /// Everything before this sample index has been mixed.
    package private(set) var mixedUpTo: Int64?
    /// Stereo frames that came after their window was mixed.
    package private(set) var lateSamples = 0
    /// Each source's RMS (full scale 1) over the last window mixed (0 for silence).
    package private(set) var levels: [String: Float] = [:]

    package init() {}

    /// Adds `pcm` (interleaved, `channels` 1 or 2, Int16) of `source` starting at sample `at`.
    /// Overlapping its own earlier samples, the newer ones win.
    package mutating func add(source id: String, at: Int64, pcm: [Int16], channels: Int) {
        guard channels == 1 || channels == 2, !pcm.isEmpty else { return }
        var frames = pcm.count / channels
        var at = at
        var skip = 0
        if let mixed = mixedUpTo, at < mixed {
            let late = Int(min(Int64(frames), mixed - at))
            lateSamples += late
            skip = late
            frames -= late
            at += Int64(late)
        }
        guard frames > 0 else { return }
        var s = sources[id] ?? Source(start: at)
        if s.data.isEmpty { s.start = at }
        if at < s.start {
            // Before what is buffered (reordered): grow at the front.
            s.data.insert(contentsOf: [Float](repeating: 0, count: Int(s.start - at) * 2), at: 0)
            s.start = at
        }
        let offset = Int(at - s.start) * 2
        let needed = offset + frames * 2
        if needed > s.data.count { s.data.append(contentsOf: [Float](repeating: 0, count: needed - s.data.count)) }
        let scale: Float = 1 / 32768
        s.data.withUnsafeMutableBufferPointer { d in
            pcm.withUnsafeBufferPointer { p in
                for i in 0..<frames {
                    let l = Float(p[(skip + i) * channels]) * scale
                    let r = channels == 2 ? Float(p[(skip + i) * channels + 1]) * scale : l
                    d[offset + 2 * i] = l
                    d[offset + 2 * i + 1] = r
                }
            }
        }
        sources[id] = s
    }

    /// Forgets a source (its participant left); what it had not mixed yet is dropped.
    package mutating func remove(source id: String) {
        sources[id] = nil
        levels[id] = nil
    }

    /// The samples buffered for `source` after the mixed point (stereo frames).
    package func buffered(_ id: String) -> Int { sources[id].map { Int(max(0, $0.end - max($0.start, mixedUpTo ?? $0.start))) } ?? 0 }

    /// The latest sample any source reaches (nil with nothing buffered).
    package var bufferedEnd: Int64? { sources.values.filter { !$0.data.isEmpty }.map(\.end).max() }

    /// Mixes `count` stereo frames starting at sample `from` (normally where the last mix ended).
    /// - Returns: interleaved stereo Int16, `count * 2` samples.
    package mutating func mix(from: Int64, count: Int) -> [Int16] {
        var sum = [Float](repeating: 0, count: count * 2)
        var newLevels: [String: Float] = [:]
        sum.withUnsafeMutableBufferPointer { out in
            for (id, var s) in sources {
                var energy: Float = 0
                let lo = max(from, s.start), hi = min(from + Int64(count), s.end)
                if lo < hi {
                    s.data.withUnsafeBufferPointer { d in
                        let srcOffset = Int(lo - s.start) * 2, dstOffset = Int(lo - from) * 2
                        for i in 0..<(Int(hi - lo) * 2) {
                            let x = d[srcOffset + i]
                            out[dstOffset + i] += x
                            energy += x * x
                        }
                    }
                }
                newLevels[id] = count > 0 ? (energy / Float(count * 2)).squareRoot() : 0
                // Drop what is mixed.
                let keepFrom = from + Int64(count)
                if s.end <= keepFrom {
                    s.data.removeAll(keepingCapacity: true)
                    s.start = keepFrom
                } else if s.start < keepFrom {
                    s.data.removeFirst(Int(keepFrom - s.start) * 2)
                    s.start = keepFrom
                }
                sources[id] = s
            }
        }
        levels = newLevels
        mixedUpTo = from + Int64(count)
        return sum.map { Int16(Self.limit($0) * 32767) }
    }

    /// Soft limiter: linear up to `knee` (of full scale), then a tanh curve that approaches
    /// `ceiling` without reaching it, continuous in value and slope at the knee. No wrap-around and
    /// no hard clipping when several loud sources add up.
    package static let knee: Float = 0.75
    package static let ceiling: Float = 0.98
    package static func limit(_ x: Float) -> Float {
        let a = abs(x)
        guard a > knee else { return x }
        let y = knee + (ceiling - knee) * tanh((a - knee) / (ceiling - knee))
        return x < 0 ? -y : y
    }
}
