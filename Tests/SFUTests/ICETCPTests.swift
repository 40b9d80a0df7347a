#if canImport(Glibc)
import Glibc
#endif
import DTLS
import Logging
import RTP
import Testing
import TestSupport
import WebRTCClient
@testable import SFU

/// ICE-TCP (RFC 6544, passive): RFC 4571 framing, the write queue, admission limits, the
/// candidates in SDP, and the worker's TCP side on real loopback sockets.
@Suite("ICE-TCP: framing, limits, candidates")
struct ICETCPFramingTests {
    static func framed(_ frames: [[UInt8]]) -> [UInt8] {
        frames.flatMap { [UInt8($0.count >> 8), UInt8($0.count & 0xff)] + $0 }
    }

    /// Feeds `stream` cut at `cuts` (offsets); returns the frames delivered and the oversize lengths.
    static func read(_ stream: [UInt8], cuts: [Int], maxFrame: Int = 2048) -> (frames: [[UInt8]], oversize: [Int], reader: FrameReader) {
        var reader = FrameReader(maxFrame: maxFrame)
        var frames: [[UInt8]] = []
        var oversize: [Int] = []
        var start = 0
        for end in cuts.filter({ $0 > 0 && $0 < stream.count }).sorted() + [stream.count] where end > start {
            var part = Array(stream[start..<end])
            part.withUnsafeMutableBytes { raw in
                reader.consume(raw) { event in
                    switch event {
                    case .frame(let f): frames.append(Array(f))
                    case .oversize(let length): oversize.append(length)
                    }
                    return true
                }
            }
            start = end
        }
        return (frames, oversize, reader)
    }

    /// However the stream is cut into reads (at every single offset, or at random ones), the same
    /// frames come out in order.
    @Test func framesComeOutWholeHoweverTheStreamIsCut() {
        var rng = SeededGenerator(seed: 4571)
        for round in 0..<200 {
            let frames = (0..<Int.random(in: 1...12, using: &rng)).map { _ in randomBytes(Int.random(in: 1...1500, using: &rng), using: &rng) }
            let stream = Self.framed(frames)
            let cuts = round == 0 ? Array(0..<stream.count) : (0..<Int.random(in: 0...20, using: &rng)).map { _ in Int.random(in: 0..<stream.count, using: &rng) }
            let out = Self.read(stream, cuts: cuts)
            #expect(out.frames == frames, "round \(round): \(out.frames.count) of \(frames.count) frames, cuts \(cuts.count)")
            #expect(out.oversize.isEmpty && !out.reader.isMidFrame && out.reader.frames == frames.count)
        }
        // A frame cut right after the first byte of its length, and a stream that ends mid-frame.
        let stream = Self.framed([[1, 2, 3], [4, 5]])
        #expect(Self.read(stream, cuts: [1, 6]).frames == [[1, 2, 3], [4, 5]])
        let partial = Self.read(Array(stream.dropLast()), cuts: [])
        #expect(partial.frames == [[1, 2, 3]] && partial.reader.isMidFrame)
    }

    /// A frame announced longer than the limit is reported and its bytes skipped, wherever the
    /// reads cut them; the frames around it are intact. Empty frames are counted, not delivered.
    @Test func oversizeFramesAreSkippedAndEmptyOnesCounted() {
        let big = [UInt8](repeating: 0xEE, count: 3000)
        let stream = Self.framed([[1], big, [], [2, 2]])
        for cuts in [[], [1], [2], [3], [1500], [3003], [3004, 3005], Array(stride(from: 0, to: stream.count, by: 7))] {
            let out = Self.read(stream, cuts: cuts)
            #expect(out.frames == [[1], [2, 2]], "cuts \(cuts.prefix(4))")
            #expect(out.oversize == [3000])
            #expect(out.reader.oversize == 1 && out.reader.empty == 1 && !out.reader.isMidFrame)
        }
        // The largest frame allowed passes; one byte more does not.
        #expect(Self.read(Self.framed([[UInt8](repeating: 7, count: 2048)]), cuts: [100]).frames.count == 1)
        #expect(Self.read(Self.framed([[UInt8](repeating: 7, count: 2049)]), cuts: [100]).oversize == [2049])
    }

    /// A handler that returns false (the connection is closing) stops the reader: nothing more is delivered.
    @Test func aHandlerCanStopTheReader() {
        var reader = FrameReader()
        var stream = Self.framed([[1], [2], [3]])
        var seen: [[UInt8]] = []
        stream.withUnsafeMutableBytes { raw in
            reader.consume(raw) { event in
                if case .frame(let f) = event { seen.append(Array(f)) }
                return seen.count < 2
            }
        }
        #expect(seen == [[1], [2]])
    }

