/// Decides which lost packets of an incoming stream to ask for, and when (RFC 4585 generic NACK).
///
/// A gap in sequence numbers registers the missing packets; each is requested at once, then
/// again every round-trip time until it arrives, it has been asked for `maxRetries` times or it is
/// older than `maxAge`. The list is bounded: when more than `maxMissing` are outstanding, the
/// oldest are given up (a keyframe request is the better remedy then; ``needsKeyframe`` says so).
package struct NACKRegister: Sendable {
    package struct Configuration: Sendable {
        package var maxRetries: Int = 10
        /// Nanoseconds after which a missing packet is given up.
        package var maxAgeNanos: Int64 = 1_000_000_000
        package var maxMissing: Int = 512
        /// Lower bound for the resend interval, in nanoseconds.
        package var minResendIntervalNanos: Int64 = 20_000_000
        package init() {}
    }

    @usableFromInline struct Entry: Sendable {
        var sequence: Int64
        var firstMissingNanos: Int64
        var lastRequestNanos: Int64?
        var retries: Int
    }

    package let configuration: Configuration
    @usableFromInline var unwrapper = SequenceUnwrapper()
    @usableFromInline var highest: Int64?
    /// Missing packets in increasing sequence order.
    @usableFromInline var missing: [Entry] = []
    /// Set when packets were given up because the list overflowed or a gap was too large.
    package private(set) var needsKeyframe = false
    /// Packets that arrived after having been requested.
    package private(set) var recovered: Int = 0
    package private(set) var givenUp: Int = 0

    package init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        missing.reserveCapacity(configuration.maxMissing)
    }

    package var missingCount: Int { missing.count }

    /// Records an arrival (original or retransmitted).
    package mutating func received(sequenceNumber: UInt16, nowNanos: Int64) {
        let ext = unwrapper.unwrap(sequenceNumber)
        guard let high = highest else {
            highest = ext
            return
        }
        if ext > high {
            let gap = ext - high - 1
            if gap > Int64(configuration.maxMissing) {
                givenUp += missing.count + Int(gap)
                missing.removeAll(keepingCapacity: true)
                needsKeyframe = true
            } else if gap > 0 {
                for s in (high + 1)..<ext {
                    missing.append(Entry(sequence: s, firstMissingNanos: nowNanos, lastRequestNanos: nil, retries: 0))
                }
                if missing.count > configuration.maxMissing {
                    let excess = missing.count - configuration.maxMissing
                    missing.removeFirst(excess)
                    givenUp += excess
                    needsKeyframe = true
                }
            }
            highest = ext
        } else if let index = index(of: ext) {
            if missing[index].lastRequestNanos != nil { recovered += 1 }
            missing.remove(at: index)
        }
    }

    /// Clears the keyframe flag once a keyframe was requested or arrived.
    package mutating func keyframeHandled() { needsKeyframe = false }

    /// The packets to request now, oldest first; marks them requested.
    /// - Parameter rttNanos: current round-trip estimate; the resend interval.
    package mutating func due(nowNanos: Int64, rttNanos: Int64) -> [UInt16] {
        var out: [UInt16] = []
        dueInto(&out, nowNanos: nowNanos, rttNanos: rttNanos)
        return out
    }

    /// As ``due(nowNanos:rttNanos:)``, appending to a caller-owned array (no allocation once it has capacity).
    package mutating func dueInto(_ out: inout [UInt16], nowNanos: Int64, rttNanos: Int64) {
        let interval = max(rttNanos, configuration.minResendIntervalNanos)
        var kept = 0
        for i in missing.indices {
            var entry = missing[i]
            if entry.retries >= configuration.maxRetries || nowNanos - entry.firstMissingNanos > configuration.maxAgeNanos {
                givenUp += 1
                continue
            }
            if entry.lastRequestNanos.map({ nowNanos - $0 >= interval }) ?? true {
                entry.lastRequestNanos = nowNanos
                entry.retries += 1
                out.append(UInt16(truncatingIfNeeded: entry.sequence))
            }
            missing[kept] = entry
            kept += 1
        }
        missing.removeLast(missing.count - kept)
    }

    /// When ``due(nowNanos:rttNanos:)`` should next be called, or nil with nothing missing.
    package func nextDeadline(rttNanos: Int64) -> Int64? {
        let interval = max(rttNanos, configuration.minResendIntervalNanos)
        return missing.map { ($0.lastRequestNanos.map { $0 + interval }) ?? $0.firstMissingNanos }.min()
    }

    @usableFromInline func index(of ext: Int64) -> Int? {
        var low = 0
        var high = missing.count
        while low < high {
            let mid = (low + high) / 2
            if missing[mid].sequence < ext { low = mid + 1 } else { high = mid }
        }
        return low < missing.count && missing[low].sequence == ext ? low : nil
    }
}
