import DTLS
import RTP
import SFU

/// The client side of a WebRTC transport against an ICE-lite server, sans-IO: a controlling ICE
/// agent reduced to what a browser does with one server candidate (checks every 50 ms until answered,
/// nominating with USE-CANDIDATE, then a consent check every 5 s), the DTLS client role and SRTP.
/// In-memory tests and load tools drive it with `(datagram, now)` and collect what it sends.
package final class ClientTransport {
    package enum State: Equatable, Sendable { case checking, handshaking, connected, failed(String) }

    package private(set) var local: ICELiteAgent.Credentials
    package private(set) var remote: ICELiteAgent.Credentials
    package let serverAddress: TransportAddress
    package let dtls: DTLSEndpoint
    package private(set) var state: State = .checking
    /// Where datagrams go (to `serverAddress`).
    package var onSend: ((UnsafeRawBufferPointer) -> Void)?
    /// Decrypted RTP (valid during the call).
    package var onRTP: ((UnsafeMutableRawBufferPointer, RTPHeader) -> Void)?
    package var onRTCP: (([RTCPPacket]) -> Void)?
    package private(set) var rtpPacketsIn = 0
    package private(set) var rtpPacketsOut = 0
    private var key: HMAC
    private let tieBreaker = UInt64.random(in: 0...UInt64.max)
    private var lastCheckNanos: Int64?
    private var srtpIn: SRTPSession?
    private var srtpOut: SRTPSession?
    private var buffer = [UInt8](repeating: 0, count: 1500 + SRTPProfile.maxOverhead)
    static let checkIntervalNanos: Int64 = 50_000_000
    static let consentIntervalNanos: Int64 = 5_000_000_000

    /// - Parameters:
    ///   - remote: the server's ICE credentials (from its SDP).
    ///   - serverFingerprint: the server's `a=fingerprint`.
    package init(local: ICELiteAgent.Credentials = .random(), remote: ICELiteAgent.Credentials, serverAddress: TransportAddress,
                context: DTLSContext, serverFingerprint: CertificateFingerprint) throws {
        guard let key = HMAC(digest: .sha1, key: Array(remote.password.utf8)) else { throw WebRTCTransport.TransportError.crypto("HMAC unavailable") }
        self.key = key
        self.local = local
        self.remote = remote
        self.serverAddress = serverAddress
        dtls = try DTLSEndpoint(role: .client, context: context, expectedRemoteFingerprint: serverFingerprint)
    }

    /// ICE restart: new credentials both ways (from the new offer and answer); DTLS and SRTP go on.
    /// The next tick checks with them at once.
    package func restartICE(local: ICELiteAgent.Credentials, remote: ICELiteAgent.Credentials) {
        guard let key = HMAC(digest: .sha1, key: Array(remote.password.utf8)) else { return }
        self.local = local
        self.remote = remote
        self.key = key
        lastCheckNanos = nil
    }

    /// Timer work: ICE checks, consent, DTLS retransmissions. Call every 10-20 ms.
    package func tick(nowNanos: Int64) {
        if case .failed = state { return }
        let interval = state == .checking ? Self.checkIntervalNanos : Self.consentIntervalNanos
        if lastCheckNanos.map({ nowNanos - $0 >= interval }) ?? true {
            lastCheckNanos = nowNanos
            let request = STUNMessage(messageClass: .request, transactionID: (0..<12).map { _ in UInt8.random(in: 0...255) }, attributes: [
                STUNMessage.usernameAttribute("\(remote.ufrag):\(local.ufrag)"),
                STUNMessage.u32Attribute(STUNAttributeType.priority, 1_853_824_767),
                STUNMessage.u64Attribute(STUNAttributeType.iceControlling, tieBreaker),
                .init(type: STUNAttributeType.useCandidate, value: []),
            ]).serialized(integrity: key, fingerprint: true)
            request.withUnsafeBytes { onSend?($0) }
        }
        if let t = dtls.nextTimeoutNanos, t <= nowNanos {
            dtls.handleTimeout(nowNanos: nowNanos)
            flush(nowNanos: nowNanos)
        }
    }

    /// One datagram from the server (`datagram` may be decrypted in place).
    package func handleDatagram(_ datagram: UnsafeMutableRawBufferPointer, nowNanos: Int64) {
        let raw = UnsafeRawBufferPointer(datagram)
        switch PacketClass(classifying: raw) {
        case .stun:
            guard let m = try? STUNMessage(parsing: raw) else { return }
            // A full agent answers the server's checks (it sends one to verify a new address).
            if m.messageClass == .request, let localKey = HMAC(digest: .sha1, key: Array(local.password.utf8)), m.checkIntegrity(raw, key: localKey) {
                let response = STUNMessage(messageClass: .successResponse, transactionID: m.transactionID,
                                           attributes: [STUNMessage.xorMappedAddressAttribute(serverAddress, transactionID: m.transactionID)])
                response.serialized(integrity: localKey).withUnsafeBytes { onSend?($0) }
                return
            }
            guard m.messageClass == .successResponse, m.checkIntegrity(raw, key: key) else { return }
            if state == .checking {
                state = .handshaking
                dtls.start(nowNanos: nowNanos)
                flush(nowNanos: nowNanos)
            }
        case .dtls:
            dtls.handleDatagram(raw, nowNanos: nowNanos)
            flush(nowNanos: nowNanos)
        case .rtp:
            guard let srtpIn, let base = datagram.baseAddress, case .success(let length) = srtpIn.unprotectRTP(base, length: datagram.count) else { return }
            let plain = UnsafeMutableRawBufferPointer(rebasing: datagram[0..<length])
            guard let header = try? RTPHeader(parsing: UnsafeRawBufferPointer(plain)) else { return }
            rtpPacketsIn += 1
            onRTP?(plain, header)
        case .rtcp:
            guard let srtpIn, let base = datagram.baseAddress, case .success(let length) = srtpIn.unprotectRTCP(base, length: datagram.count),
                  let packets = try? RTCPCompound.parse(UnsafeRawBufferPointer(rebasing: datagram[0..<length])) else { return }
            onRTCP?(packets)
        case .other:
            return
        }
    }

    private func flush(nowNanos: Int64) {
        while let d = dtls.pollDatagram() { d.withUnsafeBytes { onSend?($0) } }
        while let event = dtls.pollEvent() {
            switch event {
            case .connected(let l, let r):
                do {
                    srtpOut = try SRTPSession(keys: l, direction: .outbound)
                    srtpIn = try SRTPSession(keys: r, direction: .inbound)
                    state = .connected
                } catch {
                    state = .failed("SRTP setup failed: \(error)")
                }
            case .failed(let why): state = .failed(why)
            case .closed: state = .failed("closed")
            }
        }
    }

    /// Protects and sends one RTP packet. - Returns: false when not connected.
    @discardableResult
    package func sendRTP(_ packet: UnsafeRawBufferPointer) -> Bool { send(packet, rtcp: false) }

    @discardableResult
    package func sendRTCP(_ packets: [RTCPPacket]) -> Bool {
        RTCPCompound.serialize(packets).withUnsafeBytes { send($0, rtcp: true) }
    }

    /// Protects and sends bytes as one RTCP compound, as they are (fault drills craft malformed ones).
    @discardableResult
    package func sendRawRTCP(_ packet: UnsafeRawBufferPointer) -> Bool { send(packet, rtcp: true) }

    private func send(_ packet: UnsafeRawBufferPointer, rtcp: Bool) -> Bool {
        guard state == .connected, let srtpOut, packet.count <= 1500 else { return false }
        let ok: Bool = buffer.withUnsafeMutableBytes { b in
            guard let base = b.baseAddress else { return false }
            UnsafeMutableRawBufferPointer(rebasing: b[0..<packet.count]).copyMemory(from: packet)
            guard let n = try? (rtcp ? srtpOut.protectRTCP(base, length: packet.count, capacity: b.count)
                                     : srtpOut.protectRTP(base, length: packet.count, capacity: b.count)) else { return false }
            onSend?(UnsafeRawBufferPointer(rebasing: b[0..<n]))
            return true
        }
        if ok, !rtcp { rtpPacketsOut += 1 }
        return ok
    }
}

