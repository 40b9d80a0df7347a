#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSFUShim

/// Outgoing datagrams collected in preallocated slots and written with one `sendmmsg(2)` per
/// batch: no allocation per datagram, one system call per batch instead of one per datagram.
/// Not thread-safe: owned by one event loop.
package final class DatagramSendBatch {
    package let capacity: Int
    package let slotSize: Int
    /// Datagrams queued and not yet sent.
    package var count: Int { end - start }
    package var isEmpty: Bool { end == start }
    package var isFull: Bool { end == capacity }
    /// Datagrams handed to the kernel, and datagrams dropped on a send error other than "would block".
    package private(set) var sent = 0
    package private(set) var failed = 0
    /// The errno of the last failed send.
    package private(set) var lastError: Int32 = 0

    private var start = 0
    private var end = 0
    private let slots: MessageSlots

    /// - Parameters:
    ///   - capacity: datagrams per `sendmmsg` call.
    ///   - slotSize: the largest datagram.
    package init(capacity: Int = 64, slotSize: Int = 1536) {
        precondition(capacity > 0 && slotSize > 0)
        self.capacity = capacity
        self.slotSize = slotSize
        slots = MessageSlots(capacity: capacity, slotSize: slotSize)
    }

    deinit {
        slots.deallocate()
    }

    /// Copies `datagram` into the next slot, addressed to `address` (nil: the socket's connected peer).
    /// - Returns: false when the batch is full or the datagram is larger than a slot (nothing queued).
    @discardableResult
    package func append(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress?) -> Bool {
        guard datagram.count <= slotSize else { return false }
        return append(to: address) { slot in
            if let source = datagram.baseAddress, datagram.count > 0 {
                slot.baseAddress?.copyMemory(from: source, byteCount: datagram.count)
            }
            return datagram.count
        }
    }

    /// Builds the next datagram in place: `build` writes into the slot and returns the length (0: nothing queued).
    /// - Returns: false when the batch is full or nothing was written.
    @discardableResult
    package func append(to address: TransportAddress?, building build: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard end < capacity else { return false }
        let slot = slots.storage + end * slotSize
        let length = build(UnsafeMutableRawBufferPointer(start: slot, count: slotSize))
        guard length > 0, length <= slotSize else { return false }
        slots.iovecs[end] = iovec(iov_base: slot, iov_len: length)
        var header = msghdr()
        header.msg_iov = slots.iovecs + end
        header.msg_iovlen = 1
        if let address {
            let name = slots.names + end
            header.msg_name = UnsafeMutableRawPointer(name)
            header.msg_namelen = address.write(to: UnsafeMutableRawPointer(name))
        }
        slots.messages[end] = sfu_mmsghdr(msg_hdr: header, msg_len: 0)
        end += 1
        return true
    }

    /// Writes the queued datagrams to `fd`.
    /// - Returns: true when the batch is empty afterwards; false when the socket would block, in
    ///   which case the unsent datagrams stay queued (``drainPending(_:)`` hands them elsewhere).
    @discardableResult
    package func flush(fd: Int32) -> Bool {
        while start < end {
            let n = sfu_sendmmsg(fd, slots.messages + start, UInt32(end - start), 0)
            if n > 0 {
                start += Int(n)
                sent += Int(n)
                continue
            }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS { return false }
            // This datagram cannot be sent (e.g. no route): drop it and go on with the rest.
            lastError = e
            failed += 1
            start += 1
        }
        start = 0
        end = 0
        return true
    }

    /// Calls `body` with each queued datagram and its address (nil: connected), then empties the batch.
    package func drainPending(_ body: (UnsafeRawBufferPointer, TransportAddress?) -> Void) {
        for i in start..<end {
            let m = slots.messages[i].msg_hdr
            let bytes = UnsafeRawBufferPointer(start: slots.iovecs[i].iov_base, count: slots.iovecs[i].iov_len)
            let address = m.msg_name.flatMap { TransportAddress(sockaddr: UnsafeRawPointer($0)) }
            body(bytes, address)
        }
        start = 0
        end = 0
    }

    /// Drops whatever is queued.
    package func removeAll() {
        start = 0
        end = 0
    }
}

