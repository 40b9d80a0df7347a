#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import NIOCore
import NIOPosix
import RTP

/// Something a worker drives: it owns one ``WebRTCTransport`` and gets the worker's timer ticks.
public protocol WorkerSession: AnyObject {
    var transport: WebRTCTransport { get }
    /// Called on the worker's loop when the session is removed (closed by either side).
    func workerDidRemove()
    /// Called on every worker tick (20 ms) for periodic work: RTCP reports, feedback, pacing.
    func tick(nowNanos: Int64)
}

extension WorkerSession {
    public func tick(nowNanos: Int64) {}
}

extension EchoSession: WorkerSession {
    public func workerDidRemove() {}
}

/// One media worker: an event loop with its own UDP port (DESIGN.md principle 3). Datagrams are
/// demultiplexed to transports by STUN USERNAME (the local ufrag) for STUN, and by remote address
/// for everything else; the address map learns from authenticated STUN checks.
///
/// Reads go through NIO (vectored reads, `recvmmsg`). Writes bypass the NIO pipeline: datagrams are
/// copied into a preallocated ``DatagramSendBatch`` and written with one `sendmmsg` when a read
/// batch or a tick ends, on the worker's own socket descriptor (no `ByteBuffer`, envelope or
/// pipeline traversal per datagram). Only when the socket would block do datagrams go through
/// NIO's queue, which writes them once the socket drains.
///
/// All mutable state is confined to `eventLoop`; other threads go through ``execute(_:)``/``submit(_:)``.
public final class MediaWorker: SessionHost, @unchecked Sendable {
    public let index: Int
    public let eventLoop: EventLoop
    public let logger: Logger
    public private(set) var localAddress: TransportAddress
    private var channel: Channel?
    /// The channel's socket, written directly with `sendmmsg` (valid while `channel` is open).
    private var descriptor: Int32 = -1
    private let sendBatch = DatagramSendBatch(capacity: 64, slotSize: 1536)
    /// Datagrams handed to NIO's write queue (the socket was full) and not written yet: while there
    /// are any, later datagrams queue behind them so the order is kept.
    private var queuedInChannel = 0
    private var demux = SessionDemux()
    private var timer: RepeatedTask?
    /// Datagrams that matched no transport, for metrics.
    public private(set) var unmatched = 0
    public private(set) var received = 0
    /// Counters of sessions already removed (live sessions are added at read time).
    private var finishedTotals = TransportStatistics()

    /// A snapshot of the worker's counters (call on the worker's loop).
    public struct Snapshot: Sendable {
        public var transports: TransportStatistics
        public var sessions: Int
        public var datagramsReceived: Int
        public var datagramsUnmatched: Int
    }

    public func snapshot() -> Snapshot {
        eventLoop.preconditionInEventLoop()
        var total = finishedTotals
        for s in demux.sessions { total.add(s.transport.statistics) }
        return Snapshot(transports: total, sessions: demux.count, datagramsReceived: received, datagramsUnmatched: unmatched)
    }

    init(index: Int, eventLoop: EventLoop, localAddress: TransportAddress, logger: Logger) {
        self.index = index
        self.eventLoop = eventLoop
        self.localAddress = localAddress
        self.logger = logger
    }