    /// The write queue holds whole frames up to its capacity: one that does not fit is dropped
    /// whole (counted), and a partial write leaves the rest at the head, so the stream stays framed.
    @Test func theWriteQueueKeepsTheStreamFramed() {
        var queue = FrameWriteQueue(capacity: 100)
        let a = [UInt8](repeating: 0xA, count: 40), b = [UInt8](repeating: 0xB, count: 40), c = [UInt8](repeating: 0xC, count: 30)
        let tookA = a.withUnsafeBytes { queue.append($0) }, tookB = b.withUnsafeBytes { queue.append($0) }
        let tookC = c.withUnsafeBytes { queue.append($0) }
        #expect(tookA && tookB)
        #expect(!tookC, "84 + 32 bytes exceed the capacity of 100")
        #expect(queue.count == 84 && queue.dropped == 1)
        var written: [UInt8] = []
        let first = queue.drain { bytes in written += bytes.prefix(30); return 30 }
        let full = queue.drain { _ in 0 }, failed = queue.drain { _ in -1 }
        #expect(first == 30)
        #expect(full == 0, "a full socket takes nothing")
        #expect(failed == -1 && queue.count == 54)
        // Room again: the frame that did not fit goes in behind what waits.
        let tookCNow = c.withUnsafeBytes { queue.append($0) }
        #expect(tookCNow)
        while !queue.isEmpty { queue.drain { bytes in written += bytes.prefix(7); return min(7, bytes.count) } }
        #expect(ICETCPFramingTests.read(written, cuts: []).frames == [a, b, c])
        let tooLong = [UInt8](repeating: 0, count: 70_000)
        var big = FrameWriteQueue(capacity: 1 << 20)
        let tookLong = tooLong.withUnsafeBytes { big.append($0) }
        #expect(!tookLong, "a length prefix holds at most 65,535")
    }

    @Test func admissionLimitsPerAddressAndInAll() {
        var limits = TCPAdmission.Limits()
        limits.perAddress = 5
        limits.unauthenticatedPerAddress = 3
        limits.unauthenticated = 4
        var admission = TCPAdmission(limits: limits)
        let a = TransportAddress.IP.v4(0x0A00_0001), b = TransportAddress.IP.v4(0x0A00_0002)
        let three = (0..<3).map { _ in admission.admit(a) }, fourth = admission.admit(a)
        #expect(three == [true, true, true])
        #expect(!fourth, "a fourth unauthenticated connection from one address")
        let fromB = [admission.admit(b), admission.admit(b)]
        #expect(fromB == [true, false], "five unauthenticated in all")
        // Authenticated connections leave room for more, up to the per-address total.
        for _ in 0..<3 { admission.authenticated(a) }
        #expect(admission.unauthenticated == 1)
        let more = [admission.admit(a), admission.admit(a), admission.admit(a)]
        #expect(more == [true, true, false], "five connections from one address")
        #expect(admission.connections(from: a) == 5)
        admission.closed(a, wasAuthenticated: true)
        admission.closed(a, wasAuthenticated: false)
        #expect(admission.connections(from: a) == 3 && admission.unauthenticated == 2)
        let again = admission.admit(a)
        #expect(again)
        admission.closed(b, wasAuthenticated: false)
        #expect(admission.connections(from: b) == 0 && admission.unauthenticated == 2)
    }

    /// Every TCP candidate is passive and ranks below every UDP one (RFC 6544 4.2); foundations differ.
    @Test func tcpCandidatesArePassiveAndRankBelowUDP() throws {
        let udp = [TransportAddress(ipv4: 192, 0, 2, 1, port: 40000), TransportAddress(ipv4: 10, 0, 0, 1, port: 40000)]
        let candidates = udp.map { HostCandidate(address: $0) } + udp.map { HostCandidate(address: $0.over(tcp: true)) }
        let lines = HostCandidate.attributeValues(candidates)
        #expect(lines[0] == "1 1 udp 2130706431 192.0.2.1 40000 typ host")
        #expect(lines[2] == "3 1 tcp 2124414975 192.0.2.1 40000 typ host tcptype passive")
        let fields = lines.map { $0.split(separator: " ") }
        let udpPriorities = fields.filter { $0[2] == "udp" }.compactMap { UInt32($0[3]) }
        let tcpPriorities = fields.filter { $0[2] == "tcp" }.compactMap { UInt32($0[3]) }
        #expect(udpPriorities.count == 2 && tcpPriorities.count == 2)
        #expect(try #require(tcpPriorities.max()) < (try #require(udpPriorities.min())))
        #expect(Set(fields.map { $0[0] }).count == 4)
        #expect(TransportAddress(ipv4: 1, 2, 3, 4, port: 5) != TransportAddress(ipv4: 1, 2, 3, 4, port: 5).over(tcp: true))
        #expect("\(udp[0].over(tcp: true))" == "192.0.2.1:40000/tcp")
    }
}

