#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSFUShim
import Logging
import NIOCore

/// Why the server closed an ICE-TCP connection (the `reason` label of
/// `sfu_ice_tcp_connections_closed_total`).
package enum TCPCloseReason: String, CaseIterable, Sendable {
    /// Above a ``TCPAdmission/Limits`` limit when accepted.
    case limit
    /// No valid STUN check within the authentication timeout.
    case unauthenticatedTimeout = "unauthenticated_timeout"
    /// Before authenticating, a frame that was not STUN.
    case notSTUN = "not_stun"
    /// Before authenticating, a frame longer than the receive limit.
    case oversizeFrame = "oversize_frame"
    /// Authenticated, then nothing received for the idle timeout.
    case idle
    /// Bytes waited to be written, without the queue ever emptying, for the stalled timeout.
    case stalled
    /// The peer closed or reset it.
    case peerClosed = "peer_closed"
    /// Its session was removed (left, closed, consent lost).
    case sessionClosed = "session_closed"
    case shutdown
}

/// Counters of a worker's ICE-TCP side, for metrics.
package struct TCPStatistics: Sendable, Equatable {
    package var open = 0
    package var accepted = 0
    package var closed: [TCPCloseReason: Int] = [:]
    /// Frames skipped because they were longer than the receive limit (authenticated connections).
    package var oversizeFrames = 0
    /// Frames not queued because the connection's write queue was full.
    package var sendQueueFull = 0
    /// Frames for a connection that is gone (the peer closed it; its session has not moved yet).
    package var noConnection = 0
    package init() {}

    package mutating func add(_ o: TCPStatistics) {
        open += o.open
        accepted += o.accepted
        for (k, v) in o.closed { closed[k, default: 0] += v }
        oversizeFrames += o.oversizeFrames
        sendQueueFull += o.sendQueueFull
        noConnection += o.noConnection
    }
}

/// Where the frames an ICE-TCP connection delivers go: the worker's one receive path.
package protocol TCPFrameReceiver: AnyObject {
    /// A frame from `source` (a TCP address). - Returns: whether it passed an ICE check of the
    /// session it was routed to (the connection is then authenticated).
    func receiveFrame(_ frame: UnsafeMutableRawBufferPointer, from source: TransportAddress, nowNanos: Int64) -> Bool
    /// The frames of one read were all handed over (the receiver writes what they caused).
    func framesReceived()
}

