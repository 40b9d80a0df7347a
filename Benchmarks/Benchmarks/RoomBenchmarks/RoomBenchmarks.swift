// The forwarding path of a room: one publisher packet decrypted, parsed and fanned out to N
// subscribers (each: sequence/timestamp rewrite, copy into the transport's buffer, transport-cc
// stamp, retransmission-buffer store, SRTP protect, hand-off to the socket layer). Every transport
// is real (ICE-lite, DTLS handshake, libsrtp2) and connected in memory first; the socket layer is a
// counter, so the figures are the SFU's own cost per publisher packet (divide by N for the cost per
// forwarded packet). Run: make bench (or scripts/bench.sh --target RoomBenchmarks).
import Benchmark
import DTLS
import Foundation
import Logging
import RTP
import SFU
import WebRTCClient

/// A room wired to in-memory clients: datagrams to the server are routed like the media worker
/// does (SessionDemux); datagrams from the server reach the clients only while `deliver` is on.
final class InMemoryRoom: SessionHost {
    let serverContext: DTLSContext
    let clientContext: DTLSContext
    let serverAddress = TransportAddress(ipv4: 10, 0, 0, 1, port: 40000)
    var demux = SessionDemux()
    var room: Room!
    var clients: [TransportAddress: ClientTransport] = [:]
    var toServer: [([UInt8], TransportAddress)] = []
    var toClients: [([UInt8], TransportAddress)] = []
    var deliver = true
    var sentDatagrams = 0
    var sentBytes = 0
    var now: Int64 = 1_000_000_000
    var pendingAnswers: [(String, String)] = []

    init() throws {
        serverContext = try DTLSContext(certificate: DTLSCertificate(commonName: "server"))
        clientContext = try DTLSContext(certificate: DTLSCertificate(commonName: "client"))
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        room = Room(id: "rm_bench", maxParticipants: 1000, host: self, dtlsContext: serverContext,
                    candidates: [HostCandidate(address: serverAddress)], logger: logger)
    }

    func add(_ session: WorkerSession) { demux.add(session) }
    func remove(_ session: WorkerSession) { demux.remove(session) }
    func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        sentDatagrams += 1
        sentBytes += datagram.count
        if deliver { toClients.append((Array(datagram), address)) }
    }

    func client(for sdp: String, local: ICELiteAgent.Credentials, address: TransportAddress) throws -> ClientTransport {
        let remote = try RemoteTransportParameters(SessionDescription(parsing: sdp))
        let fingerprint = CertificateFingerprint(sdpValue: "sha-256 " + serverContext.certificate.sha256Fingerprint)!
        let c = try ClientTransport(local: local, remote: remote.ice, serverAddress: serverAddress, context: clientContext, serverFingerprint: fingerprint)
        c.onSend = { [unowned self] d in toServer.append((Array(d), address)) }
        clients[address] = c
        return c
    }

    /// Joins `subscribers` receive-only peers and one publisher of one video stream, and connects everything.
    func setUp(subscribers: Int, videoSSRC: UInt32) throws -> ClientTransport {
        for i in 0..<subscribers {
            let peerID = "pe_s\(i)"
            let address = TransportAddress(ipv4: 10, 1, UInt8(i / 200), UInt8(i % 200 + 1), port: 6000)
            let ice = ICELiteAgent.Credentials.random()
            try room.join(PeerInfo(peerID: peerID, userID: "s\(i)", name: "s\(i)", role: "patient", canPublish: false, canSubscribe: true),
                          nowNanos: now) { [unowned self] signal in
                guard case .subscriberOffer(let sdp) = signal, let offer = try? SessionDescription(parsing: sdp) else { return }
                let client = clients[address] ?? (try? client(for: sdp, local: ice, address: address))
                guard let client else { return }
                pendingAnswers.append((peerID, ClientSDP.subscriberAnswer(offer: offer, ice: client.local, fingerprint: clientContext.certificate.sha256Fingerprint)))
            }
        }
        let pubICE = ICELiteAgent.Credentials.random()
        let pubAddress = TransportAddress(ipv4: 10, 2, 0, 1, port: 5000)
        var publisher: ClientTransport?
        try room.join(PeerInfo(peerID: "pe_pub", userID: "pub", name: "pub", role: "doctor", canPublish: true, canSubscribe: false), nowNanos: now) {
            [unowned self] signal in
            if case .publisherAnswer(let sdp) = signal { publisher = try? client(for: sdp, local: pubICE, address: pubAddress) }
        }
        let offer = ClientSDP.publisherOffer(streams: [.init(kind: .video, ssrc: videoSSRC)], ice: pubICE,
                                             fingerprint: clientContext.certificate.sha256Fingerprint)
        if let parsed = try? SessionDescription(parsing: offer) { room.publisherOffer(peerID: "pe_pub", offer: parsed, nowNanos: now) }
        for _ in 0..<3000 {
            step()
            if clients.values.allSatisfy({ $0.state == .connected }) && clients.count == subscribers + 1 && pendingAnswers.isEmpty { break }
            usleep(100)
        }
        guard let publisher, clients.values.allSatisfy({ $0.state == .connected }) else { throw BenchError.notConnected }
        return publisher
    }

    func step() {
        for (peer, answer) in pendingAnswers {
            if let parsed = try? SessionDescription(parsing: answer) { room.subscriberAnswer(peerID: peer, answer: parsed, nowNanos: now) }
        }
        pendingAnswers.removeAll()
        while !toServer.isEmpty || !toClients.isEmpty {
            let up = toServer
            toServer.removeAll()
            for (bytes, from) in up { receive(bytes, from: from) }
            let down = toClients
            toClients.removeAll()
            for (bytes, to) in down {
                var b = bytes
                b.withUnsafeMutableBytes { clients[to]?.handleDatagram($0, nowNanos: now) }
            }
        }
        now += 10_000_000
        for c in clients.values { c.tick(nowNanos: now) }
        for s in Array(demux.sessions) {
            if let t = s.transport.nextTimeoutNanos, t <= now { s.transport.handleTimeout(nowNanos: now) }
            s.tick(nowNanos: now)
        }
    }

    func receive(_ bytes: [UInt8], from: TransportAddress) {
        var bytes = bytes
        bytes.withUnsafeMutableBytes { b in
            guard let session = demux.route(UnsafeRawBufferPointer(b), from: from) else { return }
            session.transport.handleDatagram(b, from: from, nowNanos: now)
            demux.learn(session, from: from)
        }
    }

    enum BenchError: Error { case notConnected }
}