    /// Binds a worker's UDP socket on `host:port` on `eventLoop`.
    public static func start(index: Int, eventLoop: EventLoop, host: String, port: Int, logger: Logger) async throws -> MediaWorker {
        guard let address = TransportAddress(host: host, port: UInt16(clamping: port)) else {
            throw MediaWorkerError.badAddress(host)
        }
        let worker = MediaWorker(index: index, eventLoop: eventLoop, localAddress: address, logger: logger)
        let batch = 32
        // Our own socket, so that the worker can write it with sendmmsg; NIO reads it.
        let fd = try Self.bindSocket(address)
        let channel: Channel
        do {
            channel = try await DatagramBootstrap(group: eventLoop)
                .channelOption(.datagramVectorReadMessageCount, value: batch)
                .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 2048 * batch))
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(MediaChannelHandler(worker: worker))
                    }
                }
                .withBoundSocket(fd)
                .get()
        } catch {
            close(fd)
            throw error
        }
        try await eventLoop.submit {
            worker.channel = channel
            worker.descriptor = fd
            if let bound = channel.localAddress?.port { worker.localAddress.port = UInt16(clamping: bound) }
            worker.timer = eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(20), delay: .milliseconds(20)) { _ in
                worker.tick()
            }
        }.get()
        logger.notice("media worker listening", metadata: ["worker": "\(index)", "address": "\(worker.localAddress)"])
        return worker
    }

    /// A non-blocking UDP socket bound to `address` (SO_REUSEADDR), with 4 MiB of socket buffers
    /// asked for (the kernel caps them at net.core.[rw]mem_max).
    static func bindSocket(_ address: TransportAddress) throws -> Int32 {
        let family = address.isIPv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw MediaWorkerError.socket("socket", errno) }
        var on: Int32 = 1
        var size: Int32 = 4 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var storage = sockaddr_in6()
        let length = withUnsafeMutableBytes(of: &storage) { address.write(to: $0.baseAddress!) }
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            let e = errno
            close(fd)
            throw MediaWorkerError.socket("bind \(address)", e)
        }
        return fd
    }

    public func execute(_ body: @escaping @Sendable () -> Void) { eventLoop.execute(body) }

    public func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await eventLoop.submit(body).get()
    }

    public static var nowNanos: Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    /// Registers a session (on the worker's loop).
    public func add(_ session: WorkerSession) {
        eventLoop.preconditionInEventLoop()
        demux.add(session)
    }

    /// Removes a session and forgets its addresses (on the worker's loop).
    public func remove(_ session: WorkerSession) {
        eventLoop.preconditionInEventLoop()
        guard demux.remove(session) != nil else { return }
        finishedTotals.add(session.transport.statistics)
        session.workerDidRemove()
    }

    public func session(ufrag: String) -> WorkerSession? { demux.session(ufrag: ufrag) }
    public var sessionCount: Int { demux.count }

    func receive(_ envelope: AddressedEnvelope<ByteBuffer>) {
        received += 1
        guard let source = TransportAddress(envelope.remoteAddress) else { return }
        var buffer = envelope.data
        let now = Self.nowNanos
        buffer.withUnsafeMutableReadableBytes { bytes in
            guard let session = demux.route(UnsafeRawBufferPointer(bytes), from: source) else {
                unmatched += 1
                return
            }
            let transport = session.transport
            transport.handleDatagram(bytes, from: source, nowNanos: now)
            demux.learn(session, from: source)
            if case .closed = transport.state { remove(session) }
        }
    }

    /// Queues a datagram; it is written when the current read batch or tick ends (``flush()``).
    public func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        guard channel != nil else { return }
        if sendBatch.append(datagram, to: address) { return }
        guard datagram.count <= sendBatch.slotSize else { return }
        flush()
        sendBatch.append(datagram, to: address)
    }

    /// Writes the queued datagrams: one `sendmmsg`, or NIO's write queue when the socket is full.
    func flush() {
        guard let channel, !sendBatch.isEmpty else { return }
        if queuedInChannel == 0, sendBatch.flush(fd: descriptor) { return }
        sendBatch.drainPending { bytes, address in
            guard let address, let socketAddress = try? SocketAddress(ipAddress: address.host, port: Int(address.port)) else { return }
            var buffer = channel.allocator.buffer(capacity: bytes.count)
            buffer.writeBytes(bytes)
            queuedInChannel += 1
            let promise = eventLoop.makePromise(of: Void.self)
            promise.futureResult.whenComplete { _ in self.queuedInChannel -= 1 }
            channel.write(AddressedEnvelope(remoteAddress: socketAddress, data: buffer), promise: promise)
        }
        channel.flush()
    }

    /// Datagrams written with `sendmmsg`, and those the kernel refused (other than "would block").
    public var datagramsSent: Int { sendBatch.sent }
    public var datagramSendFailures: Int { sendBatch.failed }

    /// Runs due timers of every session. O(sessions) per tick; sessions are few per worker today
    /// (a timer wheel is the next step when rooms grow).
    func tick() {
        let now = Self.nowNanos
        for session in Array(demux.sessions) {
            let transport = session.transport
            if let due = transport.nextTimeoutNanos, due <= now { transport.handleTimeout(nowNanos: now) }
            if case .closed = transport.state {
                remove(session)
                continue
            }
            session.tick(nowNanos: now)
        }
        flush()
    }

    public func stop() async {
        let channel = try? await eventLoop.submit { () -> Channel? in
            self.timer?.cancel()
            for session in Array(self.demux.sessions) {
                session.transport.close(reason: "server shutting down")
                self.remove(session)
            }
            self.flush()
            // The descriptor is closed with the channel: nothing may write it afterwards.
            let channel = self.channel
            self.channel = nil
            self.descriptor = -1
            return channel
        }.get()
        try? await channel?.close()
    }
}

public enum MediaWorkerError: Error, CustomStringConvertible {
    case badAddress(String)
    case socket(String, Int32)
    public var description: String {
        switch self {
        case .badAddress(let a): "media host '\(a)' is not an IP address"
        case .socket(let what, let e): "\(what) failed: \(String(cString: strerror(e)))"
        }
    }
}

final class MediaChannelHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>
    let worker: MediaWorker

    init(worker: MediaWorker) { self.worker = worker }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        worker.receive(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        worker.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // UDP errors (e.g. ICMP port unreachable surfacing as ECONNREFUSED) must not close the socket.
        worker.logger.debug("media socket error", metadata: ["error": "\(error)"])
    }
}

extension TransportAddress {
    public init?(_ address: SocketAddress) {
        switch address {
        case .v4(let v4):
            let a = UInt32(bigEndian: v4.address.sin_addr.s_addr)
            self.init(ip: .v4(a), port: UInt16(bigEndian: v4.address.sin_port))
        case .v6(let v6):
            var storage = v6.address.sin6_addr
            let bytes = withUnsafeBytes(of: &storage) { Array($0) }
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(bytes[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(bytes[i]) }
            self.init(ip: .v6(hi, lo), port: UInt16(bigEndian: v6.address.sin6_port))
        default:
            return nil
        }
    }
}
