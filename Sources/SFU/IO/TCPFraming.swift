/// RFC 4571 framing for ICE-TCP (RFC 6544 section 3): on the stream every STUN message, DTLS
/// record and SRTP packet goes as a 16-bit big-endian length and then that many bytes. Sans-IO:
/// the media worker feeds what `recv` read and gets whole frames back; tests and the fuzzer feed
/// bytes split anywhere.
package struct FrameReader {
    /// Frames longer than this are not delivered (a datagram path would not carry them either: the
    /// worker's UDP receive slot is as long). What their length announces is skipped.
    package let maxFrame: Int
    /// Bytes of a frame begun in an earlier read: its 2-byte length (once complete) and the body so far.
    private var pending: [UInt8] = []
    /// Bytes still to skip of an oversize frame.
    private var skipping = 0
    /// Frames delivered, oversize frames skipped, and empty frames (length 0: nothing to deliver).
    package private(set) var frames = 0
    package private(set) var oversize = 0
    package private(set) var empty = 0

    package init(maxFrame: Int = 2048) {
        self.maxFrame = maxFrame
        pending.reserveCapacity(2 + maxFrame)
    }

    /// Whether a frame is partly read (for a connection closed mid-frame, nothing is lost silently).
    package var isMidFrame: Bool { !pending.isEmpty || skipping > 0 }

    package enum Event {
        /// A whole frame (valid during the call; may be modified, as SRTP decrypts in place).
        case frame(UnsafeMutableRawBufferPointer)
        /// A frame announced longer than ``maxFrame``: its bytes are skipped as they come.
        case oversize(length: Int)
    }

    /// Feeds bytes read from the stream; calls `handle` for each whole frame and each oversize one,
    /// in stream order. `handle` returns false to stop reading (the connection is being closed):
    /// the rest of `bytes` is dropped.
    package mutating func consume(_ bytes: UnsafeMutableRawBufferPointer, _ handle: (Event) -> Bool) {
        guard let base = bytes.baseAddress else { return }
        let n = bytes.count
        var i = 0
        while i < n {
            if skipping > 0 {
                let k = min(skipping, n - i)
                skipping -= k
                i += k
                continue
            }
            if pending.isEmpty {
                // The common case: a whole frame inside this read, delivered where it lies.
                guard n - i >= 2 else {
                    pending.append(base.load(fromByteOffset: i, as: UInt8.self))
                    i += 1
                    continue
                }
                let length = Int(base.load(fromByteOffset: i, as: UInt8.self)) << 8 | Int(base.load(fromByteOffset: i + 1, as: UInt8.self))
                i += 2
                if !start(length, handle) { return }
                if length == 0 || length > maxFrame { continue }
                if n - i >= length {
                    frames += 1
                    let go = handle(.frame(UnsafeMutableRawBufferPointer(start: base + i, count: length)))
                    i += length
                    if !go { return }
                    continue
                }
                // Begun here, ends in a later read.
                pending.append(UInt8(length >> 8))
                pending.append(UInt8(length & 0xff))
                pending.append(contentsOf: UnsafeRawBufferPointer(start: base + i, count: n - i))
                i = n
                continue
            }
            if pending.count == 1 {
                let length = Int(pending[0]) << 8 | Int(base.load(fromByteOffset: i, as: UInt8.self))
                i += 1
                pending.removeAll(keepingCapacity: true)
                if !start(length, handle) { return }
                if length == 0 || length > maxFrame { continue }
                pending.append(UInt8(length >> 8))
                pending.append(UInt8(length & 0xff))
                continue
            }
            let length = Int(pending[0]) << 8 | Int(pending[1])
            let k = min(2 + length - pending.count, n - i)
            pending.append(contentsOf: UnsafeRawBufferPointer(start: base + i, count: k))
            i += k
            if pending.count == 2 + length {
                frames += 1
                let go = pending.withUnsafeMutableBytes { handle(.frame(UnsafeMutableRawBufferPointer(rebasing: $0[2...]))) }
                pending.removeAll(keepingCapacity: true)
                if !go { return }
            }
        }
    }

    /// A frame's length was read: counts an empty or oversize one (and starts skipping the latter).
    /// - Returns: what `handle` said for an oversize frame; true otherwise.
    private mutating func start(_ length: Int, _ handle: (Event) -> Bool) -> Bool {
        if length == 0 {
            empty += 1
            return true
        }
        guard length > maxFrame else { return true }
        oversize += 1
        skipping = length
        return handle(.oversize(length: length))
    }
}

