/// Paces one subscriber connection's video (libwebrtc's pacer, reduced to what an SFU needs).
///
/// Without it a video frame leaves the server as one burst: all its packets in one `sendmmsg`.
/// On a link that the layer fills to 75-80 % (a 1080p publisher's middle layer, ~900 kbit/s, on a
/// 1.2 Mbit/s link), each frame then sits in the bottleneck's queue for most of the frame interval;
/// the delay detector sees that queue grow with every larger frame and cuts, and the subscriber
/// falls back a layer. Paced, the frame leaves at `factor` times the downlink estimate: the queue
/// moves from the bottleneck into the server, where it is not mistaken for congestion, and the
/// send times the estimator sees are when packets really left.
///
/// Sans-IO and pure: a token budget refilled at the pacing rate, and a FIFO of the packets that
/// found it spent (their payloads copied into one arena, not one allocation per packet). Audio and
/// retransmissions are not queued: they go at once and spend the budget (so video yields to them).
/// Probes are paced by their own schedule and spend nothing here. Nothing is dropped: a queue that
/// would wait longer than ``maxQueueNanos`` is released faster, and one of ``maxPackets`` lets the
/// next packet through unpaced.
struct MediaPacer<Item> {
    /// The pacing rate as a multiple of the downlink estimate (libwebrtc: 2.5).
    static var factor: Double { 1.1 }
    /// What the budget saves up while nothing is queued: a frame this short at the pacing rate goes
    /// at once.
    static var burstNanos: Int64 { 5_000_000 }
    /// At least this much budget can be saved (one full-size packet).
    static var minimumBurstBytes: Double { 1_300 }
    /// The oldest queued packet waits at most about this long: the rate rises to empty the queue by
    /// then (a keyframe far larger than the estimate allows, an estimate that just fell).
    static var maxQueueNanos: Int64 { 250_000_000 }
    /// Past this many queued packets the next ones go unpaced.
    static var maxPackets: Int { 1024 }
    /// Wake-ups for the next release are at least this far apart (the host's timers have
    /// millisecond resolution).
    static var minimumWakeNanos: Int64 { 1_000_000 }
    /// An arena larger than this is given back once the queue empties.
    static var keptArenaBytes: Int { 65_536 }

    struct Entry {
        var item: Item
        var offset: Int
        var length: Int
        /// What the packet costs on the wire (header, payload, SRTP tag).
        var size: Int
        var enqueuedNanos: Int64
    }
    private var entries: [Entry] = []
    private var head = 0
    private var arena: [UInt8] = []
    private(set) var budget: Double = 0
    private var lastRefillNanos: Int64?
    private(set) var queuedBytes = 0
    /// Packets that waited in the queue, and the longest wait so far (for metrics and tests).
    private(set) var packetsQueued = 0
    private(set) var longestWaitNanos: Int64 = 0

    var isEmpty: Bool { head == entries.count }
    var count: Int { entries.count - head }

    /// The pacing rate, bytes per second, for a downlink estimate in bits per second.
    static func rate(estimateBitsPerSecond: Double) -> Double { estimateBitsPerSecond * factor / 8 }

    /// Budget saved up at `bytesPerSecond`.
    private static func burst(_ bytesPerSecond: Double) -> Double {
        max(bytesPerSecond * Double(burstNanos) / 1e9, minimumBurstBytes)
    }

    private mutating func refill(_ bytesPerSecond: Double, nowNanos: Int64) {
        if let last = lastRefillNanos {
            budget = min(budget + bytesPerSecond * Double(max(0, nowNanos - last)) / 1e9, Self.burst(bytesPerSecond))
        } else {
            budget = Self.burst(bytesPerSecond)
        }
        lastRefillNanos = nowNanos
    }

    /// The rate the queue drains at: the pacing rate, or faster when the queue would otherwise
    /// wait longer than ``maxQueueNanos``.
    private func drainRate(_ bytesPerSecond: Double, nowNanos: Int64) -> Double {
        guard !isEmpty else { return bytesPerSecond }
        let waited = nowNanos - entries[head].enqueuedNanos
        let left = max(Self.maxQueueNanos - waited, Self.burstNanos)
        return max(bytesPerSecond, Double(queuedBytes) * 1e9 / Double(left))
    }

