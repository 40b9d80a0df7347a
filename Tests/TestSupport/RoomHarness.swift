import DTLS
import Foundation
import Logging
import RTP
import SFU
import WebRTCClient

/// A room with in-memory peers (str0m-style): the server side is the real Room with its
/// transports; each peer is a ClientTransport pair (publisher, subscriber) exchanging datagrams
/// through queues on a fake clock. `loss` drops datagrams server -> subscriber clients.
package final class RoomHarness {
    package final class Peer {
        package let info: PeerInfo
        package let index: Int
        package var signals: [RoomSignal] = []
        package var publisher: ClientTransport?
        package var subscriber: ClientTransport?
        package var subscriberOffers: [SessionDescription] = []
        /// Plain RTP received on the subscriber connection, by SSRC.
        package var received: [UInt32: [[UInt8]]] = [:]
        /// The harness clock when each of `received` arrived.
        package var receivedTimes: [UInt32: [Int64]] = [:]
        /// RTCP received on the publisher connection (feedback from the server).
        package var publisherRTCP: [RTCPPacket] = []
        package var subscriberRTCP: [RTCPPacket] = []
        package var publisherICE = ICELiteAgent.Credentials.random()
        /// The subscriber client answers with transport-cc feedback every 100 ms, like a browser.
        package var twcc = TWCCRecorder(senderSSRC: 0x7777, mediaSSRC: 0)
        package var sendsTransportCC = false
        /// The subscriber's answers drop the transport-cc extension (the server then uses REMB).
        package var omitsTransportCC = false
        /// The client's network (the second byte of its addresses): changing it moves the client,
        /// as a phone switching from Wi-Fi to mobile data; what is sent to its old address is lost.
        package var network: UInt8 = 9
        package var publisherAddress: TransportAddress { TransportAddress(ipv4: 10, network, 0, UInt8(index), port: 5000) }
        package var subscriberAddress: TransportAddress { TransportAddress(ipv4: 10, network, 0, UInt8(index), port: 6000) }
        package init(info: PeerInfo, index: Int) {
            self.info = info
            self.index = index
        }
        /// The SSRC of the subscriber m-line for a remote (peer, track) from the last offer.
        package func ssrc(peer: String, track: String) -> (ssrc: UInt32, rtx: UInt32?)? {
            guard let offer = subscriberOffers.last, let m = offer.media.first(where: { $0.value("msid") == "\(peer) \(track)" }) else { return nil }
            let ssrcs = m.ssrcs
            return ssrcs.isEmpty ? nil : (ssrcs[0], ssrcs.count > 1 ? ssrcs[1] : nil)
        }
    }

    package let room: Room
    /// The room's host (datagrams to the clients, wake-ups).
    package let proxy: HostProxy
    package let serverContext: DTLSContext
    package let clientContext: DTLSContext
    package var demux = SessionDemux()
    package var toClients: [([UInt8], TransportAddress)] = []
    package var toServer: [([UInt8], TransportAddress)] = []
    package var peers: [Peer] = []
    package var now: Int64 = 1_000_000_000
    package var lastTick: Int64 = 0
    /// When each session (by local ufrag) is next due for a tick.
    package var tickDue: [String: Int64] = [:]
    package var loss = 0
    /// Peers whose clients are gone: no ticks, nothing they send arrives.
    package var silent: Set<String> = []
    package var rng = SystemRandomNumberGenerator()
    package let serverAddress = TransportAddress(ipv4: 10, 0, 0, 1, port: 40000)

    package init(maxParticipants: Int = 10) throws {
        serverContext = try DTLSContext(certificate: DTLSCertificate(commonName: "server"))
        clientContext = try DTLSContext(certificate: DTLSCertificate(commonName: "client"))
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        proxy = HostProxy()
        room = Room(id: "rm_test", maxParticipants: maxParticipants, host: proxy, dtlsContext: serverContext,
                    candidates: [HostCandidate(address: serverAddress)], logger: logger)
        proxy.harness = self
    }

    // MARK: Peers

    @discardableResult
    package func join(_ userID: String, canPublish: Bool = true) throws -> Peer {
        let info = PeerInfo(peerID: "pe_" + userID, userID: userID, name: userID, role: "patient", canPublish: canPublish, canSubscribe: true)
        let peer = Peer(info: info, index: peers.count + 1)
        peers.append(peer)
        try room.join(info, nowNanos: now) { [unowned self, unowned peer] signal in self.deliver(signal, to: peer) }
        return peer
    }

    package func deliver(_ signal: RoomSignal, to peer: Peer) {
        peer.signals.append(signal)
        switch signal {
        case .publisherAnswer(let sdp):
            // An answer to an offer that restarted ICE: the client takes the server's new credentials.
            if let client = peer.publisher, let answer = try? SessionDescription(parsing: sdp),
               let remote = try? RemoteTransportParameters(answer), remote.ice != client.remote {
                client.restartICE(local: peer.publisherICE, remote: remote.ice)
                return
            }
            guard peer.publisher == nil, let answer = try? SessionDescription(parsing: sdp), let remote = try? RemoteTransportParameters(answer),
                  let client = try? ClientTransport(local: peer.publisherICE, remote: remote.ice, serverAddress: serverAddress, context: clientContext,
                                                    serverFingerprint: CertificateFingerprint(sdpValue: "sha-256 " + serverContext.certificate.sha256Fingerprint)!)
            else { return }
            client.onSend = { [unowned self, unowned peer] d in toServer.append((Array(d), peer.publisherAddress)) }
            client.onRTCP = { [unowned peer] packets in peer.publisherRTCP += packets }
            peer.publisher = client
        case .subscriberOffer(let sdp):
            guard let offer = try? SessionDescription(parsing: sdp) else { return }
            peer.subscriberOffers.append(offer)
            if peer.subscriber == nil, let remote = try? RemoteTransportParameters(offer) {
                let client = try? ClientTransport(remote: remote.ice, serverAddress: serverAddress, context: clientContext,
                                                  serverFingerprint: CertificateFingerprint(sdpValue: "sha-256 " + serverContext.certificate.sha256Fingerprint)!)
                client?.onSend = { [unowned self, unowned peer] d in toServer.append((Array(d), peer.subscriberAddress)) }
                client?.onRTP = { [unowned self, unowned peer] packet, header in
                    peer.received[header.ssrc, default: []].append(Array(packet))
                    peer.receivedTimes[header.ssrc, default: []].append(now)
                    if peer.sendsTransportCC, header.hasExtension,
                       let v = header.extensionValue(id: RoomSDP.subscriberTransportCCID, in: UnsafeRawBufferPointer(packet)),
                       let seq = TransportWideSequence.decode(v) {
                        peer.twcc.record(sequenceNumber: seq, arrivalMicros: now / 1000)
                    }
                }
                client?.onRTCP = { [unowned peer] packets in peer.subscriberRTCP += packets }
                peer.subscriber = client
            }
            guard let client = peer.subscriber else { return }
            // An offer that restarted ICE: new credentials of ours too (JSEP: the answerer's change).
            if let remote = try? RemoteTransportParameters(offer), remote.ice != client.remote {
                client.restartICE(local: .random(), remote: remote.ice)
            }
            var answer = ClientSDP.subscriberAnswer(offer: offer, ice: client.local, fingerprint: clientContext.certificate.sha256Fingerprint)
            if peer.omitsTransportCC {
                answer = answer.split(separator: "\r\n").filter { !$0.contains(RTPExtensionURI.transportWideCC) }.joined(separator: "\r\n") + "\r\n"
            }
            // Answered after the room's call returns, as a client would (not re-entrantly).
            pendingAnswers.append((peer, answer))
        default:
            break
        }
    }
    package var pendingAnswers: [(Peer, String)] = []

    /// Publishes the given streams (audio/video SSRCs) from `peer`.
    package func publish(_ peer: Peer, streams: [ClientSDP.Stream]) {
        let offer = ClientSDP.publisherOffer(streams: streams, ice: peer.publisherICE, fingerprint: clientContext.certificate.sha256Fingerprint)
        if let parsed = try? SessionDescription(parsing: offer) { room.publisherOffer(peerID: peer.info.peerID, offer: parsed, nowNanos: now) }
    }

    /// The rid header extension ids in ``publishSimulcast(_:audioSSRC:rids:)`` offers.
    package static let ridExtensionID: UInt8 = 10
    package static let repairedRidExtensionID: UInt8 = 11

    /// Publishes audio and a simulcast VP8 video as Chromium does: `a=rid:<id> send` lines and
    /// `a=simulcast:send q;h;f`, no video SSRCs (the server learns them from the rid extension).
    package func publishSimulcast(_ peer: Peer, audioSSRC: UInt32, rids: [String]) {
        let base = ClientSDP.publisherOffer(streams: [.init(kind: .audio, ssrc: audioSSRC), .init(kind: .video, ssrc: 1, rtxSSRC: 2)],
                                            ice: peer.publisherICE, fingerprint: clientContext.certificate.sha256Fingerprint)
        var lines: [String] = []
        var inVideo = false
        for line in base.split(separator: "\r\n").map(String.init) {
            if line.hasPrefix("m=") { inVideo = line.hasPrefix("m=video") }
            if inVideo && (line.hasPrefix("a=ssrc") || line.hasPrefix("a=ssrc-group")) { continue }
            lines.append(line)
            if inVideo && line.hasPrefix("a=mid:") {
                lines.append("a=extmap:\(Self.ridExtensionID) \(RTPExtensionURI.rtpStreamID)")
                lines.append("a=extmap:\(Self.repairedRidExtensionID) \(RTPExtensionURI.repairedRTPStreamID)")
                lines += rids.map { "a=rid:\($0) send" }
                lines.append("a=simulcast:send " + rids.joined(separator: ";"))
            }
        }
        if let parsed = try? SessionDescription(parsing: lines.joined(separator: "\r\n") + "\r\n") {
            room.publisherOffer(peerID: peer.info.peerID, offer: parsed, nowNanos: now)
        }
    }

    /// Advances the clock by `steps` x 10 ms, moving every queued datagram and running timers.
    package func run(steps: Int = 1) {
        for _ in 0..<steps {
            for (peer, answer) in pendingAnswers {
                if let parsed = try? SessionDescription(parsing: answer) { room.subscriberAnswer(peerID: peer.info.peerID, answer: parsed, nowNanos: now) }
            }
            pendingAnswers.removeAll()
            var rounds = 0
            while (!toServer.isEmpty || !toClients.isEmpty) && rounds < 50 {
                rounds += 1
                let up = toServer
                toServer.removeAll()
                for (bytes, from) in up where !silent.contains(where: { id in peers.contains { $0.info.peerID == id && ($0.publisherAddress == from || $0.subscriberAddress == from) } }) {
                    serverReceive(bytes, from: from)
                }
                let down = toClients
                toClients.removeAll()
                for (bytes, to) in down { clientReceive(bytes, to: to) }
            }
            now += 10_000_000
            for p in peers where !silent.contains(p.info.peerID) {
                p.publisher?.tick(nowNanos: now)
                p.subscriber?.tick(nowNanos: now)
                if p.sendsTransportCC, now % 100_000_000 == 0 {
                    let feedback = p.twcc.buildFeedback()
                    if !feedback.isEmpty { p.subscriber?.sendRTCP(feedback.map { .transportCC($0) }) }
                }
            }
            do {
                let due = proxy.wakes.filter { $0.atNanos <= now }
                proxy.wakes.removeAll { $0.atNanos <= now }
                for w in due where demux.contains(w.session) { w.session.wake(nowNanos: now) }
            }
            if now - lastTick >= 20_000_000 {
                lastTick = now
                // As the media worker: a session is ticked when due (tickDueNanos, asked after its last tick).
                for s in Array(demux.sessions) {
                    let ufrag = s.transport.ice.local.ufrag
                    if let due = tickDue[ufrag], due > now { continue }
                    if let t = s.transport.nextTimeoutNanos, t <= now { s.transport.handleTimeout(nowNanos: now) }
                    if case .closed = s.transport.state { demux.remove(s); continue }
                    s.tick(nowNanos: now)
                    tickDue[ufrag] = s.tickDueNanos(after: now)
                }
            }
        }
    }

    /// One datagram to the server, read at `now`; `arrivalNanos`: when the kernel got it (default: now).
    package func serverReceive(_ bytes: [UInt8], from: TransportAddress, arrivalNanos: Int64? = nil) {
        var bytes = bytes
        bytes.withUnsafeMutableBytes { b in
            guard let session = demux.route(UnsafeRawBufferPointer(b), from: from) else { return }
            session.transport.handleDatagram(b, from: from, nowNanos: now, arrivalNanos: arrivalNanos)
            demux.learn(session, from: from)
        }
    }

    /// Sees every datagram the server sends to a client, as it is on the wire (encrypted).
    package var onClientDatagram: (([UInt8], TransportAddress) -> Void)?

    package func clientReceive(_ bytes: [UInt8], to: TransportAddress) {
        onClientDatagram?(bytes, to)
        var bytes = bytes
        for p in peers {
            if to == p.publisherAddress, let c = p.publisher { bytes.withUnsafeMutableBytes { c.handleDatagram($0, nowNanos: now) } }
            if to == p.subscriberAddress, let c = p.subscriber {
                if loss > 0, PacketClass(classifying: bytes.withUnsafeBytes { UnsafeRawBufferPointer($0) }) == .rtp,
                   Int.random(in: 0..<100, using: &rng) < loss { return }
                bytes.withUnsafeMutableBytes { c.handleDatagram($0, nowNanos: now) }
            }
        }
    }

    /// Runs until every transport of every peer is connected (or `maxSteps`).
    package func connectAll(maxSteps: Int = 500) -> Bool {
        for _ in 0..<maxSteps {
            run()
            let ready = peers.allSatisfy { p in
                (p.publisher.map { $0.state == .connected } ?? true) && (p.subscriber.map { $0.state == .connected } ?? true)
            }
            if ready && pendingAnswers.isEmpty { return true }
            usleep(200)  // OpenSSL's DTLS timers run on the wall clock
        }
        return false
    }

    /// Sends one RTP packet from `peer`'s publisher.
    package func sendRTP(_ peer: Peer, _ packet: RTPPacket) {
        packet.serialized().withUnsafeBytes { _ = peer.publisher?.sendRTP($0) }
    }
}

