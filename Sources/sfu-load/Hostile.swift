#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import ArgumentParser
import COpenSSL
import Control
import DTLS
import Foundation
import RTP
import SFU
import WebRTCClient

/// `sfu-load hostile`: one participant that joins with a valid token, sets up its publisher and
/// subscriber connections like a browser, and then abuses them: crafted SRTP-protected RTCP (sender
/// reports whose NTP times jump by 2^62, NACK storms, transport-cc claiming 65,535 statuses, PLI and
/// FIR floods), RTP on hundreds of unknown SSRCs, garbage datagrams, and over signaling an offer with
/// 100 m-lines and a chat flood. A second participant (`--idle-url`) joins and floods chat and
/// offers without ever reading its socket. Prints what it sent as JSON.
struct Hostile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A hostile participant for fault drills: crafted RTCP/RTP over a real SRTP session, garbage, signaling floods.",
        discussion: "Exits 0 after --duration seconds of abuse once connected; exit code 2 when it never got a media session."
    )

    @Option(help: "Signaling URL with the join token (ws://.../v1/signal?token=...).") var url: String
    @Option(help: "A second signaling URL (another participant) that floods without ever reading its socket.") var idleURL: String?
    @Option(help: "Seconds of abuse once connected.") var duration = 20.0
    @Option(help: "Seconds to wait for the media session.") var setupTimeout = 20.0
    @Option(help: "Crafted packets per second (all kinds together).") var rate = 2000

    func run() throws {
        guard PlainURL(url) != nil else { throw ValidationError("--url: a ws:// URL") }
        let idle = try idleURL.map { text -> PlainURL in
            guard let u = PlainURL(text) else { throw ValidationError("--idle-url: a ws:// URL") }
            return u
        }
        let attacker = try HostileClient(url: url, idleURL: idle, rate: rate)
        let ok = try attacker.run(setupTimeout: setupTimeout, duration: duration)
        print(JSON.string(attacker.summary))
        fflush(nil)
        if !ok { throw ExitCode(2) }
    }
}

final class HostileClient {
    let context: DTLSContext
    let socket: SignalingSocket
    var idleSocket: NeverReadingWebSocket?
    let idleURL: PlainURL?
    let rate: Int
    let audioSSRC = UInt32.random(in: 1...UInt32.max)
    let videoSSRC = UInt32.random(in: 1...UInt32.max)
    let publisherICE = ICELiteAgent.Credentials.random()
    var publisher: PeerConnection?
    var subscriber: PeerConnection?
    /// SSRCs the server sends us (other participants' media): targets for NACK/PLI storms.
    var remoteSSRCs: [UInt32] = []
    var joined = false
    var joinSent = false
    var counts: [String: Int] = [:]
    var serverErrors: [String: Int] = [:]
    var notes: [String] = []
    var sequence: UInt16 = 0
    var transportSequence: UInt16 = 0
    var idleJoinSent = false
    /// The server closed the never-reading socket (its writes fail once the close arrives).
    var idleWriteFailed = false
    var buffer = [UInt8](repeating: 0, count: 1500)
    var step = 0
    var bursts = 0

    init(url: String, idleURL: PlainURL?, rate: Int) throws {
        context = try DTLSContext(certificate: DTLSCertificate(commonName: "sfu-hostile"))
        socket = try SignalingSocket(url: url)
        self.idleURL = idleURL
        self.rate = max(1, rate)
        socket.onMessage = { [unowned self] message in self.handle(message) }
    }

    /// What the drill prints (Tests/E2E/test_drills.py reads it).
    struct Summary: Encodable {
        var sent: [String: Int]
        var serverErrors: [String: Int]
        var remoteSsrcs: Int
        var publisherConnected, subscriberConnected, signalingOpen, idleWriteFailed: Bool
        var notes: [String]
    }

    var summary: Summary {
        Summary(sent: counts, serverErrors: serverErrors, remoteSsrcs: remoteSSRCs.count,
                publisherConnected: publisher?.isConnected ?? false, subscriberConnected: subscriber?.isConnected ?? false,
                signalingOpen: socket.state == .open, idleWriteFailed: idleWriteFailed, notes: notes)
    }

    func count(_ what: String, _ n: Int = 1) { counts[what, default: 0] += n }

    // MARK: Loop