    /// A packet of `size` bytes wants to go now. - Returns: true when it may (nothing is queued
    /// and the budget is not spent, or there is no estimate to pace by: `bytesPerSecond` nil);
    /// the budget is charged. False: queue it (``enqueue(_:payload:size:nowNanos:)``).
    mutating func admit(size: Int, bytesPerSecond: Double?, nowNanos: Int64) -> Bool {
        guard let bytesPerSecond, bytesPerSecond > 0 else { return true }
        refill(bytesPerSecond, nowNanos: nowNanos)
        guard isEmpty, budget > 0 else { return !isEmpty && count >= Self.maxPackets }
        budget -= Double(size)
        return true
    }

    /// A packet that goes at once without queueing (audio, a retransmission) spends the budget.
    mutating func charge(size: Int, bytesPerSecond: Double?, nowNanos: Int64) {
        guard let bytesPerSecond, bytesPerSecond > 0 else { return }
        refill(bytesPerSecond, nowNanos: nowNanos)
        budget -= Double(size)
    }

    /// Queues a packet that ``admit(size:bytesPerSecond:nowNanos:)`` held back: `payload` is copied.
    mutating func enqueue(_ item: Item, payload: UnsafeRawBufferPointer, size: Int, nowNanos: Int64) {
        if head > 0, head * 2 >= entries.count { compact() }
        let offset = arena.count
        arena.append(contentsOf: payload)
        entries.append(Entry(item: item, offset: offset, length: payload.count, size: size, enqueuedNanos: nowNanos))
        queuedBytes += size
        packetsQueued += 1
    }

    /// Hands the packets the budget allows now to `send`, oldest first (their payload is valid only
    /// during the call).
    mutating func release(bytesPerSecond: Double?, nowNanos: Int64, send: (Item, UnsafeRawBufferPointer) -> Void) {
        guard !isEmpty else { return }
        let rate = bytesPerSecond.map { drainRate($0, nowNanos: nowNanos) }
        if let rate, rate > 0 { refill(rate, nowNanos: nowNanos) }
        while !isEmpty {
            if let rate, rate > 0, budget <= 0 { break }
            let e = entries[head]
            head += 1
            queuedBytes -= e.size
            if bytesPerSecond != nil { budget -= Double(e.size) }
            longestWaitNanos = max(longestWaitNanos, nowNanos - e.enqueuedNanos)
            arena.withUnsafeBytes { send(e.item, UnsafeRawBufferPointer(rebasing: $0[e.offset..<(e.offset + e.length)])) }
        }
        if isEmpty { reset() }
    }

    /// When the next queued packet may go (nil: nothing is queued).
    func nextReleaseNanos(bytesPerSecond: Double?, nowNanos: Int64) -> Int64? {
        guard !isEmpty else { return nil }
        guard let bytesPerSecond, bytesPerSecond > 0 else { return nowNanos }
        let rate = drainRate(bytesPerSecond, nowNanos: nowNanos)
        let wait = budget > 0 ? 0 : Int64((-budget + 1) / rate * 1e9)
        return nowNanos + max(wait, Self.minimumWakeNanos)
    }

    /// Forgets what is queued (the connection is closing).
    mutating func removeAll() {
        entries.removeAll()
        reset()
    }

    private mutating func reset() {
        entries.removeAll(keepingCapacity: entries.capacity <= 256)
        head = 0
        queuedBytes = 0
        if arena.capacity > Self.keptArenaBytes { arena = [] } else { arena.removeAll(keepingCapacity: true) }
    }

    /// Moves the live entries and their bytes to the front.
    private mutating func compact() {
        let start = entries[head].offset
        arena.removeSubrange(0..<start)
        entries.removeSubrange(0..<head)
        head = 0
        for i in entries.indices { entries[i].offset -= start }
    }
}