/// A media worker's passive ICE-TCP side (RFC 6544): a listening socket on the worker's loop and
/// the connections it accepted. Each connection's stream is cut into frames (RFC 4571,
/// ``FrameReader``) that enter the same demultiplexing and transports as UDP datagrams, under the
/// connection's remote address marked TCP; what a transport sends to such an address is framed
/// into the connection's ``FrameWriteQueue`` and written when the worker flushes.
///
/// Limits (``TCPAdmission``): connections per address, unauthenticated connections per address and
/// in all, 10 s to authenticate; before that a connection may only send STUN. A peer that stops
/// reading loses frames (its queue is bounded) and then the connection.
package final class ICETCPServer {
    final class Connection {
        var fd: Int32
        let remote: TransportAddress
        var reader = FrameReader()
        var writer = FrameWriteQueue()
        var authenticated = false
        let openedNanos: Int64
        var lastReceiveNanos: Int64
        /// Since when the queue has not been empty after a write (nil: all written).
        var waitingSinceNanos: Int64?
        var watchingWritable = false
        var dirty = false

        init(fd: Int32, remote: TransportAddress, nowNanos: Int64) {
            self.fd = fd
            self.remote = remote
            openedNanos = nowNanos
            lastReceiveNanos = nowNanos
        }

        var isOpen: Bool { fd >= 0 }
    }

    package private(set) var localAddress: TransportAddress
    private let loop: MediaEventLoop
    private let logger: Logger
    private unowned let receiver: TCPFrameReceiver
    private var listener: Int32
    private var connections: [TransportAddress: Connection] = [:]
    private var dirty: [Connection] = []
    private var admission: TCPAdmission
    private var stats = TCPStatistics()
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 16)
    private var nextSweepNanos: Int64 = 0
    private var acceptPaused = false

    /// Accepted per readiness of the listener, reads per readiness of a connection.
    static let acceptsPerWakeup = 64
    static let readsPerWakeup = 4

    package var statistics: TCPStatistics {
        var s = stats
        s.open = connections.count
        return s
    }

    init(listener: Int32, localAddress: TransportAddress, loop: MediaEventLoop, receiver: TCPFrameReceiver, limits: TCPAdmission.Limits,
         logger: Logger) {
        self.listener = listener
        self.localAddress = localAddress
        self.loop = loop
        self.receiver = receiver
        self.logger = logger
        admission = TCPAdmission(limits: limits)
    }

    deinit { scratch.deallocate() }

    /// A non-blocking TCP socket listening on `address` (SO_REUSEADDR).
    package static func listen(on address: TransportAddress) throws -> Int32 {
        try MediaWorker.boundSocket(address, type: SOCK_STREAM, what: "ICE-TCP listen on \(address) (SFU_MEDIA_TCP_PORT; 0 turns ICE-TCP off)",
                                    finish: { Glibc.listen($0, 512) })
    }

    /// Starts accepting (on the loop).
    func attach() throws {
        try loop.register(listener) { [unowned self] readable, _ in
            if readable { self.acceptConnections() }
        }
        if let bound = TransportAddress(localOf: listener) { localAddress.port = bound.port }
        localAddress.isTCP = true
    }

    private func acceptConnections() {
        let now = MediaWorker.nowNanos
        for _ in 0..<Self.acceptsPerWakeup {
            guard listener >= 0 else { return }
            var storage = sockaddr_in6()
            var length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    accept(listener, $0, &length)
                }
            }
            guard fd >= 0 else {
                let e = errno
                if e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM { pauseAccepting(errno: e) }
                return
            }
            stats.accepted += 1
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            guard let peer = withUnsafeBytes(of: &storage, { $0.baseAddress.flatMap { TransportAddress(sockaddr: $0) } }),
                  admission.admit(peer.ip)
            else {
                Glibc.close(fd)
                stats.closed[.limit, default: 0] += 1
                continue
            }
            var on: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
            let connection = Connection(fd: fd, remote: peer.over(tcp: true), nowNanos: now)
            do {
                // The loop holds the connection (in this handler) until it is deregistered.
                try loop.register(fd) { [unowned self] readable, writable in
                    if writable { self.writable(connection) }
                    if readable { self.read(connection) }
                }
            } catch {
                admission.closed(peer.ip, wasAuthenticated: false)
                Glibc.close(fd)
                continue
            }
            // A stale connection under the same address (its close not seen yet) gives way.
            if let old = connections[connection.remote] { close(old, .peerClosed) }
            connections[connection.remote] = connection
        }
    }

    /// Out of descriptors or memory: the listener stays readable, so it is left alone for a moment
    /// instead of spinning on it.
    private func pauseAccepting(errno e: Int32) {
        guard !acceptPaused, listener >= 0 else { return }
        acceptPaused = true
        loop.deregister(listener)
        logger.warning("ICE-TCP accept paused for 100 ms", metadata: ["error": "\(String(cString: strerror(e)))"])
        let bound = NIOLoopBound(self, eventLoop: loop)
        _ = loop.scheduleTask(in: .milliseconds(100)) {
            let server = bound.value
            server.acceptPaused = false
            guard server.listener >= 0 else { return }
            try? server.loop.register(server.listener) { [unowned server] readable, _ in
                if readable { server.acceptConnections() }
            }
        }
    }

    private func read(_ c: Connection) {
        for _ in 0..<Self.readsPerWakeup {
            guard c.isOpen else { return }
            let n = recv(c.fd, scratch.baseAddress, scratch.count, Int32(MSG_DONTWAIT))
            if n == 0 {
                close(c, .peerClosed)
                return
            }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
                close(c, .peerClosed)
                return
            }
            let now = MediaWorker.nowNanos
            c.lastReceiveNanos = now
            c.reader.consume(UnsafeMutableRawBufferPointer(rebasing: scratch[0..<n])) { event in
                handle(event, on: c, nowNanos: now)
            }
            receiver.framesReceived()
            if n < scratch.count { return }
        }
    }

    private func handle(_ event: FrameReader.Event, on c: Connection, nowNanos now: Int64) -> Bool {
        guard c.isOpen else { return false }
        switch event {
        case .oversize:
            guard c.authenticated else {
                close(c, .oversizeFrame)
                return false
            }
            stats.oversizeFrames += 1
            return true
        case .frame(let frame):
            if !c.authenticated, !STUNMessage.isSTUN(UnsafeRawBufferPointer(frame)) {
                close(c, .notSTUN)
                return false
            }
            let passed = receiver.receiveFrame(frame, from: c.remote, nowNanos: now)
            guard c.isOpen else { return false }
            if passed, !c.authenticated {
                c.authenticated = true
                admission.authenticated(c.remote.ip)
                logger.debug("ICE-TCP connection authenticated", metadata: ["remote": "\(c.remote)"])
            }
            return true
        }
    }

    /// Queues a frame for the connection at `address`.
    func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        guard let c = connections[address] else {
            stats.noConnection += 1
            return
        }
        guard c.writer.append(datagram) else {
            stats.sendQueueFull += 1
            return
        }
        if !c.dirty {
            c.dirty = true
            dirty.append(c)
        }
    }

    /// Whether frames were queued since the last flush.
    var hasQueued: Bool { !dirty.isEmpty }

    /// Writes what the connections queued since the last flush. - Returns: whether any bytes left.
    @discardableResult
    func flush(nowNanos: Int64) -> Bool {
        guard !dirty.isEmpty else { return false }
        var wrote = false
        for c in dirty {
            c.dirty = false
            if c.isOpen, !c.watchingWritable { wrote = drain(c, nowNanos: nowNanos) || wrote }
        }
        dirty.removeAll(keepingCapacity: true)
        return wrote
    }

    /// Writes as much of `c`'s queue as the socket takes; watches for writability while some waits.
    private func drain(_ c: Connection, nowNanos: Int64) -> Bool {
        var wrote = false
        while !c.writer.isEmpty {
            let n = c.writer.drain { bytes in Glibc.send(c.fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                wrote = true
                continue
            }
            if n < 0, errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR {
                close(c, .peerClosed)
                return wrote
            }
            if n < 0, errno == EINTR { continue }
            break
        }
        if c.writer.isEmpty {
            c.waitingSinceNanos = nil
            if c.watchingWritable {
                c.watchingWritable = false
                loop.watchWritable(c.fd, false)
            }
        } else {
            if c.waitingSinceNanos == nil { c.waitingSinceNanos = nowNanos }
            if !c.watchingWritable {
                c.watchingWritable = true
                loop.watchWritable(c.fd, true)
            }
        }
        return wrote
    }

    private func writable(_ c: Connection) {
        guard c.isOpen else { return }
        _ = drain(c, nowNanos: MediaWorker.nowNanos)
    }

    /// Closes what timed out: unauthenticated too long, idle, or stalled. Called on the worker's
    /// tick; looks at the connections once a second.
    func sweep(nowNanos now: Int64) {
        guard now >= nextSweepNanos, !connections.isEmpty else { return }
        nextSweepNanos = now + 1_000_000_000
        let limits = admission.limits
        for c in Array(connections.values) {
            // (Stalled first: a peer that stopped reading has usually stopped sending too.)
            if !c.authenticated, now - c.openedNanos > limits.authenticationTimeoutNanos {
                close(c, .unauthenticatedTimeout)
            } else if let since = c.waitingSinceNanos, now - since > limits.stalledTimeoutNanos {
                close(c, .stalled)
            } else if c.authenticated, now - c.lastReceiveNanos > limits.idleTimeoutNanos {
                close(c, .idle)
            }
        }
    }

    /// Closes the connection at `address`, if there is one (its session is gone), after trying to
    /// write what waits (a DTLS close alert).
    func closeConnection(at address: TransportAddress, _ reason: TCPCloseReason) {
        guard let c = connections[address] else { return }
        if !c.writer.isEmpty { _ = drain(c, nowNanos: MediaWorker.nowNanos) }
        close(c, reason)
    }

    private func close(_ c: Connection, _ reason: TCPCloseReason) {
        guard c.isOpen else { return }
        loop.deregister(c.fd)
        Glibc.close(c.fd)
        c.fd = -1
        c.watchingWritable = false
        admission.closed(c.remote.ip, wasAuthenticated: c.authenticated)
        if connections[c.remote] === c { connections[c.remote] = nil }
        stats.closed[reason, default: 0] += 1
        if reason != .peerClosed && reason != .sessionClosed && reason != .shutdown {
            logger.debug("ICE-TCP connection closed", metadata: ["remote": "\(c.remote)", "reason": "\(reason.rawValue)"])
        }
    }

    /// Closes every connection and the listener (on the loop).
    func stop() {
        for c in Array(connections.values) { closeConnection(at: c.remote, .shutdown) }
        if listener >= 0 {
            if !acceptPaused { loop.deregister(listener) }
            Glibc.close(listener)
            listener = -1
        }
    }
}