    func run(setupTimeout: Double, duration: Double) throws -> Bool {
        let start = Clock.monotonicNanos
        var abuseStart: Int64?
        var nextTick = start
        var nextBurst = start
        var receive = [UInt8](repeating: 0, count: 2048)
        while true {
            let now = Clock.monotonicNanos
            if abuseStart == nil, now - start > Int64(setupTimeout * 1e9) {
                notes.append("no media session after \(setupTimeout) s (signaling \(socket.state))")
                return false
            }
            if let t = abuseStart, now - t > Int64(duration * 1e9) { return true }
            // Poll signaling and media sockets for up to 2 ms.
            var fds = [pollfd(fd: socket.fd, events: Int16(POLLIN) | (socket.wantsWrite ? Int16(POLLOUT) : 0), revents: 0)]
            for c in [publisher, subscriber].compactMap({ $0 }) { fds.append(pollfd(fd: c.fd, events: Int16(POLLIN), revents: 0)) }
            _ = poll(&fds, nfds_t(fds.count), 2)
            if case .closed = socket.state {} else {
                socket.writeReady()
                if fds[0].revents & Int16(POLLIN) != 0 { socket.readReady() }
                if socket.state == .open, !joinSent {
                    joinSent = true
                    socket.send(.joinRoom(roomID: nil))
                }
                socket.writeReady()
            }
            for c in [publisher, subscriber].compactMap({ $0 }) {
                while true {
                    let n = receive.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                    if n <= 0 { break }
                    receive.withUnsafeMutableBytes { c.transport.handleDatagram(UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), nowNanos: Clock.monotonicNanos) }
                }
            }
            if now >= nextTick {
                nextTick = now + 10_000_000
                for c in [publisher, subscriber].compactMap({ $0 }) { c.transport.tick(nowNanos: now) }
            }
            let connected = publisher?.isConnected == true && (subscriber?.isConnected ?? true)
            if abuseStart == nil, connected, publisher != nil {
                // Give the server a moment to send the subscriber offer if the room has media.
                abuseStart = now
                notes.append("media session up after \((now - start) / 1_000_000) ms")
                openIdle()
            }
            if abuseStart != nil, now >= nextBurst {
                // Bursts every 10 ms: rate/100 crafted packets each.
                nextBurst = now + 10_000_000
                for _ in 0..<max(1, rate / 100) { abuse() }
                signalingAbuse()
                idleAbuse()
            }
        }
    }

    // MARK: Signaling

    func handle(_ event: ServerEvent) {
        switch event {
        case .joinedRoom:
            joined = true
            let offer = ClientSDP.publisherOffer(streams: [ClientSDP.Stream(kind: .audio, ssrc: audioSSRC), ClientSDP.Stream(kind: .video, ssrc: videoSSRC)],
                                                 ice: publisherICE, fingerprint: context.certificate.sha256Fingerprint)
            socket.send(.publisherOffer(sdp: offer))
        case .webrtcAnswer(let answerSDP):
            guard answerSDP.target == "publisher", publisher == nil,
                  let answer = try? SessionDescription(parsing: answerSDP.sdp), let server = ServerEndpoint(answer) else { return }
            publisher = try? PeerConnection(server: server.address, local: publisherICE, remote: server.ice, fingerprint: server.fingerprint, context: context)
            if publisher == nil { notes.append("publisher connection failed") }
        case .webrtcOffer(let offerSDP):
            guard offerSDP.target == "subscriber", let offer = try? SessionDescription(parsing: offerSDP.sdp) else { return }
            for m in offer.media { for s in m.ssrcs where !remoteSSRCs.contains(s) { remoteSSRCs.append(s) } }
            if subscriber == nil, let server = ServerEndpoint(offer) {
                subscriber = try? PeerConnection(server: server.address, local: .random(), remote: server.ice, fingerprint: server.fingerprint, context: context)
            }
            guard let subscriber else { return }
            let answer = ClientSDP.subscriberAnswer(offer: offer, ice: subscriber.transport.local, fingerprint: context.certificate.sha256Fingerprint)
            socket.send(.subscriberAnswer(sdp: answer))
        case .error(let error):
            serverErrors[error.code, default: 0] += 1
        default:
            break
        }
    }

    /// An offer with 100 m-lines (audio and video alternating, each with its own SSRC).
    func hugeOffer() -> String {
        let streams = (0..<100).map { i in ClientSDP.Stream(kind: i % 2 == 0 ? .audio : .video, ssrc: .random(in: 1...UInt32.max)) }
        return ClientSDP.publisherOffer(streams: streams, ice: publisherICE, fingerprint: context.certificate.sha256Fingerprint)
    }

    /// Every 50 ms a chat message on the main socket (20/s: four times the chat rate, under the
    /// event rate, so that its subscriber answers still get through) and every second an offer with
    /// 100 m-lines. The main socket keeps reading (its media must live on).
    func signalingAbuse() {
        bursts += 1
        guard socket.state == .open else { return }
        if bursts % 5 == 0 {
            socket.send(.sendMessage(String(repeating: "flood ", count: 50)))
            count("chat_messages")
        }
        if bursts % 100 == 0 {
            socket.send(.publisherOffer(sdp: hugeOffer()))
            count("offers_100_mlines")
        }
        socket.writeReady()
    }

    func openIdle() {
        guard let idleURL else { return }
        idleSocket = try? NeverReadingWebSocket(url: idleURL)
        if idleSocket == nil { notes.append("idle socket failed to connect") }
    }

    /// The idle participant: finishes its handshake (reading only the 101 response), joins, then
    /// writes chat messages and 100-m-line offers and never reads again; whatever the server queues
    /// for it (every chat message of the room, subscriber offers) piles up on the server's side.
    func idleAbuse() {
        guard let idle = idleSocket else { return }
        if idle.state == .handshaking {
            var fds = [pollfd(fd: idle.fd, events: Int16(POLLIN) | Int16(POLLOUT), revents: 0)]
            _ = poll(&fds, 1, 0)
            idle.writeReady()
            if fds[0].revents & Int16(POLLIN) != 0 { idle.readReady() }
            return
        }
        guard idle.state == .open else { return }
        if !idleJoinSent {
            idleJoinSent = true
            idle.send(.joinRoom(roomID: nil))
        }
        // 200 a second: all but 5 refused, and each refusal is an error event queued for it.
        for _ in 0..<2 {
            idle.send(.sendMessage(String(repeating: "never reads ", count: 80)))
            count("idle_chat_messages")
        }
        if bursts % 50 == 0 {
            idle.send(.publisherOffer(sdp: hugeOffer()))
            count("idle_offers")
        }
        if !idle.writeReady() { idleWriteFailed = true }
    }

    // MARK: Media

    /// One crafted packet, rotating through the kinds.
    func abuse() {
        step += 1
        guard let pub = publisher, pub.isConnected else { return }
        let sub = subscriber?.isConnected == true ? subscriber : nil
        let targets = remoteSSRCs.isEmpty ? [videoSSRC] : remoteSSRCs
        let target = targets[step % targets.count]
        switch step % 10 {
        case 0:
            // Sender reports whose NTP times are 2^62 apart (alternating), on the publisher's video SSRC.
            let ntp: UInt64 = step % 20 == 0 ? 0x0000_0001_0000_0000 : 0x4000_0001_0000_0000
            rtcp(pub, HostilePackets.senderReport(ssrc: videoSSRC, ntp: ntp, rtpTimestamp: UInt32(truncatingIfNeeded: step &* 3000)), "sender_reports")
        case 1, 2:
            // NACK storms for the media the server sends us (each packet: 300 entries x 17 sequence numbers).
            rtcp(sub ?? pub, HostilePackets.nack(sender: audioSSRC, media: target, first: UInt16(truncatingIfNeeded: step &* 17)), "nacks")
        case 3:
            // Transport-cc feedback claiming 65,535 statuses: not-received runs, and received runs whose deltas are missing.
            rtcp(sub ?? pub, HostilePackets.transportCC(sender: audioSSRC, media: target, baseSequence: UInt16(truncatingIfNeeded: step),
                                                        received: step % 20 == 3), "transport_cc_65535")
        case 4:
            rtcp(sub ?? pub, HostilePackets.pli(sender: audioSSRC, media: target), "plis")
            rtcp(sub ?? pub, HostilePackets.fir(sender: audioSSRC, media: target, sequence: UInt8(truncatingIfNeeded: step)), "firs")
        case 5, 6:
            // RTP on unknown SSRCs (a fresh one each time: hundreds over the drill), with and without a known MID.
            rtp(pub, ssrc: .random(in: 1...UInt32.max), mid: step % 2 == 0 ? "1" : "zz", "rtp_unknown_ssrc")
        case 7:
            // Real-looking media on the announced SSRCs, so the server has a producer to be confused about.
            rtp(pub, ssrc: videoSSRC, mid: "1", "rtp_announced")
        case 8:
            // SRTP-protected garbage: RTCP headers whose lengths lie, unknown types, truncated blocks.
            rtcp(sub ?? pub, HostilePackets.lyingRTCP(step: step), "rtcp_garbage")
        default:
            // Unprotected garbage on both sockets: random bytes in each demultiplexing range.
            for c in [pub, sub].compactMap({ $0 }) {
                var g = (0..<Int.random(in: 1...1200)).map { _ in UInt8.random(in: 0...255) }
                g[0] = [UInt8(0x00), 0x16, 0x80, 0x90, 0xC8, 0xFF][step % 6]
                _ = g.withUnsafeBytes { send(c.fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                count("garbage_datagrams")
            }
        }
    }

    func rtcp(_ c: PeerConnection, _ bytes: [UInt8], _ what: String) {
        if bytes.withUnsafeBytes({ c.transport.sendRawRTCP($0) }) { count(what) }
    }

    func rtp(_ c: PeerConnection, ssrc: UInt32, mid: String, _ what: String) {
        sequence &+= 1
        transportSequence &+= 1
        let writer = HeaderWriter()
        let sent: Bool = buffer.withUnsafeMutableBytes { b in
            let h = writer.write(b, marker: true, payloadType: 96, sequence: sequence, timestamp: UInt32(truncatingIfNeeded: step &* 3000), ssrc: ssrc,
                                 transportSequence: transportSequence, mid: Array(mid.utf8), rid: nil)
            // A VP8 descriptor for a keyframe start, then noise.
            b[h] = 0x10
            b[h + 1] = 0x00
            for i in (h + 2)..<(h + 200) { b[i] = UInt8.random(in: 0...255) }
            return c.transport.sendRTP(UnsafeRawBufferPointer(rebasing: b[0..<(h + 200)]))
        }
        if sent { count(what) }
    }
}

/// Crafted RTCP, byte by byte (the project's serializer only writes well-formed packets).
enum HostilePackets {
    static func header(count: Int, type: UInt8, words: Int) -> [UInt8] {
        [0x80 | UInt8(count & 0x1f), type, UInt8(words >> 8), UInt8(truncatingIfNeeded: words)]
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)] }

    static func senderReport(ssrc: UInt32, ntp: UInt64, rtpTimestamp: UInt32) -> [UInt8] {
        header(count: 0, type: 200, words: 6) + be32(ssrc) + be32(UInt32(ntp >> 32)) + be32(UInt32(truncatingIfNeeded: ntp))
            + be32(rtpTimestamp) + be32(1_000_000) + be32(0xFFFF_FFFF)
    }

    static func nack(sender: UInt32, media: UInt32, first: UInt16) -> [UInt8] {
        var fci: [UInt8] = []
        for i in 0..<300 {
            let pid = first &+ UInt16(truncatingIfNeeded: i * 17)
            fci += [UInt8(pid >> 8), UInt8(truncatingIfNeeded: pid), 0xFF, 0xFF]
        }
        return header(count: 1, type: 205, words: 2 + fci.count / 4) + be32(sender) + be32(media) + fci
    }

    static func transportCC(sender: UInt32, media: UInt32, baseSequence: UInt16, received: Bool) -> [UInt8] {
        var body = be32(sender) + be32(media)
        body += [UInt8(baseSequence >> 8), UInt8(truncatingIfNeeded: baseSequence), 0xFF, 0xFF]  // status count 65,535
        body += [0x7F, 0xFF, 0xFF, 0x01]  // reference time (max), feedback count
        // Run-length chunks of 8,191 covering 65,535 statuses: symbol 0 (not received) or 1 (small delta).
        var left = 65_535
        while left > 0 {
            let run = min(left, 8191)
            let symbol: UInt16 = received ? 1 : 0
            let chunk = symbol << 13 | UInt16(run)
            body += [UInt8(chunk >> 8), UInt8(truncatingIfNeeded: chunk)]
            left -= run
        }
        // With "received" symbols the deltas (65,535 bytes) cannot fit: a few, then the packet ends.
        if received { body += [UInt8](repeating: 4, count: 40) }
        while body.count % 4 != 0 { body.append(0) }
        return header(count: 15, type: 205, words: body.count / 4) + body
    }

    static func pli(sender: UInt32, media: UInt32) -> [UInt8] {
        header(count: 1, type: 206, words: 2) + be32(sender) + be32(media)
    }

    static func fir(sender: UInt32, media: UInt32, sequence: UInt8) -> [UInt8] {
        header(count: 4, type: 206, words: 4) + be32(sender) + be32(0) + be32(media) + [sequence, 0, 0, 0]
    }

    static func lyingRTCP(step: Int) -> [UInt8] {
        switch step % 4 {
        case 0: return header(count: 31, type: 201, words: 0xFFFF) + be32(1)  // receiver report claiming 31 blocks and 256 KB
        case 1: return header(count: 15, type: 205, words: 2) + be32(1) + be32(2)  // transport-cc with no body
        case 2: return header(count: 0, type: 200, words: 6) + be32(3) + [1, 2, 3] + [0] // SR shorter than it says (padded to a word)
        default: return header(count: 2, type: 202, words: 200) + (0..<40).map { _ in UInt8.random(in: 0...255) }  // SDES overrunning
        }
    }
}

