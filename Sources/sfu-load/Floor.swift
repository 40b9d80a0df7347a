#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import DTLS
import RTP
import SFU

/// The floor: the least a forwarder must do for the same peers, to compare the SFU's CPU per
/// packet against. Per peer connection the same pieces as the SFU (ICE-lite, DTLS server, libsrtp2
/// sessions: ``WebRTCTransport``); per datagram `recvmmsg`, demultiplexing (``SessionDemux``),
/// SRTP unprotect and RTP header parse; per subscriber a copy, SRTP protect and a slot in a
/// `sendmmsg` batch. No SFU logic: no header rewriting, statistics, NACK, keyframe gating,
/// retransmission buffers or RTCP of its own (incoming RTCP is decrypted and dropped).
///
/// Peers are set up over a line-based JSON control connection (``FloorControlClient``), not SDP,
/// and live as long as it: when it closes, its peers are closed and leave their rooms (a ramp's
/// next step, or the next run against the same floor, must not forward to the last one's peers).
final class FloorServer {
    final class Room {
        var subscribers: [Session] = []
    }

    final class Session: WorkerSession, WebRTCTransportDelegate {
        let transport: WebRTCTransport
        let room: Room
        let peer: String
        let publishes: Bool
        unowned let server: FloorServer

        init(transport: WebRTCTransport, room: Room, peer: String, publishes: Bool, server: FloorServer) {
            self.transport = transport
            self.room = room
            self.peer = peer
            self.publishes = publishes
            self.server = server
        }

        func workerDidRemove() {}

        func transport(_ transport: WebRTCTransport, send datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
            server.send(datagram, to: address)
        }

        func transportDidConnect(_ transport: WebRTCTransport) {}

        func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
            guard publishes else { return }
            let plain = UnsafeRawBufferPointer(packet)
            var sent = 0
            for s in room.subscribers where s.peer != peer {
                let ok = s.transport.sendRTP { buffer in
                    guard plain.count <= buffer.count else { return 0 }
                    buffer.copyMemory(from: plain)
                    return plain.count
                }
                if ok { sent += 1 }
            }
            server.forwarded += sent
        }

