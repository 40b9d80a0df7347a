import Testing
@testable import SFU

/// The pacer alone (pure): a budget at the pacing rate, a FIFO of what found it spent.
@Suite("Media pacer: video at a multiple of the estimate, nothing dropped")
struct MediaPacerTests {
    typealias Pacer = MediaPacer<Int>
    static let ms: Int64 = 1_000_000

    /// Offers `count` packets of `size` bytes at `now` (payload: the packet's number), as the
    /// subscriber connection does; returns those that went at once.
    static func offer(_ p: inout Pacer, count: Int, size: Int, rate: Double?, now: Int64, first: Int = 0) -> [Int] {
        var sent: [Int] = []
        for i in first..<(first + count) {
            if p.admit(size: size, bytesPerSecond: rate, nowNanos: now) {
                sent.append(i)
            } else {
                let payload = [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: size - 36)
                payload.withUnsafeBytes { p.enqueue(i, payload: $0, size: size, nowNanos: now) }
            }
        }
        return sent
    }

    /// Runs the pacer's own wake-ups until its queue is empty: (packet, release time) in order,
    /// each payload checked against its packet.
    static func drain(_ p: inout Pacer, rate: Double?, from now: Int64) -> [(item: Int, at: Int64)] {
        var out: [(Int, Int64)] = []
        var t = now
        while let next = p.nextReleaseNanos(bytesPerSecond: rate, nowNanos: t) {
            t = next
            p.release(bytesPerSecond: rate, nowNanos: t) { item, payload in
                #expect(payload.allSatisfy { $0 == UInt8(truncatingIfNeeded: item) }, "packet \(item)'s payload")
                out.append((item, t))
            }
        }
        return out
    }

    @Test func withoutAnEstimateNothingIsHeld() {
        var p = Pacer()
        #expect(Self.offer(&p, count: 100, size: 1200, rate: nil, now: 0).count == 100)
        #expect(p.isEmpty)
    }

    /// A 24 KB keyframe at a 1.1 Mbit/s pacing rate (137.5 KB/s): what the saved-up budget allows
    /// goes at once, the rest leaves at the pacing rate (~170 ms), in order, nothing lost.
    @Test func aBurstLeavesAtThePacingRateInOrder() {
        var p = Pacer()
        let rate = 137_500.0
        let now: Int64 = 1_000 * Self.ms
        let immediate = Self.offer(&p, count: 20, size: 1200, rate: rate, now: now)
        #expect(immediate == [0, 1], "only the saved-up budget goes at once: \(immediate)")
        let released = Self.drain(&p, rate: rate, from: now)
        #expect(released.map(\.item) == Array(2..<20))
        let span = Double((released.last?.at ?? now) - now) / 1e9
        let expected = Double(1100 + 17 * 1200) / rate  // the debt the first two left (1,300 saved, 2,400 sent), then 17 more
        #expect(span >= 0.9 * expected && span <= 1.1 * expected + 0.002, "\(span) s for what takes \(expected) s at the rate")
        // No two releases closer than the host's timer resolution.
        for (a, b) in zip(released, released.dropFirst()) where a.at != b.at {
            #expect(b.at - a.at >= Pacer.minimumWakeNanos)
        }
        #expect(p.longestWaitNanos == (released.last?.at ?? 0) - now)
    }

    /// A burst far larger than the rate allows (a keyframe after the estimate fell) does not wait
    /// for seconds: the queue drains within about its maximum queue time.
    @Test func aHugeBurstIsReleasedWithinTheQueueTime() {
        var p = Pacer()
        let rate = 62_500.0  // 500 kbit/s: 240 KB would take 3.8 s
        let now: Int64 = 5_000 * Self.ms
        _ = Self.offer(&p, count: 200, size: 1200, rate: rate, now: now)
        let released = Self.drain(&p, rate: rate, from: now)
        #expect(released.count >= 198)
        let span = (released.last?.at ?? now) - now
        #expect(span <= Pacer.maxQueueNanos + 30 * Self.ms, "\(span / 1_000_000) ms")
        #expect(span >= Pacer.maxQueueNanos / 2, "the drain is still spread: \(span / 1_000_000) ms")
    }

    /// Audio goes at once and spends the budget: the video behind it waits for what it took.
    @Test func audioSpendsTheBudgetVideoWaits() {
        var p = Pacer()
        let rate = 125_000.0  // 1 Mbit/s
        let now: Int64 = 1_000 * Self.ms
        #expect(Self.offer(&p, count: 1, size: 1200, rate: rate, now: now) == [0])
        // 10 ms later the budget is full again (1,300 bytes); 5 audio packets of 200 bytes take 1,000.
        let later = now + 10 * Self.ms
        for _ in 0..<5 { p.charge(size: 200, bytesPerSecond: rate, nowNanos: later) }
        #expect(Self.offer(&p, count: 1, size: 1200, rate: rate, now: later, first: 1) == [1], "300 bytes were left: it goes")
        #expect(Self.offer(&p, count: 1, size: 1200, rate: rate, now: later, first: 2).isEmpty, "the budget is spent: queued")
        let released = Self.drain(&p, rate: rate, from: later)
        #expect(released.map(\.item) == [2])
        // It waits for the 900 bytes of debt: ~7.2 ms at 125 KB/s.
        let wait = (released.first?.at ?? later) - later
        #expect(wait >= 7 * Self.ms && wait <= 10 * Self.ms, "\(wait / 1000) µs")
    }

    /// Past its packet limit the queue lets packets through rather than grow without bound.
    @Test func aFullQueueLetsPacketsThrough() {
        var p = Pacer()
        let sent = Self.offer(&p, count: Pacer.maxPackets + 10, size: 1200, rate: 1_000, now: 0)
        #expect(p.count == Pacer.maxPackets)
        // Two go on the saved-up budget, the limit's worth waits, the rest goes through.
        #expect(sent.count == 10, "\(sent.count)")
        p.removeAll()
        #expect(p.isEmpty && p.queuedBytes == 0)
    }

    /// A long queue that drains while packets keep coming keeps its arena compact and its order.
    @Test func aQueueThatNeverEmptiesKeepsItsOrder() {
        var p = Pacer()
        let rate = 125_000.0
        var now: Int64 = 0
        var next = 0
        var out: [Int] = []
        for _ in 0..<500 {
            out += Self.offer(&p, count: 2, size: 1000, rate: rate, now: now, first: next)
            next += 2
            now += 15 * Self.ms  // 2,000 bytes every 15 ms: 133 KB/s against 125: the queue grows
            p.release(bytesPerSecond: rate, nowNanos: now) { item, payload in
                #expect(payload.allSatisfy { $0 == UInt8(truncatingIfNeeded: item) })
                out.append(item)
            }
        }
        out += Self.drain(&p, rate: rate, from: now).map(\.item)
        #expect(out == Array(0..<next))
    }
}
