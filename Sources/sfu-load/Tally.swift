#if canImport(Glibc)
import Glibc
#endif
/// Everything counted for the report: the streams publishers send, what each subscriber receives
/// of them inside the measurement window, and one-way latency samples.
///
/// The window is defined by the publishers' packet counters: a stream's packets from counter `c0`
/// (its next packet when the window opens) to `c1` (its count when the window closes) are expected at
/// every subscriber that receives the stream; late arrivals during the drain still count.
final class Tally {
    struct StreamInfo {
        var room: Int
        var publisher: Int
        var kind: OutgoingStream.Kind
        /// Simulcast layer (nil without simulcast): a subscriber gets one layer of a track at a time.
        var rid: String?
        var windowStart: UInt32 = 0
        var windowEnd: UInt32 = 0
    }

    /// What one subscriber received of one stream.
    struct Received {
        /// Bit i: counter windowStart + i arrived.
        var bits: [UInt64] = []
        var inWindow = 0
        var duplicates = 0
        var total = 0
        var bytes = 0
        /// Monotonic time of the last arrival, and since when packets have kept coming (no gap over 300 ms).
        var lastNanos: Int64 = 0
        var flowingSinceNanos: Int64 = 0
    }

    private(set) var streams: [StreamInfo] = []
    var windowOpen = false
    var windowClosed = false
    /// One-way latency samples in nanoseconds (window packets, first arrivals, not retransmissions).
    var latencies: [Int64] = []
    var latencyFromKernel = 0
    var latencyFromUserspace = 0
    /// Packets without a stamp that could not be placed (a payload not of ours).
    var unstamped = 0
    /// Packets of encoded frames (no stamp) placed by their sequence number from the frame's stamped last packet.
    var placedBySequence = 0
    /// Per stream id, when each packet left (streams of encoded video only).
    private var sendLog: [UInt32: SendTimes] = [:]

    func attach(_ times: SendTimes, to stream: UInt32) { sendLog[stream] = times }
    func sendTimes(_ stream: UInt32) -> SendTimes? { sendLog[stream] }
    let debugLatency = getenv("SFU_LOAD_DEBUG_LATENCY") != nil

    init() { latencies.reserveCapacity(1 << 20) }

    func addStream(room: Int, publisher: Int, kind: OutgoingStream.Kind, rid: String?) -> UInt32 {
        streams.append(StreamInfo(room: room, publisher: publisher, kind: kind, rid: rid))
        return UInt32(streams.count - 1)
    }

    func stream(_ id: UInt32) -> StreamInfo? { Int(id) < streams.count ? streams[Int(id)] : nil }

    func openWindow(counters: [(id: UInt32, next: UInt32)]) {
        for c in counters { streams[Int(c.id)].windowStart = c.next }
        windowOpen = true
    }

    func closeWindow(counters: [(id: UInt32, next: UInt32)]) {
        for c in counters { streams[Int(c.id)].windowEnd = c.next }
        windowClosed = true
    }

    /// One packet at a subscriber. - Returns: whether it was a first arrival inside the window.
    @discardableResult
    func record(_ stamp: Stamp.Value, bytes: Int, into r: inout Received, latencyNanos: Int64?, retransmission: Bool) -> Bool {
        r.total += 1
        let now = Clock.monotonicNanos
        if now - r.lastNanos > 300_000_000 { r.flowingSinceNanos = now }
        r.lastNanos = now
        r.bytes += bytes
        guard windowOpen, Int(stamp.stream) < streams.count else { return false }
        let info = streams[Int(stamp.stream)]
        guard stamp.counter >= info.windowStart else { return false }
        if windowClosed, stamp.counter >= info.windowEnd { return false }
        let offset = Int(stamp.counter - info.windowStart)
        let word = offset >> 6
        guard word < 1 << 20 else { return false }
        if word >= r.bits.count { r.bits += [UInt64](repeating: 0, count: word - r.bits.count + 64) }
        let mask = UInt64(1) << UInt64(offset & 63)
        if r.bits[word] & mask != 0 {
            r.duplicates += 1
            return false
        }
        r.bits[word] |= mask
        r.inWindow += 1
        if let latencyNanos, !retransmission {
            latencies.append(latencyNanos)
            if debugLatency, latencyNanos > 5_000_000 {
                printError("late: stream \(stamp.stream) counter \(stamp.counter) \(latencyNanos / 1000) us sent \(stamp.sendNanos % 100_000_000_000 / 1000)")
            }
        }
        return true
    }

    /// Packets of `stream` the window expects at each subscriber that gets it.
    func expected(_ stream: UInt32) -> Int {
        let info = streams[Int(stream)]
        return Int(info.windowEnd &- info.windowStart)
    }
}

/// Percentiles of a sample set.
struct Percentiles {
    var count: Int
    var p50: Double
    var p90: Double
    var p99: Double
    var max: Double
    var mean: Double

    /// - Parameter scale: divides every value (e.g. 1e6 for milliseconds from nanoseconds).
    init?(_ samples: [Int64], scale: Double) {
        guard !samples.isEmpty else { return nil }
        let sorted = samples.sorted()
        func at(_ q: Double) -> Double {
            let i = min(sorted.count - 1, Int((q * Double(sorted.count)).rounded(.up)) - 1)
            return Double(sorted[Swift.max(0, i)]) / scale
        }
        count = sorted.count
        p50 = at(0.50)
        p90 = at(0.90)
        p99 = at(0.99)
        max = Double(sorted[sorted.count - 1]) / scale
        mean = Double(sorted.reduce(0, +)) / Double(sorted.count) / scale
    }
}