        func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64) {}

        func transportDidClose(_ transport: WebRTCTransport, reason: String) {
            server.closed.append(self)
        }
    }

    let media: Int32
    let listener: Int32
    let mediaAddress: TransportAddress
    let controlAddress: TransportAddress
    let context: DTLSContext
    private let poller: Poller
    private var demux = SessionDemux()
    private var rooms: [String: Room] = [:]
    private var controls: [Int32: [UInt8]] = [:]
    /// The sessions each control connection set up.
    private var sessionsByControl: [Int32: [Session]] = [:]
    private let receiveBatch = DatagramReceiveBatch(capacity: 32, slotSize: 2048)
    private let sendBatch = DatagramSendBatch(capacity: 64, slotSize: 1536)
    fileprivate var closed: [Session] = []
    private(set) var forwarded = 0
    private(set) var dropped = 0

    init(host: String, mediaPort: UInt16, controlPort: UInt16) throws {
        guard let mediaBind = TransportAddress(host: host, port: mediaPort), let controlBind = TransportAddress(host: host, port: controlPort) else {
            throw SystemError("'\(host)' is not an IP address", 0)
        }
        media = try MediaWorker.bindSocket(mediaBind)  // the same socket as the SFU's workers
        listener = try Sockets.listeningTCP(controlBind)
        mediaAddress = TransportAddress(localOf: media) ?? mediaBind
        controlAddress = TransportAddress(localOf: listener) ?? controlBind
        context = try DTLSContext(certificate: DTLSCertificate(commonName: "sfu-floor"))
        poller = try Poller()
        try poller.add(media, token: Int(media))
        try poller.add(listener, token: Int(listener))
    }

    func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        if sendBatch.append(datagram, to: address) { return }
        flush()
        sendBatch.append(datagram, to: address)
    }

    private func flush() {
        guard !sendBatch.isEmpty else { return }
        if !sendBatch.flush(fd: media) {
            dropped += sendBatch.count
            sendBatch.removeAll()
        }
    }

    /// Runs until the process is killed.
    func run() -> Never {
        var nextTick = Clock.monotonicNanos
        while true {
            let now = Clock.monotonicNanos
            poller.wait(timeoutMillis: Int32(clamping: max(0, (nextTick - now) / 1_000_000 + 1))) { token, readable, _ in
                let fd = Int32(token)
                if fd == media {
                    receive()
                } else if fd == listener {
                    accept()
                } else if readable {
                    control(fd)
                }
            }
            let after = Clock.monotonicNanos
            if after >= nextTick {
                nextTick = after + 20_000_000
                for s in Array(demux.sessions) {
                    if let due = s.transport.nextTimeoutNanos, due <= after { s.transport.handleTimeout(nowNanos: after) }
                }
                for s in closed { remove(s) }
                closed.removeAll()
                flush()
            }
        }
    }

    private func receive() {
        for _ in 0..<64 {
            let n = receiveBatch.receive(fd: media)
            if n <= 0 { break }
            let now = Clock.monotonicNanos
            for i in 0..<n where !receiveBatch.isTruncated(i) {
                guard let source = receiveBatch.source(i) else { continue }
                let bytes = receiveBatch.datagram(i)
                guard let session = demux.route(UnsafeRawBufferPointer(bytes), from: source) else { continue }
                session.transport.handleDatagram(bytes, from: source, nowNanos: now)
                demux.learn(session, from: source)
            }
            flush()
            if n < receiveBatch.capacity { break }
        }
    }

    private func remove(_ s: Session) {
        demux.remove(s)
        s.room.subscribers.removeAll { $0 === s }
    }

    private func accept() {
        let fd = Glibc.accept(listener, nil, nil)
        guard fd >= 0 else { return }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        controls[fd] = []
        try? poller.add(fd, token: Int(fd))
    }

    /// Control lines: `{"room", "peer", "role": "publisher"|"subscriber", "ufrag", "pwd", "fingerprint"}` ->
    /// `{"ufrag", "pwd", "fingerprint", "host", "port"}` (or `{"error"}`).
    private func control(_ fd: Int32) {
        var chunk = [UInt8](repeating: 0, count: 16384)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 {
            if n == 0 || (errno != EAGAIN && errno != EINTR) { closeControl(fd) }
            return
        }
        var buffer = (controls[fd] ?? []) + chunk[0..<n]
        while let newline = buffer.firstIndex(of: 10) {
            let line = Array(buffer[..<newline])
            buffer.removeFirst(newline + 1)
            let reply = handle(line, control: fd)
            // Replies are small: a blocking write is fine on this control path.
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
            try? Sockets.writeAll(fd, JSON.encode(reply) + [10])
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        guard buffer.count < 1 << 16 else {
            closeControl(fd)
            return
        }
        controls[fd] = buffer
    }

    /// A control connection ended: its peers go with it (removed at the next tick, as closed ones are).
    private func closeControl(_ fd: Int32) {
        poller.remove(fd)
        close(fd)
        controls[fd] = nil
        for s in sessionsByControl.removeValue(forKey: fd) ?? [] { s.transport.close(reason: "control connection closed") }
    }

    private func handle(_ line: [UInt8], control fd: Int32) -> FloorControl.Reply {
        guard let request = JSON.decode(FloorControl.Request.self, line),
              let fingerprint = CertificateFingerprint(sdpValue: request.fingerprint) else {
            return .init(error: "bad request")
        }
        let (roomName, peer, role, ufrag, pwd) = (request.room, request.peer, request.role, request.ufrag, request.pwd)
        let local = ICELiteAgent.Credentials.random()
        let transport: WebRTCTransport
        do {
            transport = try WebRTCTransport(id: "\(peer)/\(role)", iceCredentials: local, remoteICE: .init(ufrag: ufrag, password: pwd),
                                            dtlsContext: context, dtlsRole: .server, remoteFingerprint: fingerprint, nowNanos: Clock.monotonicNanos)
        } catch {
            return .init(error: "\(error)")
        }
        let room = rooms[roomName] ?? Room()
        rooms[roomName] = room
        let session = Session(transport: transport, room: room, peer: peer, publishes: role == "publisher", server: self)
        transport.delegate = session
        demux.add(session)
        if role == "subscriber" { room.subscribers.append(session) }
        sessionsByControl[fd, default: []].append(session)
        return .init(ufrag: local.ufrag, pwd: local.password, fingerprint: "sha-256 " + context.certificate.sha256Fingerprint,
                     host: mediaAddress.host, port: Int(mediaAddress.port))
    }
}

/// The floor's control line: one JSON object a line each way.
enum FloorControl {
    struct Request: Codable {
        var room, peer, role, ufrag, pwd, fingerprint: String
    }

    /// The server's ICE and DTLS parameters and its media address, or an error.
    struct Reply: Codable {
        var ufrag, pwd, fingerprint, host: String?
        var port: Int?
        var error: String?
    }
}

/// The load tool's side of the floor's control line.
final class FloorControlClient {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(address: TransportAddress) throws {
        fd = try Sockets.connectedTCP(to: address, nonBlocking: false)
    }

    deinit { close(fd) }

    func connect(room: String, peer: String, role: String, ice: ICELiteAgent.Credentials, fingerprint: String) throws -> ServerEndpoint {
        try Sockets.writeAll(fd, JSON.encode(FloorControl.Request(room: room, peer: peer, role: role, ufrag: ice.ufrag, pwd: ice.password,
                                                                  fingerprint: "sha-256 " + fingerprint)) + [10])
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !buffer.contains(10) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw SystemError("floor control connection closed") }
            buffer += chunk[0..<n]
        }
        guard let newline = buffer.firstIndex(of: 10) else { throw SystemError("floor control: no reply", 0) }
        let line = Array(buffer[..<newline])
        buffer.removeFirst(newline + 1)
        guard let reply = JSON.decode(FloorControl.Reply.self, line), let ufrag = reply.ufrag, let pwd = reply.pwd,
              let fp = reply.fingerprint.flatMap(CertificateFingerprint.init(sdpValue:)),
              let host = reply.host, let port = reply.port,
              let address = TransportAddress(host: host, port: UInt16(clamping: port)) else {
            throw SystemError("floor control: bad reply \(String(decoding: line, as: UTF8.self))", 0)
        }
        return ServerEndpoint(ice: .init(ufrag: ufrag, password: pwd), fingerprint: fp, address: address)
    }
}
