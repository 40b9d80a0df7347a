import Control
import DTLS
import Foundation
import Recorder
import RTP
import SFU

/// The libFuzzer harnesses (docs/FUZZING.md). Each one feeds an input to the entry point the server
/// uses for that kind of untrusted data, then exercises what the server does next with the result,
/// so a trap anywhere on that path is found. The fuzz executable (`sfu-fuzz`) and the regression
/// test (Tests/FuzzTests) call these same functions.
package enum Harness: String, CaseIterable, Sendable {
    case rtp, rtcp, stun, sdp, vp8, h264, webm, signaling, jwt, tcp

    /// Runs the harness on one input. Never throws: a crash, trap or sanitizer report is the finding.
    package func run(_ data: UnsafeRawBufferPointer) {
        switch self {
        case .rtp: Self.rtp(data)
        case .rtcp: Self.rtcp(data)
        case .stun: Self.stun(data)
        case .sdp: Self.sdp(data)
        case .vp8: Self.vp8(data)
        case .h264: Self.h264(data)
        case .webm: Self.webm(data)
        case .signaling: Self.signaling(data)
        case .jwt: Self.jwt(data)
        case .tcp: Self.tcp(data)
        }
    }

    package func run(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { run($0) }
    }

    // MARK: RTP (WebRTCTransport, PublisherConnection, Consumer: RTPHeader on the raw datagram)

    static func rtp(_ raw: UnsafeRawBufferPointer) {
        guard let header = try? RTPHeader(parsing: raw) else { return }
        // Callers slice the datagram with these ranges: they must lie inside it.
        check(header.payloadRange.lowerBound >= 0 && header.payloadRange.upperBound <= raw.count, "RTP payload range outside the packet")
        check(header.extensionRange.upperBound <= raw.count, "RTP extension range outside the packet")
        check(header.packetLength <= raw.count, "RTP packet length beyond the datagram")
        let bytes = [UInt8](raw)
        guard var packet = try? RTPPacket(parsing: bytes) else { return }
        for id in UInt8(0)...15 {
            if let value = packet.extensionValue(id: id) {
                value.withUnsafeBytes { v in
                    _ = AbsSendTime.decode(v)
                    _ = TransportWideSequence.decode(v)
                }
            }
        }
        _ = try? RTPPacket(parsing: packet.serialized())
        _ = header.rtxOriginalSequenceNumber(in: raw)
        _ = try? packet.rtxUnwrapped(originalSSRC: 1, originalPayloadType: 96)
        _ = packet.rtxWrapped(ssrc: 2, payloadType: 97, sequenceNumber: 3)
        try? packet.setExtension(id: 3, value: [1, 2])
        _ = packet.serialized()
    }

    // MARK: RTCP compound packets (WebRTCTransport after SRTCP unprotect)

    static func rtcp(_ raw: UnsafeRawBufferPointer) {
        _ = PacketClass(classifying: raw)
        guard let packets = try? RTCPCompound.parse(raw) else { return }
        for packet in packets {
            switch packet {
            case .nack(let nack): _ = nack.sequenceNumbers
            case .transportCC(let cc): _ = cc.statuses
            case .remb(let remb): _ = remb.bitrate
            default: break
            }
        }
        // What we re-serialize (RTCP we forward or answer with) must parse again.
        let again = RTCPCompound.serialize(packets)
        _ = try? RTCPCompound.parse(again)
    }

    // MARK: STUN (ICELiteAgent.handle on every STUN datagram, integrity and fingerprint checks)

    static let localCredentials = ICELiteAgent.Credentials(ufrag: "fzlo", password: "fuzz-local-password-0123")
    static let remoteCredentials = ICELiteAgent.Credentials(ufrag: "fzre", password: "fuzz-remote-password-012")

    static func stun(_ raw: UnsafeRawBufferPointer) {
        _ = STUNMessage.isSTUN(raw)
        let source = TransportAddress(ipv4: 192, 0, 2, 1, port: 5000)
        let other = TransportAddress(ipv4: 192, 0, 2, 2, port: 5001)
        guard let agent = ICELiteAgent(local: localCredentials, remote: remoteCredentials),
              let localKey = HMAC(digest: .sha1, key: Array(localCredentials.password.utf8)),
              let remoteKey = HMAC(digest: .sha1, key: Array(remoteCredentials.password.utf8))
        else { return }
        _ = agent.handle(raw, from: source, nowNanos: 1_000_000_000)
        guard var message = try? STUNMessage(parsing: raw) else { return }
        _ = message.checkIntegrity(raw, key: localKey)
        _ = message.username
        // Random bytes almost never carry a valid MESSAGE-INTEGRITY: re-sign the parsed message with
        // the key the agent expects (and our USERNAME) so the authenticated paths are fuzzed too.
        let isResponse = message.messageClass == .successResponse || message.messageClass == .errorResponse
        if !isResponse {
            message.attributes.removeAll { $0.type == STUNAttributeType.username }
            message.attributes.insert(STUNMessage.usernameAttribute("\(localCredentials.ufrag):\(remoteCredentials.ufrag)"), at: 0)
        }
        let signed = message.serialized(integrity: isResponse ? remoteKey : localKey)
        signed.withUnsafeBytes { s in
            guard let reparsed = try? STUNMessage(parsing: s) else {
                // Only the size limit may refuse what we wrote (the added attributes can cross it).
                check(s.count > STUNMessage.maxSize, "a message we serialized does not parse")
                return
            }
            check(reparsed.checkIntegrity(s, key: isResponse ? remoteKey : localKey), "our own MESSAGE-INTEGRITY does not verify")
            let first = agent.handle(s, from: source, nowNanos: 2_000_000_000)
            // A check of ours in flight: answer it, from the nominated address and from another.
            if let check = first.check {
                check.bytes.withUnsafeBytes { c in
                    if let request = try? STUNMessage(parsing: c) {
                        var answer = STUNMessage(messageClass: .successResponse, transactionID: request.transactionID,
                                                 attributes: [STUNMessage.xorMappedAddressAttribute(check.to, transactionID: request.transactionID)])
                        answer.attributes += message.attributes.prefix(4)
                        answer.serialized(integrity: remoteKey).withUnsafeBytes { a in
                            _ = agent.handle(a, from: other, nowNanos: 2_100_000_000)
                            _ = agent.handle(a, from: check.to, nowNanos: 2_200_000_000)
                        }
                    }
                }
            }
            _ = agent.handle(s, from: other, nowNanos: 3_000_000_000)
        }
        _ = agent.consentExpired(nowNanos: 40_000_000_000, startNanos: 0)
    }

    // MARK: ICE-TCP stream (ICETCPServer: FrameReader on what recv returns, FrameWriteQueue on what it sends)

    /// The first byte sets how the rest is cut into reads; the frames must come out the same as
    /// from one read, and framing them again with the write queue must read back the same.
    static func tcp(_ raw: UnsafeRawBufferPointer) {
        guard let first = raw.first else { return }
        let step = Int(first % 64) + 1
        let body = Array(raw.dropFirst())
        func read(_ stream: [UInt8], step: Int) -> (frames: [[UInt8]], oversize: [Int], reader: FrameReader) {
            var reader = FrameReader(maxFrame: 512)
            var frames: [[UInt8]] = []
            var oversize: [Int] = []
            var start = 0
            repeat {
                var part = Array(stream[start..<min(start + step, stream.count)])
                part.withUnsafeMutableBytes { p in
                    reader.consume(p) { event in
                        switch event {
                        case .frame(let f):
                            check(!f.isEmpty && f.count <= 512, "a frame of \(f.count) bytes delivered")
                            frames.append(Array(f))
                        case .oversize(let length): oversize.append(length)
                        }
                        return true
                    }
                }
                start += step
            } while start < stream.count
            return (frames, oversize, reader)
        }
        let whole = read(body, step: max(body.count, 1))
        let pieces = read(body, step: step)
        check(whole.frames == pieces.frames && whole.oversize == pieces.oversize, "the frames depend on how the stream was cut")
        check(whole.reader.isMidFrame == pieces.reader.isMidFrame && whole.reader.empty == pieces.reader.empty, "the reader's state depends on the cuts")
        var queue = FrameWriteQueue(capacity: 1 << 20)
        for f in whole.frames { f.withUnsafeBytes { check(queue.append($0), "a delivered frame does not fit an empty queue") } }
        var stream: [UInt8] = []
        while !queue.isEmpty { queue.drain { b in stream += b.prefix(step); return min(step, b.count) } }
        check(read(stream, step: 7).frames == whole.frames, "frames written by the queue read back differently")
    }

    // MARK: SDP (RoomSignaling/EchoService parse offers and answers; Room answers them)

    static let local = LocalTransportParameters(
        ice: localCredentials,
        fingerprint: Array(repeating: "AB", count: 32).joined(separator: ":"),
        candidates: [HostCandidate(address: TransportAddress(ipv4: 127, 0, 0, 1, port: 40000))]
    )

    static func sdp(_ raw: UnsafeRawBufferPointer) {
        let text = String(decoding: raw, as: UTF8.self)
        guard let sdp = try? SessionDescription(parsing: text) else { return }
        _ = try? SessionDescription(parsing: sdp.text)
        _ = try? RemoteTransportParameters(sdp)
        if let answer = try? RoomSDP.answerPublisher(offer: sdp, local: local, setup: .passive, sessionVersion: 1, sessionID: 1) {
            _ = try? SessionDescription(parsing: answer.answer.text)
        }
        _ = RoomSDP.readSubscriberAnswer(sdp)
    }

    // MARK: VP8 payload descriptor (Producer, Consumer, FrameAssembler)

    static func vp8(_ raw: UnsafeRawBufferPointer) {
        guard let descriptor = try? VP8Descriptor(parsing: raw) else { return }
        check(descriptor.length <= raw.count, "VP8 descriptor longer than the payload")
        _ = descriptor.isKeyframeStart(payload: raw)
        _ = descriptor.keyframeSize(payload: raw)
        var copy = [UInt8](raw)
        copy.withUnsafeMutableBytes { descriptor.rewrite(pictureID: 0x7ABC, tl0PicIdx: 9, in: $0) }
        copy.withUnsafeMutableBytes { descriptor.rewrite(pictureID: 5, tl0PicIdx: nil, in: $0) }
        copy.withUnsafeBytes { _ = try? VP8Descriptor(parsing: $0) }
    }

    // MARK: H.264 (FrameAssembler's depacketizer, then a snapshot's libavcodec decode)

    /// The input is RTP payloads of one frame, each after a 2-byte big-endian length (the last one
    /// may run to the end). They go through the recorder's frame assembly as consecutive packets
    /// (marker on the last); a frame that comes out as a keyframe is decoded as a snapshot would be.
    static func h264(_ raw: UnsafeRawBufferPointer) {
        let bytes = [UInt8](raw)
        var payloads: [[UInt8]] = []
        var i = 0
        while i < bytes.count, payloads.count < 64 {
            guard i + 2 <= bytes.count else {
                payloads.append(Array(bytes[i...]))
                break
            }
            let n = Int(bytes[i]) << 8 | Int(bytes[i + 1])
            let end = min(bytes.count, i + 2 + n)
            payloads.append(Array(bytes[(i + 2)..<end]))
            i = end
        }
        var assembler = FrameAssembler(codec: .h264)
        var frames: [AssembledFrame] = []
        for (k, payload) in payloads.enumerated() {
            frames += payload.withUnsafeBytes {
                assembler.push(sequenceNumber: UInt16(truncatingIfNeeded: 1000 + k), timestamp: 90_000, marker: k == payloads.count - 1,
                               payload: $0, nowNanos: Int64(k) * 1_000_000)
            }
        }
        frames += assembler.poll(nowNanos: 10_000_000_000)
        for frame in frames where frame.keyframe {
            if let image = try? H264Decoder.decodeKeyframe(frame.data) {
                check(image.width > 0 && image.height > 0 && image.y.count == image.width * image.height
                      && image.u.count == image.chromaWidth * image.chromaHeight, "a decoded picture's planes do not match its size")
            }
        }
    }

    // MARK: WebM scanner (RecordingReconciler on interrupted files)

    static func webm(_ raw: UnsafeRawBufferPointer) {
        guard let scan = WebMScan(bytes: [UInt8](raw)) else { return }
        check(scan.validLength >= 0 && scan.validLength <= raw.count, "WebM valid length outside the file")
        _ = scan.durationMs
    }

    // MARK: signaling (the signaling session: a WebSocket text frame to a client event)

    static func signaling(_ raw: UnsafeRawBufferPointer) {
        let text = String(decoding: raw, as: UTF8.self)
        switch ClientEvent.decode(text) {
        case .success(.publisherOffer(let sdp)), .success(.subscriberAnswer(let sdp)): _ = try? SessionDescription(parsing: sdp)
        case .success(.sendMessage(let message)): check(!message.isEmpty && message.count <= 4096, "chat length outside 1...4096")
        case .success(.setLayer(_, let s, let t)): check([s, t].allSatisfy { $0.map { (0...3).contains($0) } ?? true }, "layer cap outside 0...3")
        case .success: break
        case .failure(let error): check(!error.code.isEmpty && !error.message.isEmpty, "an error without code or message")
        }
    }

    // MARK: JWT (JoinTokenSigner.verify on every join token)

    static let secret = "fuzz-secret-0123456789-0123456789-abcdef"
    static let signer = JoinTokenSigner(secret: secret)

    /// First byte even: the rest is a token as a client sends it. Odd: the rest is the payload JSON
    /// (bit 1 set: header JSON, a newline, payload JSON), signed with the server's key so verification
    /// gets past the signature to the header and claims decoding.
    static func jwt(_ raw: UnsafeRawBufferPointer) {
        guard let mode = raw.first else { return }
        let rest = [UInt8](raw.dropFirst())
        if mode & 1 == 0 {
            let token = String(decoding: rest, as: UTF8.self)
            waitFor { _ = try? await signer.verify(token, nowSeconds: 1_700_000_000, room: "room") }
            return
        }
        var header = Array(#"{"alg":"HS256","typ":"JWT"}"#.utf8)
        var payload = rest
        if mode & 2 != 0, let newline = rest.firstIndex(of: 0x0A) {
            header = Array(rest[..<newline])
            payload = Array(rest[(newline + 1)...])
        }
        let input = base64url(header) + "." + base64url(payload)
        guard let mac = HMAC(digest: .sha256, key: Array(secret.utf8))?.authenticate(Array(input.utf8)) else { return }
        let token = input + "." + base64url(mac)
        waitFor { _ = try? await signer.verify(token, nowSeconds: 1_700_000_000, room: mode & 4 != 0 ? "room" : nil) }
    }

    /// Runs `body` (the verifier is async: jwt-kit's keys live in actors) and blocks until it ends:
    /// libFuzzer calls the harness synchronously on its own thread.
    static func waitFor(_ body: @escaping @Sendable () async -> Void) {
        let done = DispatchSemaphore(value: 0)
        Task {
            await body()
            done.signal()
        }
        done.wait()
    }

    static func base64url(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    // MARK: invariants

    static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fail(message()) }
    }

    static func fail(_ message: String) -> Never {
        fatalError("fuzz invariant: \(message)")
    }
}