/// The drill's never-reading participant: a WebSocket (RFC 6455) on a raw non-blocking TCP socket
/// with a 4 KiB receive buffer, which reads the server's 101 response and nothing after it, and
/// writes masked text frames. A library client cannot play this part: it reads whatever arrives
/// into its own buffers, so what the server sends would not pile up on the server's side. There is
/// no frame parser: after the handshake nothing is read.
final class NeverReadingWebSocket {
    enum State: Equatable { case handshaking, open, closed(String) }
    let fd: Int32
    private(set) var state = State.handshaking
    private var response: [UInt8] = []
    private var output: [UInt8] = []
    private let expectedAccept: String
    /// The receive buffer asked for: what the server sends stays queued on the server's side.
    static let receiveBufferBytes: Int32 = 4096

    init(url: PlainURL) throws {
        fd = try Sockets.connectedTCP(to: url.address, nonBlocking: true)
        var size = Self.receiveBufferBytes
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        let key = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        expectedAccept = Self.accept(for: key)
        let request = "GET \(url.target) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        output = Array(request.utf8)
    }

    deinit { close(fd) }

    /// Sec-WebSocket-Accept for `key` (RFC 6455 section 4.2.2).
    static func accept(for key: String) -> String {
        let text = Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: 20)
        _ = text.withUnsafeBufferPointer { t in digest.withUnsafeMutableBufferPointer { d in SHA1(t.baseAddress, t.count, d.baseAddress) } }
        return Data(digest).base64EncodedString()
    }

    func send(_ event: ClientEvent) {
        guard state == .open, let text = try? event.encoded() else { return }
        let payload = Array(text.utf8)
        output.append(0x81)
        let n = payload.count
        if n < 126 {
            output.append(0x80 | UInt8(n))
        } else if n < 65536 {
            output += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xff)]
        } else {
            output.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { output.append(UInt8(truncatingIfNeeded: n >> shift)) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        output += mask
        for (i, b) in payload.enumerated() { output.append(b ^ mask[i & 3]) }
    }

    /// Writes what it can. - Returns: false when the connection failed (the server closed it).
    @discardableResult
    func writeReady() -> Bool {
        while !output.isEmpty {
            let n = output.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                output.removeFirst(n)
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return true }
            if n < 0 && errno == EINTR { continue }
            state = .closed("write failed: \(SystemError("send"))")
            return false
        }
        return true
    }

    /// Reads the handshake response (only while handshaking; never a byte after it).
    func readReady() {
        guard state == .handshaking else { return }
        var byte: UInt8 = 0
        // One byte at a time, so that not a byte past the response's blank line is taken.
        while true {
            let n = recv(fd, &byte, 1, 0)
            if n == 1 {
                response.append(byte)
                if response.count > 8192 {
                    state = .closed("WebSocket handshake response too long")
                    return
                }
                if response.suffix(4) == [13, 10, 13, 10] { break }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return }
            if n < 0 && errno == EINTR { continue }
            state = .closed(n == 0 ? "connection closed by the server" : "\(SystemError("recv"))")
            return
        }
        let lines = String(decoding: response, as: UTF8.self).split(separator: "\r\n")
        let accept = lines.first { $0.lowercased().hasPrefix("sec-websocket-accept:") }
            .map { $0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces) }
        state = lines.first?.contains(" 101 ") == true && accept == expectedAccept ? .open : .closed("WebSocket handshake refused: \(lines.first ?? "")")
    }
}