/// Incoming datagrams read with one `recvmmsg(2)` into preallocated slots, with their source
/// addresses and, optionally, the kernel's receive time (SO_TIMESTAMPNS). Not thread-safe.
package final class DatagramReceiveBatch {
    package let capacity: Int
    package let slotSize: Int
    package let timestamps: Bool
    /// Datagrams of the last ``receive(fd:)``.
    package private(set) var count = 0
    /// Datagrams longer than a slot (cut; callers should drop them).
    package private(set) var truncated = 0

    private let slots: MessageSlots
    private let controlSize: Int
    private let control: UnsafeMutableRawPointer?

    /// - Parameter timestamps: read the SO_TIMESTAMPNS control message (the socket must have it on:
    ///   ``enableReceiveTimestamps(fd:)``).
    package init(capacity: Int = 32, slotSize: Int = 2048, timestamps: Bool = false) {
        precondition(capacity > 0 && slotSize > 0)
        self.capacity = capacity
        self.slotSize = slotSize
        self.timestamps = timestamps
        slots = MessageSlots(capacity: capacity, slotSize: slotSize)
        controlSize = timestamps ? (sfu_rx_timestamp_control_size() + 15) & ~15 : 0
        control = timestamps ? UnsafeMutableRawPointer.allocate(byteCount: controlSize * capacity, alignment: 16) : nil
    }

    deinit {
        slots.deallocate()
        control?.deallocate()
    }

    /// Sets SO_TIMESTAMPNS on `fd`. - Returns: false when the kernel refused.
    @discardableResult
    package static func enableReceiveTimestamps(fd: Int32) -> Bool { sfu_enable_rx_timestamps(fd) == 0 }

    /// Reads what is waiting on `fd`, up to ``capacity`` datagrams, without blocking.
    /// - Returns: the number read (0 when nothing is waiting), or -1 on an error other than "would block".
    package func receive(fd: Int32) -> Int {
        for i in 0..<capacity {
            var header = msghdr()
            slots.iovecs[i].iov_len = slotSize
            header.msg_iov = slots.iovecs + i
            header.msg_iovlen = 1
            header.msg_name = UnsafeMutableRawPointer(slots.names + i)
            header.msg_namelen = socklen_t(MemoryLayout<sockaddr_in6>.size)
            if let control {
                header.msg_control = control + i * controlSize
                header.msg_controllen = controlSize
            }
            slots.messages[i] = sfu_mmsghdr(msg_hdr: header, msg_len: 0)
        }
        while true {
            let n = sfu_recvmmsg(fd, slots.messages, UInt32(capacity), Int32(MSG_DONTWAIT))
            if n >= 0 {
                count = Int(n)
                for i in 0..<count where slots.messages[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 { truncated += 1 }
                return count
            }
            let e = errno
            if e == EINTR { continue }
            count = 0
            return e == EAGAIN || e == EWOULDBLOCK ? 0 : -1
        }
    }

    /// The bytes of datagram `i` (valid until the next ``receive(fd:)``; may be modified in place).
    package func datagram(_ i: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: slots.storage + i * slotSize, count: min(Int(slots.messages[i].msg_len), slotSize))
    }

    /// Whether datagram `i` was longer than a slot.
    package func isTruncated(_ i: Int) -> Bool { slots.messages[i].msg_hdr.msg_flags & Int32(MSG_TRUNC) != 0 }

    package func source(_ i: Int) -> TransportAddress? {
        guard slots.messages[i].msg_hdr.msg_namelen > 0 else { return nil }
        return TransportAddress(sockaddr: UnsafeRawPointer(slots.names + i))
    }

    /// The kernel receive time of datagram `i` (CLOCK_REALTIME nanoseconds), or 0 without timestamps.
    package func timestampNanos(_ i: Int) -> Int64 {
        guard timestamps else { return 0 }
        return withUnsafePointer(to: &slots.messages[i].msg_hdr) { sfu_rx_timestamp_nanos($0) }
    }
}