/// The worker's TCP side on loopback: a client that frames what it sends connects through the same
/// transport code as UDP (ICE, DTLS, SRTP); limits and timeouts close what they should.
@Suite("ICE-TCP: the media worker's TCP port", .serialized)
struct ICETCPWorkerTests {
    /// A session whose transport is driven by the worker and records whether it connected and what RTP came.
    final class Session: WorkerSession, WebRTCTransportDelegate, @unchecked Sendable {
        let transport: WebRTCTransport
        let worker: MediaWorker
        var connected = false
        var rtp: [UInt16] = []
        var removed = false
        init(transport: WebRTCTransport, worker: MediaWorker) {
            self.transport = transport
            self.worker = worker
            transport.delegate = self
        }
        func workerDidRemove() { removed = true }
        func transport(_ transport: WebRTCTransport, send datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
            worker.send(datagram, to: address)
        }
        func transportDidConnect(_ transport: WebRTCTransport) { connected = true }
        func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
            rtp.append(header.sequenceNumber)
        }
        func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64) {}
        func transportDidClose(_ transport: WebRTCTransport, reason: String) {}
    }

    /// - Parameter receiveBuffer: SO_RCVBUF set before connecting (a small window), if given.
    static func connectTCP(_ address: TransportAddress, receiveBuffer: Int32? = nil) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var storage = sockaddr_in6()
        let length = withUnsafeMutableBytes(of: &storage) { address.write(to: $0.baseAddress!) }
        let ok = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, length) } }
        try #require(ok == 0, "connect to \(address): errno \(errno)")
        return fd
    }

    /// Whether the server closed `fd` within `seconds` (recv returns 0 or an error).
    static func closedByServer(_ fd: Int32, within seconds: Double) -> Bool {
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let deadline = MediaWorker.nowNanos + Int64(seconds * 1e9)
        var byte: UInt8 = 0
        while MediaWorker.nowNanos < deadline {
            let n = recv(fd, &byte, 1, 0)
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { return true }
        }
        return false
    }

    static func writeFramed(_ bytes: UnsafeRawBufferPointer, to fd: Int32) {
        let frame = [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xff)] + Array(bytes)
        _ = frame.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    static func startWorker(_ limits: TCPAdmission.Limits = .init()) async throws -> MediaWorker {
        try await MediaWorker.start(index: 7, host: "127.0.0.1", port: 0, tcp: .port(0), tcpLimits: limits, logger: Logger(label: "test"))
    }

    /// A worker with ICE-TCP and a session on it a client can authenticate to: the worker, the
    /// session, the TCP port's address (as a plain address to connect to) and a valid nominating check.
    static func server(_ limits: TCPAdmission.Limits) async throws -> (MediaWorker, Session, TransportAddress, [UInt8]) {
        let worker = try await startWorker(limits)
        let address = try #require(worker.localTCPAddress).over(tcp: false)
        let serverICE = ICELiteAgent.Credentials.random(), clientICE = ICELiteAgent.Credentials.random()
        let transport = try WebRTCTransport(
            id: "t", iceCredentials: serverICE, remoteICE: clientICE, dtlsContext: DTLSContext(certificate: try DTLSCertificate(commonName: "s")),
            dtlsRole: .server, remoteFingerprint: CertificateFingerprint(algorithm: .sha256, digest: []), nowNanos: MediaWorker.nowNanos)
        let session = Session(transport: transport, worker: worker)
        try await worker.submit { worker.add(session) }
        return (worker, session, address, bindingRequest(username: "\(serverICE.ufrag):\(clientICE.ufrag)", password: serverICE.password,
                                                         useCandidate: true))
    }

    /// A client speaking RFC 4571 on the worker's TCP port: ICE check, DTLS handshake and SRTP both
    /// ways go through the transport as they do over UDP; the session's address is the TCP one.
    /// Removing the session closes its connection.
    @Test func aClientConnectsAndSendsMediaOverTCP() async throws {
        let worker = try await Self.startWorker()
        let tcpAddress = try #require(worker.localTCPAddress)
        #expect(tcpAddress.isTCP && tcpAddress.port != 0)
        let serverICE = ICELiteAgent.Credentials.random(), clientICE = ICELiteAgent.Credentials.random()
        let serverCert = try DTLSCertificate(commonName: "server"), clientCert = try DTLSCertificate(commonName: "client")
        let transport = try WebRTCTransport(
            id: "tcp", iceCredentials: serverICE, remoteICE: clientICE, dtlsContext: DTLSContext(certificate: serverCert), dtlsRole: .server,
            remoteFingerprint: try #require(CertificateFingerprint(sdpValue: "sha-256 " + clientCert.sha256Fingerprint)), nowNanos: MediaWorker.nowNanos)
        let session = Session(transport: transport, worker: worker)
        try await worker.submit { worker.add(session) }

        let fd = try Self.connectTCP(tcpAddress.over(tcp: false))
        defer { close(fd) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let client = try ClientTransport(local: clientICE, remote: serverICE, serverAddress: tcpAddress, context: DTLSContext(certificate: clientCert),
                                         serverFingerprint: try #require(CertificateFingerprint(sdpValue: "sha-256 " + serverCert.sha256Fingerprint)))
        client.onSend = { Self.writeFramed($0, to: fd) }
        var reader = FrameReader()
        var buffer = [UInt8](repeating: 0, count: 65536)
        var rtpIn: [UInt16] = []
        client.onRTP = { _, header in rtpIn.append(header.sequenceNumber) }
        func pump(until done: () -> Bool, seconds: Double) async throws -> Bool {
            let deadline = MediaWorker.nowNanos + Int64(seconds * 1e9)
            while !done() && MediaWorker.nowNanos < deadline {
                client.tick(nowNanos: MediaWorker.nowNanos)
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                if n > 0 {
                    buffer.withUnsafeMutableBytes { raw in
                        reader.consume(UnsafeMutableRawBufferPointer(rebasing: raw[0..<n])) { event in
                            if case .frame(let f) = event { client.handleDatagram(f, nowNanos: MediaWorker.nowNanos) }
                            return true
                        }
                    }
                } else {
                    try await Task.sleep(for: .milliseconds(2))
                }
            }
            return done()
        }
        #expect(try await pump(until: { client.state == .connected }, seconds: 5), "client state \(client.state)")
        #expect(try await worker.submit { session.connected && session.transport.remoteAddress?.isTCP == true })

        // SRTP both ways, framed.
        for seq in UInt16(100)..<110 {
            let packet = RTPPacket(payloadType: 96, sequenceNumber: seq, timestamp: 9000, ssrc: 0x1234, payload: [UInt8](repeating: 0x55, count: 900))
            #expect(packet.serialized().withUnsafeBytes { client.sendRTP($0) })
        }
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await worker.submit { session.rtp } == Array(100..<110))
        try await worker.submit {
            for seq in UInt16(7)..<12 {
                let packet = RTPPacket(payloadType: 96, sequenceNumber: seq, timestamp: 1, ssrc: 0x99, payload: [UInt8](repeating: 1, count: 1000))
                _ = packet.serialized().withUnsafeBytes { session.transport.sendRTP($0) }
            }
            worker.flush()
        }
        #expect(try await pump(until: { rtpIn.count == 5 }, seconds: 2))
        #expect(rtpIn == Array(7..<12))
        let stats = try await worker.submit { worker.snapshot().tcp }
        #expect(stats.open == 1 && stats.accepted == 1 && stats.closed.isEmpty)

        try await worker.submit { worker.remove(session) }
        #expect(Self.closedByServer(fd, within: 2))
        #expect(try await worker.submit { worker.snapshot().tcp.closed[.sessionClosed] } == 1)
        await worker.stop()
    }

    /// A peer that stops reading: what the socket does not take waits in the connection's queue up
    /// to its capacity, frames beyond it are dropped whole and counted, and once the queue has not
    /// emptied for the stalled timeout the connection is closed; a connection that receives nothing for the
    /// idle timeout is closed too.
    @Test func aPeerThatStopsReadingLosesFramesThenTheConnection() async throws {
        var limits = TCPAdmission.Limits()
        limits.stalledTimeoutNanos = 600_000_000
        let (worker, session, address, request) = try await Self.server(limits)

        // Never reads (a small window), while ~20 Mbit/s are sent its way, as media would be. The
        // kernel's buffers take some first (they grow), then the queue stays full.
        let slow = try Self.connectTCP(address, receiveBuffer: 4096)
        defer { close(slow) }
        request.withUnsafeBytes { Self.writeFramed($0, to: slow) }
        try await Task.sleep(for: .milliseconds(100))
        let peer = try #require(try await worker.submit { session.transport.remoteAddress })
        #expect(peer.isTCP)
        // (Watched from the worker's side: reading the socket here would let the queue drain.)
        var stats = try await worker.submit { worker.snapshot().tcp }
        let deadline = MediaWorker.nowNanos + 8_000_000_000
        while stats.open > 0, MediaWorker.nowNanos < deadline {
            stats = try await worker.submit {
                let frame = [UInt8](repeating: 0x90, count: 1200)
                for _ in 0..<200 { frame.withUnsafeBytes { worker.send($0, to: peer) } }
                worker.flush()
                return worker.snapshot().tcp
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(stats.sendQueueFull > 0, "frames beyond the queue's capacity are dropped and counted")
        #expect(stats.closed[.stalled] == 1 && stats.open == 0, "\(stats)")
        await worker.stop()

        // Reads, checks once, then says nothing: closed after the idle timeout, not before.
        var quietLimits = TCPAdmission.Limits()
        quietLimits.idleTimeoutNanos = 2_500_000_000
        let (quietWorker, _, quietAddress, quietRequest) = try await Self.server(quietLimits)
        let quiet = try Self.connectTCP(quietAddress)
        defer { close(quiet) }
        quietRequest.withUnsafeBytes { Self.writeFramed($0, to: quiet) }
        #expect(!Self.closedByServer(quiet, within: 1.5))
        #expect(Self.closedByServer(quiet, within: 4))
        #expect(try await quietWorker.submit { quietWorker.snapshot().tcp.closed[.idle] } == 1)
        await quietWorker.stop()
    }

    /// Before a valid check a connection may only send STUN: other bytes, an oversize frame or
    /// silence past the timeout close it; connections above the per-address limit are closed on
    /// accept. A connection that passed a check stays past the timeout.
    @Test func unauthenticatedConnectionsAreLimitedAndTimedOut() async throws {
        var limits = TCPAdmission.Limits()
        limits.unauthenticatedPerAddress = 2
        limits.authenticationTimeoutNanos = 1_200_000_000
        let (worker, _, address, request) = try await Self.server(limits)

        // Not STUN: closed at once.
        let garbage = try Self.connectTCP(address)
        defer { close(garbage) }
        [UInt8](repeating: 0x80, count: 40).withUnsafeBytes { Self.writeFramed($0, to: garbage) }
        #expect(Self.closedByServer(garbage, within: 1))
        // A length announcing more than a datagram: closed at once.
        let oversize = try Self.connectTCP(address)
        defer { close(oversize) }
        _ = [UInt8]([0xFF, 0xFF, 0, 1, 0, 0]).withUnsafeBytes { send(oversize, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        #expect(Self.closedByServer(oversize, within: 1))

        // One that authenticates (answered over the stream), then three silent ones: the third
        // is one too many (two may wait) and closed at once; the other two at the timeout; the first stays.
        let good = try Self.connectTCP(address)
        defer { close(good) }
        request.withUnsafeBytes { Self.writeFramed($0, to: good) }
        var answer = [UInt8](repeating: 0, count: 512)
        let n = answer.withUnsafeMutableBytes { recv(good, $0.baseAddress, $0.count, 0) }
        try #require(n > 22)
        #expect(Int(answer[0]) << 8 | Int(answer[1]) == n - 2, "one frame")
        #expect(answer[2] == 0x01 && answer[3] == 0x01, "a Binding success response")
        let silent = try (0..<3).map { _ in try Self.connectTCP(address) }
        defer { silent.forEach { close($0) } }
        #expect(Self.closedByServer(silent[2], within: 0.5), "above the per-address unauthenticated limit")
        #expect(!Self.closedByServer(silent[0], within: 0.3))
        #expect(Self.closedByServer(silent[0], within: 3) && Self.closedByServer(silent[1], within: 1))
        #expect(!Self.closedByServer(good, within: 0.3), "an authenticated connection outlives the timeout")
        let stats = try await worker.submit { worker.snapshot().tcp }
        #expect(stats.accepted == 6 && stats.open == 1)
        #expect(stats.closed[.notSTUN] == 1 && stats.closed[.oversizeFrame] == 1 && stats.closed[.limit] == 1)
        #expect(stats.closed[.unauthenticatedTimeout] == 2)
        await worker.stop()
        #expect(Self.closedByServer(good, within: 1))
    }
}