/// What waits to be written on one ICE-TCP connection: whole frames (length and bytes), at most
/// ``capacity`` bytes. A frame that does not fit is dropped whole, so the stream never carries a
/// partial frame; a partial `send` leaves the rest at the head for the next.
package struct FrameWriteQueue {
    package let capacity: Int
    private var bytes: [UInt8] = []
    private var head = 0
    /// Frames dropped because the queue was full (a peer that does not read fast enough).
    package private(set) var dropped = 0
    package private(set) var queued = 0

    package init(capacity: Int = 256 * 1024) {
        self.capacity = capacity
    }

    package var isEmpty: Bool { head == bytes.count }
    /// Bytes waiting.
    package var count: Int { bytes.count - head }

    /// Queues `frame` with its length. - Returns: false (dropped) when it does not fit or is longer than 65,535 bytes.
    @discardableResult
    package mutating func append(_ frame: UnsafeRawBufferPointer) -> Bool {
        guard frame.count <= 0xFFFF, count + 2 + frame.count <= capacity else {
            dropped += 1
            return false
        }
        if head > 0, head >= bytes.count / 2 {
            bytes.removeFirst(head)
            head = 0
        }
        bytes.append(UInt8(frame.count >> 8))
        bytes.append(UInt8(frame.count & 0xff))
        bytes.append(contentsOf: frame)
        queued += 1
        return true
    }

    /// Hands the waiting bytes to `write`, which returns how many it took (0 when the socket is
    /// full, negative on error); those leave the queue.
    /// - Returns: what `write` returned.
    @discardableResult
    package mutating func drain(_ write: (UnsafeRawBufferPointer) -> Int) -> Int {
        guard !isEmpty else { return 0 }
        let n = bytes.withUnsafeBytes { write(UnsafeRawBufferPointer(rebasing: $0[head...])) }
        if n > 0 {
            head += n
            if head == bytes.count {
                bytes.removeAll(keepingCapacity: true)
                head = 0
            }
        }
        return n
    }
}

/// Who may hold an ICE-TCP connection open on a worker (RFC 6544 leaves it to us): connections
/// per remote IP address, and connections that have not yet sent a valid STUN check, per address
/// and in all. A connection above a limit is closed as soon as it is accepted. Sans-IO.
package struct TCPAdmission {
    package struct Limits: Sendable, Equatable {
        /// Connections from one IP address (a hospital's NAT may carry many patients).
        package var perAddress = 64
        /// Not yet authenticated, from one IP address.
        package var unauthenticatedPerAddress = 8
        /// Not yet authenticated, in all.
        package var unauthenticated = 256
        /// A connection that sent no valid STUN check within this is closed.
        package var authenticationTimeoutNanos: Int64 = 10_000_000_000
        /// An authenticated connection that received nothing for this long is closed (a browser
        /// sends a consent check every ~5 s; the transport gives up after 30 s of none).
        package var idleTimeoutNanos: Int64 = 30_000_000_000
        /// A connection whose write queue has not emptied for this long is closed: a peer that
        /// stopped reading, is gone without a FIN, or has taken less than was sent to it for all
        /// that time (the queue, 256 KiB, drops frames meanwhile; a peer that far behind gets
        /// nothing useful and is better off restarting ICE).
        package var stalledTimeoutNanos: Int64 = 10_000_000_000
        package init() {}
    }

    package let limits: Limits
    private var open: [TransportAddress.IP: (all: Int, unauthenticated: Int)] = [:]
    package private(set) var unauthenticated = 0

    package init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Whether a new connection from `ip` may stay; if so it is counted as open and unauthenticated.
    package mutating func admit(_ ip: TransportAddress.IP) -> Bool {
        let current = open[ip] ?? (0, 0)
        guard current.all < limits.perAddress, current.unauthenticated < limits.unauthenticatedPerAddress,
              unauthenticated < limits.unauthenticated else { return false }
        open[ip] = (current.all + 1, current.unauthenticated + 1)
        unauthenticated += 1
        return true
    }

    /// A connection from `ip` sent its first valid STUN check.
    package mutating func authenticated(_ ip: TransportAddress.IP) {
        guard var current = open[ip], current.unauthenticated > 0 else { return }
        current.unauthenticated -= 1
        open[ip] = current
        unauthenticated -= 1
    }

    /// A connection from `ip` closed (`wasAuthenticated`: whether it had been counted authenticated).
    package mutating func closed(_ ip: TransportAddress.IP, wasAuthenticated: Bool) {
        guard var current = open[ip] else { return }
        current.all -= 1
        if !wasAuthenticated, current.unauthenticated > 0 {
            current.unauthenticated -= 1
            unauthenticated -= 1
        }
        open[ip] = current.all > 0 ? current : nil
    }

    /// Open connections from `ip`.
    package func connections(from ip: TransportAddress.IP) -> Int { open[ip]?.all ?? 0 }
}