/// The preallocated memory of a batch: `capacity` slots of `slotSize` bytes, and per slot an
/// `mmsghdr`, an `iovec` (pointing at the slot, whole) and room for a socket address.
struct MessageSlots {
    let storage: UnsafeMutableRawPointer
    let messages: UnsafeMutablePointer<sfu_mmsghdr>
    let iovecs: UnsafeMutablePointer<iovec>
    let names: UnsafeMutablePointer<sockaddr_in6>

    init(capacity: Int, slotSize: Int) {
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity * slotSize, alignment: 16)
        messages = .allocate(capacity: capacity)
        messages.initialize(repeating: sfu_mmsghdr(), count: capacity)
        iovecs = .allocate(capacity: capacity)
        for i in 0..<capacity {
            iovecs.advanced(by: i).initialize(to: iovec(iov_base: storage + i * slotSize, iov_len: slotSize))
        }
        names = .allocate(capacity: capacity)
        names.initialize(repeating: sockaddr_in6(), count: capacity)
    }

    func deallocate() {
        storage.deallocate()
        messages.deallocate()
        iovecs.deallocate()
        names.deallocate()
    }
}

extension TransportAddress {
    /// The address socket `fd` is bound to (getsockname), nil when it cannot be read.
    package init?(localOf fd: Int32) {
        var storage = sockaddr_in6()
        var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        let ok = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 }
        }
        guard ok, let address = withUnsafeBytes(of: &storage, { $0.baseAddress.flatMap { TransportAddress(sockaddr: $0) } }) else {
            return nil
        }
        self = address
    }

    /// Reads a `sockaddr_in` or `sockaddr_in6`.
    package init?(sockaddr raw: UnsafeRawPointer) {
        let family = raw.load(as: sa_family_t.self)
        switch Int32(family) {
        case AF_INET:
            let a = raw.loadUnaligned(as: sockaddr_in.self)
            self.init(ip: .v4(UInt32(bigEndian: a.sin_addr.s_addr)), port: UInt16(bigEndian: a.sin_port))
        case AF_INET6:
            let a = raw.loadUnaligned(as: sockaddr_in6.self)
            var hi: UInt64 = 0, lo: UInt64 = 0
            withUnsafeBytes(of: a.sin6_addr) { b in
                for i in 0..<8 { hi = hi << 8 | UInt64(b[i]) }
                for i in 8..<16 { lo = lo << 8 | UInt64(b[i]) }
            }
            self.init(ip: .v6(hi, lo), port: UInt16(bigEndian: a.sin6_port))
        default:
            return nil
        }
    }

    /// Writes this address as a `sockaddr_in`/`sockaddr_in6` at `raw` (room for a `sockaddr_in6`).
    /// - Returns: its length.
    @discardableResult
    package func write(to raw: UnsafeMutableRawPointer) -> socklen_t {
        switch ip {
        case .v4(let a):
            var s = sockaddr_in()
            s.sin_family = sa_family_t(AF_INET)
            s.sin_port = port.bigEndian
            s.sin_addr.s_addr = a.bigEndian
            raw.storeBytes(of: s, as: sockaddr_in.self)
            return socklen_t(MemoryLayout<sockaddr_in>.size)
        case .v6(let hi, let lo):
            var s = sockaddr_in6()
            s.sin6_family = sa_family_t(AF_INET6)
            s.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &s.sin6_addr) { b in
                for i in 0..<8 {
                    b[i] = UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64(i)))
                    b[8 + i] = UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64(i)))
                }
            }
            raw.storeBytes(of: s, as: sockaddr_in6.self)
            return socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
    }
}
