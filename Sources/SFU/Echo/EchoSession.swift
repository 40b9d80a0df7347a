import DTLS
import RTP

/// The echo endpoint (Janus' EchoTest): what a peer sends comes back to it, so a client can check
/// ICE, DTLS-SRTP and media end to end without a room. Audio and video are sent back on SSRCs the
/// answer declares; RTCP is translated so that keyframe requests, NACKs and sender reports reach
/// the right streams. Sans-IO: driven by its transport and the caller's clock.
package final class EchoSession: WebRTCTransportDelegate {
    package enum Error: Swift.Error, Equatable, CustomStringConvertible {
        case badOffer(String)
        package var description: String {
            switch self { case .badOffer(let why): "bad offer: \(why)" }
        }
    }

    struct Stream {
        var kind: String
        var payloadType: UInt8
        var localSSRC: UInt32
        var remoteSSRC: UInt32?
    }

    package let transport: WebRTCTransport
    package let answer: SessionDescription
    package weak var sink: DatagramSink?
    package var onClose: ((String) -> Void)?
    package var onConnect: (() -> Void)?
    /// Echo streams by payload type (the offer's PTs are kept in the answer).
    var streams: [UInt8: Stream] = [:]
    var pliSent = false

    /// Parses `offer`, then as ``init(offer:dtlsContext:candidates:nowNanos:id:)-(SessionDescription,_,_,_,_)``.
    package convenience init(offer text: String, dtlsContext: DTLSContext, candidates: [HostCandidate], nowNanos: Int64, id: String) throws {
        let sdp: SessionDescription
        do {
            sdp = try SessionDescription(parsing: text)
        } catch {
            throw Error.badOffer("SDP does not parse: \(error)")
        }
        try self.init(offer: sdp, dtlsContext: dtlsContext, candidates: candidates, nowNanos: nowNanos, id: id)
    }

    /// Builds the transport and the answer for `offer` (parsed by the caller, off the worker's loop).
    package init(offer sdp: SessionDescription, dtlsContext: DTLSContext, candidates: [HostCandidate], nowNanos: Int64, id: String) throws {
        let first = sdp.media.first
        guard let ufrag = sdp.value("ice-ufrag", in: first), let pwd = sdp.value("ice-pwd", in: first) else {
            throw Error.badOffer("no ICE credentials")
        }
        guard let fpValue = sdp.value("fingerprint", in: first), let fingerprint = CertificateFingerprint(sdpValue: fpValue) else {
            throw Error.badOffer("no usable a=fingerprint")
        }
        // We take the role the offer leaves us: passive (DTLS server) for actpass/active offers.
        let setup = DTLSSetup(sdpValue: sdp.value("setup", in: first)).answer
        let role = setup.role
        let local = ICELiteAgent.Credentials.random()
        transport = try WebRTCTransport(id: id, iceCredentials: local, remoteICE: .init(ufrag: ufrag, password: pwd),
                                        dtlsContext: dtlsContext, dtlsRole: role, remoteFingerprint: fingerprint, nowNanos: nowNanos)
        var streams: [UInt8: Stream] = [:]
        answer = try Self.makeAnswer(offer: sdp, ice: local, fingerprint: dtlsContext.certificate.sha256Fingerprint,
                                     setup: setup, candidates: candidates, streams: &streams)
        self.streams = streams
        transport.delegate = self
    }

    static func makeAnswer(offer: SessionDescription, ice: ICELiteAgent.Credentials, fingerprint: String, setup: DTLSSetup,
                           candidates: [HostCandidate], streams: inout [UInt8: Stream]) throws -> SessionDescription {
        var answer = SessionDescription()
        answer.sessionLines = ["v=0", "o=- \(UInt64.random(in: 1...UInt64(Int64.max))) 2 IN IP4 127.0.0.1", "s=sfu-echo", "t=0 0"]
        var accepted: [String] = []
        for m in offer.media {
            var section = SessionDescription.Media(kind: m.kind, port: 9, proto: m.proto, formats: [])
            let mid = m.mid ?? String(answer.media.count)
            let codec: SessionDescription.Codec?
            switch m.kind {
            case "audio": codec = m.codecs.first { $0.name.lowercased() == "opus" && $0.clockRate == 48000 }
            case "video": codec = m.codecs.first { $0.name.lowercased() == "vp8" && $0.clockRate == 90000 }
            default: codec = nil
            }
            // One transport for everything: sections must multiplex RTCP (RFC 5761).
            let muxed = m.has("rtcp-mux")
            guard let codec, m.port != 0, m.proto.contains("SAVPF"), muxed else {
                // Rejected: port 0, echoing the formats (RFC 8829 5.3.1).
                section.port = 0
                section.formats = m.formats
                section.attributes = [.init("mid", mid), MediaDirection.inactive.attribute]
                answer.media.append(section)
                continue
            }
            accepted.append(mid)
            let ssrc = UInt32.random(in: 0x1000_0000...0x7FFF_FFFF)
            streams[codec.payloadType] = Stream(kind: m.kind, payloadType: codec.payloadType, localSSRC: ssrc, remoteSSRC: nil)
            section.formats = [String(codec.payloadType)]
            section.otherLines = ["c=IN IP4 0.0.0.0"]
            var a: [SessionDescription.Attribute] = [
                .init("mid", mid), .init("ice-ufrag", ice.ufrag), .init("ice-pwd", ice.password),
                .init("fingerprint", "sha-256 " + fingerprint), .init("setup", setup.rawValue), .init("rtcp-mux"),
            ]
            if m.has("rtcp-rsize") { a.append(.init("rtcp-rsize")) }
            a.append(m.direction.answered.attribute)
            for ext in m.extensions where ext.uri == RTPExtensionURI.sdesMid {
                a.append(.init("extmap", "\(ext.id) \(ext.uri)"))
            }
            let channels = codec.channels > 1 ? "/\(codec.channels)" : ""
            a.append(.init("rtpmap", "\(codec.payloadType) \(codec.name)/\(codec.clockRate)\(channels)"))
            if let fmtp = codec.fmtp { a.append(.init("fmtp", "\(codec.payloadType) \(fmtp)")) }
            if m.kind == "video" {
                for fb in ["nack", "nack pli", "ccm fir"] where codec.feedback.contains(fb) {
                    a.append(.init("rtcp-fb", "\(codec.payloadType) \(fb)"))
                }
            }
            a.append(.init("msid", "sfu-echo echo-\(mid)"))
            a.append(.init("ssrc", "\(ssrc) cname:sfu-echo"))
            a.append(.init("ssrc", "\(ssrc) msid:sfu-echo echo-\(mid)"))
            for (i, c) in candidates.enumerated() {
                let host = c.announcedHost ?? c.address.host
                a.append(.init("candidate", "\(i + 1) 1 udp \(2_130_706_431 - i) \(host) \(c.address.port) typ host"))
            }
            a.append(.init("end-of-candidates"))
            section.attributes = a
            answer.media.append(section)
        }
        guard !accepted.isEmpty else { throw Error.badOffer("no Opus audio or VP8 video section with rtcp-mux to answer") }
        // Everything runs over one 5-tuple: several sections need the offer's BUNDLE group, and the
        // answer may only keep a group that was offered (RFC 8843).
        let offeredBundle = offer.bundleGroup
        if accepted.count > 1, !accepted.allSatisfy(offeredBundle.contains) {
            throw Error.badOffer("several media sections need a=group:BUNDLE (the server uses one transport per peer)")
        }
        answer.sessionAttributes = [.init("ice-lite")]
        if !offeredBundle.isEmpty { answer.sessionAttributes.append(.init("group", "BUNDLE " + accepted.joined(separator: " "))) }
        answer.sessionAttributes.append(.init("msid-semantic", " WMS sfu-echo"))
        return answer
    }

    // MARK: WebRTCTransportDelegate

    package func transport(_ transport: WebRTCTransport, send datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        sink?.send(datagram, to: address)
    }

    package func transportDidConnect(_ transport: WebRTCTransport) { onConnect?() }

    package func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        guard var stream = streams[header.payloadType] else { return }
        if stream.remoteSSRC != header.ssrc {
            stream.remoteSSRC = header.ssrc
            streams[header.payloadType] = stream
            // A new (or restarted) source: ask it for a keyframe so our echo decodes from the start.
            if stream.kind == "video" {
                transport.sendRTCP([.pli(PictureLossIndication(senderSSRC: stream.localSSRC, mediaSSRC: header.ssrc))])
            }
        }
        RTPRewrite.setSSRC(stream.localSSRC, in: packet)
        transport.sendRTP(UnsafeRawBufferPointer(packet))
    }

    package func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64) {
        var out: [RTCPPacket] = []
        func remote(forLocal ssrc: UInt32) -> (UInt32, UInt32)? {
            streams.values.first { $0.localSSRC == ssrc }.flatMap { s in s.remoteSSRC.map { (s.localSSRC, $0) } }
        }
        func local(forRemote ssrc: UInt32) -> UInt32? { streams.values.first { $0.remoteSSRC == ssrc }?.localSSRC }
        for packet in packets {
            switch packet {
            case .pli(let p):
                if let (l, r) = remote(forLocal: p.mediaSSRC) { out.append(.pli(PictureLossIndication(senderSSRC: l, mediaSSRC: r))) }
            case .fir(let p):
                for e in p.entries {
                    if let (l, r) = remote(forLocal: e.ssrc) {
                        out.append(.fir(FullIntraRequest(senderSSRC: l, entries: [.init(ssrc: r, sequenceNumber: e.sequenceNumber)])))
                    }
                }
            case .nack(let p):
                if let (l, r) = remote(forLocal: p.mediaSSRC) { out.append(.nack(GenericNACK(senderSSRC: l, mediaSSRC: r, pairs: p.pairs))) }
            case .senderReport(let sr):
                // Timestamps are echoed unchanged, so the peer's own NTP/RTP mapping holds for our SSRC.
                if let l = local(forRemote: sr.ssrc) {
                    out.append(.senderReport(SenderReport(ssrc: l, ntpTime: sr.ntpTime, rtpTime: sr.rtpTime,
                                                          packetCount: sr.packetCount, octetCount: sr.octetCount)))
                    out.append(.sourceDescription(SourceDescription(ssrc: l, cname: "sfu-echo")))
                }
            default:
                break
            }
        }
        if !out.isEmpty { transport.sendRTCP(out) }
    }

    package func transportDidClose(_ transport: WebRTCTransport, reason: String) {
        onClose?(reason)
    }
}

extension EchoSession: WorkerSession {
    package func workerDidRemove() {}
}