/// The room's host: the harness's demux and its queue to the clients.
package final class HostProxy: SessionHost {
    package weak var harness: RoomHarness?
    package func add(_ session: WorkerSession) { harness?.demux.add(session) }
    package func remove(_ session: WorkerSession) { harness?.demux.remove(session) }
    package func rekey(_ session: WorkerSession, from oldUfrag: String) { harness?.demux.rekey(session, from: oldUfrag) }
    package func send(_ datagram: UnsafeRawBufferPointer, to address: TransportAddress) { harness?.toClients.append((Array(datagram), address)) }
    /// Wake-ups asked for, run by ``RoomHarness/run(steps:)`` at the first step at or after their time.
    package var wakes: [(session: WorkerSession, atNanos: Int64)] = []
    package func wake(_ session: WorkerSession, atNanos: Int64) { wakes.append((session, atNanos)) }
}

/// A VP8 RTP payload: descriptor (S=1, partition 0, no extensions) and a payload header whose
/// P bit says keyframe or not, then filler.
package func vp8Payload(keyframe: Bool, size: Int = 200, fill: UInt8 = 0xAB) -> [UInt8] {
    var p: [UInt8] = [0x10, keyframe ? 0x00 : 0x01, 0x00, 0x00]
    if keyframe { p += [0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00] }  // 320x240
    p += [UInt8](repeating: fill, count: max(0, size - p.count))
    return p
}
