#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSFUShim
import Logging
import NIOCore
import RTP

/// One media worker: a thread (``MediaEventLoop``) with its own UDP port (DESIGN.md principle 3).
/// Datagrams are demultiplexed to transports by STUN USERNAME (the local ufrag) for STUN, and by
/// remote address for everything else; the address map learns from authenticated STUN checks.
///
/// The socket is read with `recvmmsg` into a preallocated ``DatagramReceiveBatch`` (no allocation
/// per datagram) together with each datagram's kernel receive time, which transports hand to
/// transport-wide congestion control as the arrival time (see ``WebRTCTransport/arrivalNanos``).
/// Writes are copied into a preallocated ``DatagramSendBatch`` and written with one `sendmmsg`
/// when a read batch or a tick ends. When the socket's send buffer is full, the queued datagrams
/// wait for it to drain (the loop watches for writability); datagrams that do not fit behind them
/// are dropped and counted, as the kernel drops what overflows a full buffer.
///
/// With ICE-TCP the worker also listens on a TCP port (``ICETCPServer``): frames from its
/// connections take the same demultiplexing and transports as datagrams, and what is sent to a
/// TCP address goes onto its connection.
///
/// All mutable state is confined to `eventLoop`; other threads go through ``execute(_:)``/``submit(_:)``.
package final class MediaWorker: SessionHost, TCPFrameReceiver, @unchecked Sendable {
    package let index: Int
    package let loop: MediaEventLoop
    package var eventLoop: EventLoop { loop }
    package let logger: Logger
    package private(set) var localAddress: TransportAddress
    /// The worker's socket (-1 once stopped).
    private var descriptor: Int32 = -1
    private let receiveBatch = DatagramReceiveBatch(capacity: 32, slotSize: 2048, timestamps: true)
    private let sendBatch = DatagramSendBatch(capacity: 64, slotSize: 1536)
    /// The socket was full at the last flush: the batch holds datagrams waiting for it to drain.
    private var waitingForWritable = false
    private var demux = SessionDemux()
    /// Every session and when it is next due for a tick.
    private var schedule = TickSchedule<WorkerSession>()
    private var dueScratch: [WorkerSession] = []
    /// The send batch being filled is number `writeBatch`; when each of the last
    /// `writeTimes.count` batches was written (``SessionHost/writtenNanos(batch:)``).
    package private(set) var writeBatch: UInt64 = 1
    private var writeTimes = [(batch: UInt64, nanos: Int64)](repeating: (0, 0), count: 4096)
    private var timer: RepeatedTask?
    /// Datagrams that matched no transport, for metrics.
    package private(set) var unmatched = 0
    package private(set) var received = 0
    /// Datagrams longer than a receive slot (dropped), and failed reads.
    package private(set) var receiveDropped = 0
    /// Datagrams dropped because the socket's send buffer was full.
    package private(set) var sendOverflow = 0
    /// Counters of sessions already removed (live sessions are added at read time).
    private var finishedTotals = TransportStatistics()
    /// The passive ICE-TCP side, when enabled.
    private var tcp: ICETCPServer?
    /// Where the ICE-TCP side listens (nil: no ICE-TCP).
    package var localTCPAddress: TransportAddress? { tcp?.localAddress }

    /// A snapshot of the worker's counters (call on the worker's loop).
    package struct Snapshot: Sendable {
        package var transports: TransportStatistics
        package var sessions: Int
        package var datagramsReceived: Int
        package var datagramsUnmatched: Int
        /// Datagrams longer than a receive slot, and failed reads.
        package var datagramsReceiveDropped: Int
        /// Datagrams dropped because the socket's send buffer was full.
        package var datagramsSendOverflow: Int
        /// The ICE-TCP side (zeros without it).
        package var tcp: TCPStatistics
    }

    package func snapshot() -> Snapshot {
        loop.preconditionInEventLoop()
        var total = finishedTotals
        for s in demux.sessions { total.add(s.transport.statistics) }
        return Snapshot(transports: total, sessions: demux.count, datagramsReceived: received, datagramsUnmatched: unmatched,
                        datagramsReceiveDropped: receiveDropped, datagramsSendOverflow: sendOverflow,
                        tcp: tcp?.statistics ?? TCPStatistics())
    }

    init(index: Int, loop: MediaEventLoop, localAddress: TransportAddress, logger: Logger) {
        self.index = index
        self.loop = loop
        self.localAddress = localAddress
        self.logger = logger
    }

    /// Where a worker listens for ICE-TCP.
    package enum TCPListen: Sendable, Equatable {
        case off
        /// The UDP socket's port number, on TCP.
        case sameAsUDP
        /// This port (0: any free one).
        case port(Int)
    }

    /// Starts a worker thread and binds its UDP socket on `host:port` (0: any free port) and, unless
    /// `tcp` is off, its ICE-TCP listener on the same host.
    package static func start(index: Int, host: String, port: Int, tcp: TCPListen = .off, tcpLimits: TCPAdmission.Limits = .init(),
                              logger: Logger) async throws -> MediaWorker {
        guard let address = TransportAddress(host: host, port: UInt16(clamping: port)) else {
            throw MediaWorkerError.badAddress(host)
        }
        let fd = try Self.bindSocket(address)
        var tcpFD: Int32 = -1
        switch tcp {
        case .off: break
        case .sameAsUDP, .port:
            var tcpAddress = address
            if case .port(let p) = tcp { tcpAddress.port = UInt16(clamping: p) } else { tcpAddress.port = TransportAddress(localOf: fd)?.port ?? address.port }
            do {
                tcpFD = try ICETCPServer.listen(on: tcpAddress)
            } catch {
                close(fd)
                throw error
            }
        }
        let loop: MediaEventLoop
        do {
            loop = try MediaEventLoop(name: "sfu-media-\(index)")
        } catch {
            close(fd)
            if tcpFD >= 0 { close(tcpFD) }
            throw error
        }
        let worker = MediaWorker(index: index, loop: loop, localAddress: address, logger: logger)
        do {
            try await loop.submit {
                try worker.attach(fd)
                if tcpFD >= 0 {
                    let server = ICETCPServer(listener: tcpFD, localAddress: address, loop: loop, receiver: worker, limits: tcpLimits, logger: logger)
                    worker.tcp = server
                    try server.attach()
                }
            }.get()
        } catch {
            // What attached is closed by stop(); what did not, here.
            let (udpAttached, tcpAttached) = (worker.descriptor >= 0, worker.tcp != nil)
            await worker.stop()
            if !udpAttached { close(fd) }
            if !tcpAttached, tcpFD >= 0 { close(tcpFD) }
            throw error
        }
        logger.notice("media worker listening", metadata: ["worker": "\(index)", "address": "\(worker.localAddress)",
                                                          "ice_tcp": "\(worker.localTCPAddress.map { "\($0)" } ?? "off")",
                                                          "receive_timestamps": "\(worker.kernelTimestamps)"])
        return worker
    }

    /// Whether the kernel stamps received datagrams (SO_TIMESTAMPNS); without, arrival is read time.
    package private(set) var kernelTimestamps = false

    private func attach(_ fd: Int32) throws {
        kernelTimestamps = DatagramReceiveBatch.enableReceiveTimestamps(fd: fd)
        try loop.register(fd) { [unowned self] readable, writable in
            if writable { self.socketWritable() }
            if readable { self.readSocket() }
        }
        descriptor = fd
        if let bound = TransportAddress(localOf: fd) { localAddress.port = bound.port }
        timer = loop.scheduleRepeatedTask(initialDelay: .milliseconds(20), delay: .milliseconds(20)) { [unowned self] _ in
            self.tick()
        }
    }

    /// A non-blocking UDP socket bound to `address` (SO_REUSEADDR), with 4 MiB of socket buffers
    /// asked for (the kernel caps them at net.core.[rw]mem_max).
    package static func bindSocket(_ address: TransportAddress) throws -> Int32 {
        try boundSocket(address, type: SOCK_DGRAM, what: "bind \(address)") { fd in
            var size: Int32 = 4 << 20
            _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            return 0
        }
    }

    /// A non-blocking socket of `type` bound to `address` (SO_REUSEADDR), then `finish` (the
    /// buffers of a UDP socket, `listen` for TCP: a non-zero result fails it, named by `what`).
    /// The media worker's UDP socket and its ICE-TCP listener are both made here.
    static func boundSocket(_ address: TransportAddress, type: __socket_type, what: @autoclosure () -> String,
                            finish: (Int32) -> Int32) throws -> Int32 {
        let family = address.isIPv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(type.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw MediaWorkerError.socket("socket", errno) }
        var on: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        var storage = sockaddr_in6()
        let length = withUnsafeMutableBytes(of: &storage) { address.write(to: $0.baseAddress!) }
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, finish(fd) == 0 else {
            let e = errno
            close(fd)
            throw MediaWorkerError.socket(what(), e)
        }
        return fd
    }

    package func execute(_ body: @escaping @Sendable () -> Void) { loop.execute(body) }

    package func submit<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await loop.submit(body).get()
    }

    package static var nowNanos: Int64 { SystemClock.monotonicNanos }

    /// Registers a session (on the worker's loop).
    package func add(_ session: WorkerSession) {
        loop.preconditionInEventLoop()
        demux.add(session)
        schedule.add(session)
    }

    /// Removes a session and forgets its addresses (on the worker's loop).
    package func remove(_ session: WorkerSession) {
        loop.preconditionInEventLoop()
        guard let addresses = demux.remove(session) else { return }
        if let tcp { for address in addresses where address.isTCP { tcp.closeConnection(at: address, .sessionClosed) } }
        schedule.remove(session)
        finishedTotals.add(session.transport.statistics)
        session.workerDidRemove()
    }

    package func session(ufrag: String) -> WorkerSession? { demux.session(ufrag: ufrag) }

    /// After an ICE restart of `session` (on the worker's loop).
    package func rekey(_ session: WorkerSession, from oldUfrag: String) {
        loop.preconditionInEventLoop()
        demux.rekey(session, from: oldUfrag)
    }

    /// Calls `session.wake(nowNanos:)` on the loop at `atNanos` (the loop's timers have millisecond
    /// resolution), then writes what it queued; nothing if the session is gone by then.
    package func wake(_ session: WorkerSession, atNanos: Int64) {
        loop.preconditionInEventLoop()
        let bound = NIOLoopBound(session, eventLoop: loop)
        let delay = max(0, atNanos - Self.nowNanos)
        _ = loop.scheduleTask(in: .nanoseconds(delay)) { [self] in
            let session = bound.value
            guard demux.contains(session) else { return }
            session.wake(nowNanos: Self.nowNanos)
            flush()
        }
    }
    package var sessionCount: Int { demux.count }

    /// Batches read per readiness before timers and tasks get their turn.
    static let batchesPerWakeup = 16

    /// Reads what is waiting, a batch at a time, and writes what the datagrams produced.
    func readSocket() {
        for _ in 0..<Self.batchesPerWakeup {
            guard descriptor >= 0 else { return }
            let n = receiveBatch.receive(fd: descriptor)
            guard n > 0 else {
                if n < 0 { receiveDropped += 1 }  // e.g. ICMP port unreachable surfacing as ECONNREFUSED
                break
            }
            // Kernel receive times are CLOCK_REALTIME: moved onto the monotonic clock by their age.
            let now = Self.nowNanos
            let realNow = kernelTimestamps ? SystemClock.realtimeNanos : 0
            for i in 0..<n {
                received += 1
                guard !receiveBatch.isTruncated(i), let source = receiveBatch.source(i) else {
                    receiveDropped += 1
                    continue
                }
                let stamp = receiveBatch.timestampNanos(i)
                let arrival = stamp > 0 ? now - min(max(realNow - stamp, 0), 1_000_000_000) : now
                receive(receiveBatch.datagram(i), from: source, nowNanos: now, arrivalNanos: arrival)
            }
            flush()
            if n < receiveBatch.capacity { break }
        }
    }

    /// Hands a datagram (or an ICE-TCP frame) to its session's transport.
    /// - Returns: the transport, nil when none matched.
    @discardableResult
    func receive(_ bytes: UnsafeMutableRawBufferPointer, from source: TransportAddress, nowNanos: Int64, arrivalNanos: Int64) -> WebRTCTransport? {
        guard let session = demux.route(UnsafeRawBufferPointer(bytes), from: source) else {
            unmatched += 1
            return nil
        }
        let transport = session.transport
        transport.handleDatagram(bytes, from: source, nowNanos: nowNanos, arrivalNanos: arrivalNanos)
        demux.learn(session, from: source)
        if case .closed = transport.state { remove(session) }
        return transport
    }

    /// A frame from an ICE-TCP connection: the same path as a datagram, then the writes it caused.
    package func receiveFrame(_ frame: UnsafeMutableRawBufferPointer, from source: TransportAddress, nowNanos: Int64) -> Bool {
        received += 1
        let isSTUN = STUNMessage.isSTUN(UnsafeRawBufferPointer(frame))
        let transport = receive(frame, from: source, nowNanos: nowNanos, arrivalNanos: nowNanos)
        return isSTUN && transport?.lastCheckPassed == true
    }

    /// The frames of one ICE-TCP read were handed over: write what they caused, once (as a UDP read batch does).
    package func framesReceived() { flush() }

    /// Queues a datagram; it is written when the current read batch or tick ends (``flush()``).
    package func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        if address.isTCP {
            tcp?.send(datagram, to: address)
            return
        }
        guard descriptor >= 0 else { return }
        if sendBatch.append(datagram, to: address) { return }
        guard datagram.count <= sendBatch.slotSize else {
            sendOverflow += 1
            return
        }
        flush()
        if !sendBatch.append(datagram, to: address) { sendOverflow += 1 }
    }

    /// Writes the queued datagrams with `sendmmsg`. When the socket is full they stay queued and
    /// the loop watches for it to drain.
    func flush() {
        if let tcp, tcp.hasQueued {
            let now = Self.nowNanos
            // A batch of ICE-TCP frames alone is a write batch too (its frames' send time).
            if tcp.flush(nowNanos: now), sendBatch.isEmpty { batchWritten(nowNanos: now) }
        }
        guard descriptor >= 0, !sendBatch.isEmpty, !waitingForWritable else { return }
        let now = Self.nowNanos
        if sendBatch.flush(fd: descriptor) {
            batchWritten(nowNanos: now)
            return
        }
        waitingForWritable = true
        loop.watchWritable(descriptor, true)
    }

    private func socketWritable() {
        guard waitingForWritable, descriptor >= 0 else { return }
        let now = Self.nowNanos
        if sendBatch.flush(fd: descriptor) {
            waitingForWritable = false
            loop.watchWritable(descriptor, false)
            batchWritten(nowNanos: now)
        }
    }

    private func batchWritten(nowNanos: Int64) {
        writeTimes[Int(writeBatch % UInt64(writeTimes.count))] = (writeBatch, nowNanos)
        writeBatch += 1
    }

    package func writtenNanos(batch: UInt64) -> Int64? {
        let entry = writeTimes[Int(batch % UInt64(writeTimes.count))]
        return entry.batch == batch ? entry.nanos : nil
    }

    /// Datagrams written with `sendmmsg`, and those the kernel refused (other than "would block").
    package var datagramsSent: Int { sendBatch.sent }
    package var datagramSendFailures: Int { sendBatch.failed }

    /// Ticks the sessions that are due (``TickSchedule``), then asks each when it is due next: its
    /// own next tick or its transport's next timeout, whichever comes first.
    func tick() {
        let now = Self.nowNanos
        dueScratch.removeAll(keepingCapacity: true)
        schedule.takeDue(nowNanos: now, into: &dueScratch)
        for session in dueScratch {
            // Gone meanwhile (a participant leaving takes both of its connections).
            guard demux.contains(session) else { continue }
            let transport = session.transport
            if let due = transport.nextTimeoutNanos, due <= now { transport.handleTimeout(nowNanos: now) }
            if case .closed = transport.state {
                remove(session)
                continue
            }
            session.tick(nowNanos: now)
        }
        schedule.reschedule(nowNanos: now) { session, now in session.tickDueNanos(after: now) }
        dueScratch.removeAll(keepingCapacity: true)
        tcp?.sweep(nowNanos: now)
        flush()
    }

    /// Closes every session, writes what they said, closes the socket and stops the thread.
    package func stop() async {
        _ = try? await loop.submit {
            self.timer?.cancel()
            for session in Array(self.demux.sessions) {
                session.transport.close(reason: "server shutting down")
                self.remove(session)
            }
            if self.waitingForWritable {
                self.waitingForWritable = false
                self.loop.watchWritable(self.descriptor, false)
            }
            self.flush()
            self.tcp?.stop()
            if self.descriptor >= 0 {
                self.loop.deregister(self.descriptor)
                close(self.descriptor)
                self.descriptor = -1
            }
        }.get()
        try? await loop.shutdownGracefully()
    }
}

package enum MediaWorkerError: Error, CustomStringConvertible {
    case badAddress(String)
    case socket(String, Int32)
    package var description: String {
        switch self {
        case .badAddress(let a): "media host '\(a)' is not an IP address"
        case .socket(let what, let e): "\(what) failed: \(String(cString: strerror(e)))"
        }
    }
}

extension TransportAddress {
    package init?(_ address: SocketAddress) {
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