/// One connected room per subscriber count, made on first use and kept for every sample.
final class FanOut {
    let harness: InMemoryRoom
    let publisher: ClientTransport
    let transport: WebRTCTransport
    let subscribers: Int
    let videoSSRC: UInt32 = 0x2222_2222
    let from = TransportAddress(ipv4: 10, 2, 0, 1, port: 5000)
    var sequence: UInt16 = 0
    var packets: [[UInt8]] = []

    init(subscribers: Int) {
        guard let harness = try? InMemoryRoom(), let publisher = try? harness.setUp(subscribers: subscribers, videoSSRC: videoSSRC) else {
            fatalError("the in-memory room did not connect")
        }
        self.harness = harness
        self.publisher = publisher
        self.subscribers = subscribers
        guard let session = harness.demux.route(UnsafeRawBufferPointer(start: nil, count: 0), from: from) else { fatalError("no publisher session") }
        transport = session.transport
        publisher.onSend = { [unowned self] in packets.append(Array($0)) }
        harness.deliver = false
        // A keyframe first so every consumer forwards.
        encrypt(1, keyframe: true)
        packets[0].withUnsafeMutableBytes { transport.handleDatagram($0, from: from, nowNanos: harness.now) }
        packets.removeAll()
    }

    /// Encrypts `count` packets ahead (the publisher's SRTP is not measured).
    func encrypt(_ count: Int, keyframe: Bool = false) {
        packets.removeAll(keepingCapacity: true)
        for _ in 0..<count {
            var payload: [UInt8] = [0x10, keyframe ? 0x00 : 0x01, 0x00, 0x00]
            if keyframe { payload += [0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00] }
            payload += [UInt8](repeating: 0xAB, count: 1150 - payload.count)
            sequence &+= 1
            let rtp = RTPPacket(payloadType: 96, sequenceNumber: sequence, timestamp: UInt32(sequence / 4) * 3000, ssrc: videoSSRC,
                                marker: sequence % 4 == 3, payload: payload)
            rtp.serialized().withUnsafeBytes { _ = publisher.sendRTP($0) }
        }
    }

    func run(_ benchmark: Benchmark) {
        let count = benchmark.scaledIterations.count
        encrypt(count)
        let before = harness.sentDatagrams
        let now = harness.now
        var index = 0
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            packets[index].withUnsafeMutableBytes { transport.handleDatagram($0, from: from, nowNanos: now) }
            index += 1
        }
        benchmark.stopMeasurement()
        let forwarded = harness.sentDatagrams - before
        precondition(forwarded == subscribers * count, "forwarded \(forwarded), expected \(subscribers * count)")
    }
}

nonisolated(unsafe) var fanOuts: [Int: FanOut] = [:]

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 200
    )
    for n in [1, 10] {
        Benchmark("Room fan-out: 1 publisher packet (1150 B VP8) to \(n) subscriber(s)") { benchmark in
            let fanOut = fanOuts[n] ?? FanOut(subscribers: n)
            fanOuts[n] = fanOut
            fanOut.run(benchmark)
        }
    }
}