/// SDP a client writes: a publisher offer and answers to subscriber offers, with the codecs and
/// header extensions browsers use (Opus 111, VP8 96 + RTX 97, mid and transport-cc).
package enum ClientSDP {
    package struct Stream: Sendable {
        package var kind: MediaKind
        package var ssrc: UInt32
        package var rtxSSRC: UInt32?
        /// For video: VP8 (default) or H.264.
        package var codec: ForwardedCodec
        /// Simulcast layers by RID, lowest first (Chromium's `q`, `h`, `f`); empty: one stream. With
        /// RIDs the m-line carries no SSRCs (the server learns them from the RID header extension).
        package var rids: [String]
        package init(kind: MediaKind, ssrc: UInt32, rtxSSRC: UInt32? = nil, codec: ForwardedCodec? = nil, rids: [String] = []) {
            self.kind = kind
            self.ssrc = ssrc
            self.rtxSSRC = rtxSSRC
            self.codec = codec ?? (kind == .audio ? .opus : .vp8)
            self.rids = rids
        }
    }

    /// The constrained-baseline H.264 a browser offers first.
    package static let h264 = ForwardedCodec.h264(fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f")

    package static let midExtensionID: UInt8 = 1
    package static let transportCCExtensionID: UInt8 = 3
    /// Simulcast: `sdes:rtp-stream-id` and `sdes:repaired-rtp-stream-id` (on RTX).
    package static let ridExtensionID: UInt8 = 4
    package static let repairedRIDExtensionID: UInt8 = 5

    static func transportLines(ice: ICELiteAgent.Credentials, fingerprint: String, setup: DTLSSetup) -> [String] {
        ["c=IN IP4 0.0.0.0", "a=ice-ufrag:\(ice.ufrag)", "a=ice-pwd:\(ice.password)", "a=fingerprint:sha-256 \(fingerprint)",
         "a=setup:\(setup.rawValue)", "a=rtcp-mux", "a=rtcp-rsize"]
    }

    static func codecLines(_ codec: ForwardedCodec) -> (formats: String, lines: [String]) {
        let pt = codec.offerPayloadType
        switch codec {
        case .opus:
            return ("111", ["a=rtpmap:111 opus/48000/2", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtcp-fb:111 transport-cc"])
        case .vp8, .h264:
            let rtx = codec.offerRTXPayloadType ?? 97
            var lines = ["a=rtpmap:\(pt) \(codec.name)/90000"]
            if let fmtp = codec.fmtp { lines.append("a=fmtp:\(pt) \(fmtp)") }
            lines += ["a=rtcp-fb:\(pt) nack", "a=rtcp-fb:\(pt) nack pli", "a=rtcp-fb:\(pt) ccm fir", "a=rtcp-fb:\(pt) transport-cc",
                      "a=rtpmap:\(rtx) rtx/90000", "a=fmtp:\(rtx) apt=\(pt)"]
            return ("\(pt) \(rtx)", lines)
        }
    }

    /// A publisher offer sending `streams`, one m-line each (mids 0, 1, ...).
    package static func publisherOffer(streams: [Stream], ice: ICELiteAgent.Credentials, fingerprint: String) -> String {
        var lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0",
                     "a=group:BUNDLE " + streams.indices.map(String.init).joined(separator: " "), "a=msid-semantic: WMS client"]
        for (i, s) in streams.enumerated() {
            let codecs = codecLines(s.codec)
            lines.append("m=\(s.kind.rawValue) 9 UDP/TLS/RTP/SAVPF \(codecs.formats)")
            lines += transportLines(ice: ice, fingerprint: fingerprint, setup: .actpass)
            lines += ["a=mid:\(i)", "a=sendonly", "a=msid:client track\(i)",
                      "a=extmap:\(midExtensionID) \(RTPExtensionURI.sdesMid)", "a=extmap:\(transportCCExtensionID) \(RTPExtensionURI.transportWideCC)"]
            if !s.rids.isEmpty {
                lines += ["a=extmap:\(ridExtensionID) \(RTPExtensionURI.rtpStreamID)",
                          "a=extmap:\(repairedRIDExtensionID) \(RTPExtensionURI.repairedRTPStreamID)"]
            }
            lines += codecs.lines
            if !s.rids.isEmpty {
                // As Chromium: one a=rid per layer and a=simulcast, no SSRCs.
                lines += s.rids.map { "a=rid:\($0) send" }
                lines.append("a=simulcast:send " + s.rids.joined(separator: ";"))
                continue
            }
            if let rtx = s.rtxSSRC { lines.append("a=ssrc-group:FID \(s.ssrc) \(rtx)") }
            lines.append("a=ssrc:\(s.ssrc) cname:client")
            if let rtx = s.rtxSSRC { lines.append("a=ssrc:\(rtx) cname:client") }
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// An answer accepting every active m-line of a subscriber offer (receive only).
    /// - Parameter transportCC: negotiate transport-cc (a browser does); without it the answer
    ///   offers `goog-remb` instead, for a receiver that reports its estimate with REMB.
    package static func subscriberAnswer(offer: SessionDescription, ice: ICELiteAgent.Credentials, fingerprint: String,
                                        transportCC: Bool = true) -> String {
        var lines = ["v=0", "o=- 2 1 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE " + offer.bundleGroup.joined(separator: " ")]
        for (i, m) in offer.media.enumerated() {
            // The codec the offer carries for this m-line (we support what the SFU forwards).
            let codec = RoomSDP.acceptedCodec(m).map(RoomSDP.forwarded) ?? (m.kind == "audio" ? .opus : .vp8)
            let codecs = codecLines(codec)
            lines.append("m=\(m.kind) 9 UDP/TLS/RTP/SAVPF \(codecs.formats)")
            lines += transportLines(ice: ice, fingerprint: fingerprint, setup: .active)
            lines += ["a=mid:\(m.mid ?? String(i))", "a=" + (m.direction == .inactive ? MediaDirection.inactive : .recvonly).rawValue]
            if transportCC {
                lines.append("a=extmap:\(RoomSDP.subscriberTransportCCID) \(RTPExtensionURI.transportWideCC)")
                lines += codecs.lines
            } else {
                lines += codecs.lines.map { $0.hasSuffix(" transport-cc") ? $0.dropLast(" transport-cc".count) + " goog-remb" : $0 }
            }
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }
}
