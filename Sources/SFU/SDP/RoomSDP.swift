import DTLS
import RTP

/// Our side of ICE and DTLS as it goes into every SDP we write.
package struct LocalTransportParameters: Sendable, Equatable {
    package var ice: ICELiteAgent.Credentials
    package var fingerprint: String
    package var candidates: [HostCandidate]

    package init(ice: ICELiteAgent.Credentials, fingerprint: String, candidates: [HostCandidate]) {
        self.ice = ice
        self.fingerprint = fingerprint
        self.candidates = candidates
    }

    func attributes(setup: DTLSSetup) -> [SessionDescription.Attribute] {
        var a: [SessionDescription.Attribute] = [
            .init("ice-ufrag", ice.ufrag), .init("ice-pwd", ice.password),
            .init("fingerprint", "sha-256 " + fingerprint), .init("setup", setup.rawValue),
        ]
        for value in HostCandidate.attributeValues(candidates) { a.append(.init("candidate", value)) }
        a.append(.init("end-of-candidates"))
        return a
    }
}

/// The remote side of ICE and DTLS, read from an offer or answer.
package struct RemoteTransportParameters: Sendable, Equatable {
    package var ice: ICELiteAgent.Credentials
    package var fingerprint: CertificateFingerprint
    /// actpass, active or passive.
    package var setup: DTLSSetup

    /// Reads the first bundled section's (or the session's) ICE and DTLS attributes.
    package init(_ sdp: SessionDescription) throws(RoomSDPError) {
        let first = sdp.media.first { $0.port != 0 } ?? sdp.media.first
        guard let ufrag = sdp.value("ice-ufrag", in: first), let pwd = sdp.value("ice-pwd", in: first), !ufrag.isEmpty, !pwd.isEmpty else {
            throw .bad("no ICE credentials (a=ice-ufrag/a=ice-pwd)")
        }
        guard let fp = sdp.value("fingerprint", in: first).flatMap(CertificateFingerprint.init(sdpValue:)) else {
            throw .bad("no usable a=fingerprint")
        }
        ice = .init(ufrag: ufrag, password: pwd)
        fingerprint = fp
        setup = DTLSSetup(sdpValue: sdp.value("setup", in: first))
    }
}

package enum RoomSDPError: Error, Equatable, Sendable, CustomStringConvertible {
    case bad(String)
    package var description: String {
        switch self { case .bad(let why): why }
    }
}

/// A codec the SFU forwards, with what our SDP says about it.
package enum ForwardedCodec: Sendable, Equatable {
    case opus
    case vp8
    /// H.264 passed through as the publisher sends it; `fmtp` is the publisher's (profile, packetization mode).
    case h264(fmtp: String)

    package var kind: MediaKind { self == .opus ? .audio : .video }
    package var name: String {
        switch self {
        case .opus: "opus"
        case .vp8: "VP8"
        case .h264: "H264"
        }
    }
    package var clockRate: Int { self == .opus ? 48000 : 90000 }
    /// The payload types of our subscriber offers.
    package var offerPayloadType: UInt8 {
        switch self {
        case .opus: 111
        case .vp8: 96
        case .h264: 102
        }
    }
    package var offerRTXPayloadType: UInt8? {
        switch self {
        case .opus: nil
        case .vp8: 97
        case .h264: 103
        }
    }
    package var fmtp: String? {
        switch self {
        case .opus: "minptime=10;useinbandfec=1"
        case .vp8: nil
        case .h264(let fmtp): fmtp
        }
    }
}

/// Header extension ids negotiated on a publisher transport (one set: BUNDLE shares them).
package struct ExtensionIDs: Sendable, Equatable {
    package var mid: UInt8?
    package var transportCC: UInt8?
    package var absSendTime: UInt8?
    package var audioLevel: UInt8?
    /// rtp-stream-id and repaired-rtp-stream-id (RFC 8852): which simulcast encoding a packet is.
    package var rid: UInt8?
    package var repairedRid: UInt8?
    package init() {}
}

/// One media section of a publisher offer, as accepted in our answer.
package struct PublishedSection: Sendable, Equatable {
    package var mid: String
    package var kind: MediaKind
    package var codec: ForwardedCodec
    package var payloadType: UInt8
    package var clockRate: Int
    package var rtxPayloadType: UInt8?
    package var ssrc: UInt32?
    package var rtxSSRC: UInt32?
    /// Simulcast encodings, lowest first: by rid (RFC 8853, SSRCs learned from the rid header
    /// extensions) or by `a=ssrc-group:SIM` (SSRCs given, rid nil). Empty without simulcast.
    package var encodings: [SimulcastEncoding] = []
    /// The section sends media to us (sendonly/sendrecv, not rejected).
    package var sending: Bool
    /// The transport-cc feedback was negotiated for this section.
    package var transportCC: Bool
}

/// One simulcast encoding of a published section.
package struct SimulcastEncoding: Sendable, Equatable {
    package var rid: String?
    package var ssrc: UInt32?
    package var rtxSSRC: UInt32?
    package init(rid: String?, ssrc: UInt32? = nil, rtxSSRC: UInt32? = nil) {
        self.rid = rid
        self.ssrc = ssrc
        self.rtxSSRC = rtxSSRC
    }
}

/// Offer/answer for the two peer connections of a room participant (docs/SIGNALING.md).
package enum RoomSDP {
    /// The codecs we forward: Opus for audio; VP8 for video, else H.264 (packetization mode 1,
    /// constrained baseline preferred), passed through.
    package static func acceptedCodec(_ m: SessionDescription.Media) -> SessionDescription.Codec? {
        switch m.kind {
        case "audio":
            return m.codecs.first { $0.name.lowercased() == "opus" && $0.clockRate == 48000 }
        case "video":
            if let vp8 = m.codecs.first(where: { $0.name.lowercased() == "vp8" && $0.clockRate == 90000 }) { return vp8 }
            let h264 = m.codecs.filter { $0.name.lowercased() == "h264" && $0.clockRate == 90000 && ($0.fmtp ?? "").contains("packetization-mode=1") }
            return h264.first { ($0.fmtp ?? "").contains("profile-level-id=42e0") } ?? h264.first
        default:
            return nil
        }
    }

    package static func forwarded(_ codec: SessionDescription.Codec) -> ForwardedCodec {
        switch codec.name.lowercased() {
        case "opus": .opus
        case "h264": .h264(fmtp: codec.fmtp ?? "packetization-mode=1")
        default: .vp8
        }
    }

    static let keptExtensions: Set<String> = [RTPExtensionURI.sdesMid, RTPExtensionURI.absSendTime,
                                              RTPExtensionURI.transportWideCC, RTPExtensionURI.audioLevel,
                                              RTPExtensionURI.rtpStreamID, RTPExtensionURI.repairedRTPStreamID]

    /// At most this many simulcast encodings are received (q, h, f).
    package static let maxEncodings = 3

    /// The simulcast encodings a video section offers, lowest resolution first, and the answer's
    /// `a=rid`/`a=simulcast` lines. Chromium lists rids in the order of its `sendEncodings`
    /// (conventionally lowest first, q;h;f); paused (`~`) alternatives are skipped.
    static func simulcastEncodings(_ m: SessionDescription.Media) -> (encodings: [SimulcastEncoding], answer: [SessionDescription.Attribute]) {
        if let line = m.value("simulcast") {
            // "send q;h;f" (RFC 8853 5.1); alternatives "a,b" take the first.
            let parts = line.split(separator: " ")
            guard parts.count >= 2, parts[0] == "send" else { return ([], []) }
            let declared = Set(m.values("rid").compactMap { v -> String? in
                let f = v.split(separator: " ")
                return f.count >= 2 && f[1] == "send" ? String(f[0]) : nil
            })
            var rids: [String] = []
            for entry in parts[1].split(separator: ";") {
                guard let first = entry.split(separator: ",").first else { continue }
                let rid = first.hasPrefix("~") ? String(first.dropFirst()) : String(first)
                guard !first.hasPrefix("~"), declared.contains(rid), rid.count <= 16,
                      rid.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }),
                      !rids.contains(rid) else { continue }
                rids.append(rid)
            }
            rids = Array(rids.prefix(maxEncodings))
            guard rids.count >= 2 else { return ([], []) }
            var answer = rids.map { SessionDescription.Attribute("rid", "\($0) recv") }
            answer.append(.init("simulcast", "recv " + rids.joined(separator: ";")))
            return (rids.map { SimulcastEncoding(rid: $0) }, answer)
        }
        // Plan-B style SSRC groups: a=ssrc-group:SIM low mid high, with FID groups for RTX.
        guard let sim = m.values("ssrc-group").first(where: { $0.hasPrefix("SIM ") }) else { return ([], []) }
        let ssrcs = sim.split(separator: " ").dropFirst().compactMap { UInt32($0) }
        guard ssrcs.count >= 2 else { return ([], []) }
        var rtx: [UInt32: UInt32] = [:]
        for g in m.values("ssrc-group") where g.hasPrefix("FID ") {
            let parts = g.split(separator: " ").dropFirst().compactMap { UInt32($0) }
            if parts.count == 2 { rtx[parts[0]] = parts[1] }
        }
        return (ssrcs.prefix(maxEncodings).map { SimulcastEncoding(rid: nil, ssrc: $0, rtxSSRC: rtx[$0]) }, [])
    }

    /// Answers a publisher offer. `canPublish` false refuses sections that send.
    /// - Returns: the answer, the sections and the extension ids.
    package static func answerPublisher(offer: SessionDescription, local: LocalTransportParameters, setup: DTLSSetup,
                                       sessionVersion: Int, sessionID: UInt64) throws(RoomSDPError)
        -> (answer: SessionDescription, sections: [PublishedSection], extensions: ExtensionIDs) {
        var answer = SessionDescription()
        answer.sessionLines = ["v=0", "o=- \(sessionID) \(sessionVersion) IN IP4 127.0.0.1", "s=sfu", "t=0 0"]
        var accepted: [String] = []
        var sections: [PublishedSection] = []
        var ids = ExtensionIDs()
        let bundle = offer.bundleGroup
        for (index, m) in offer.media.enumerated() {
            let mid = m.mid ?? String(index)
            var section = SessionDescription.Media(kind: m.kind, port: 9, proto: m.proto, formats: [])
            // Port 0 rejects a section, except a bundle-only one (Firefox's max-bundle offers, RFC 8843 6).
            let live = m.port != 0 || (m.has("bundle-only") && bundle.contains(mid))
            guard let codec = acceptedCodec(m), live, m.proto.contains("SAVPF"), m.has("rtcp-mux") || m.has("bundle-only") else {
                section.port = 0
                section.formats = m.formats
                section.attributes = [.init("mid", mid), MediaDirection.inactive.attribute]
                answer.media.append(section)
                continue
            }
            accepted.append(mid)
            let rtx = m.kind == "video" ? m.codecs.first { $0.name.lowercased() == "rtx" && $0.fmtp?.contains("apt=\(codec.payloadType)") == true } : nil
            section.formats = [String(codec.payloadType)] + (rtx.map { [String($0.payloadType)] } ?? [])
            section.otherLines = ["c=IN IP4 0.0.0.0"]
            var a: [SessionDescription.Attribute] = [.init("mid", mid)]
            a += local.attributes(setup: setup)
            a.append(.init("rtcp-mux"))
            if m.has("rtcp-rsize") { a.append(.init("rtcp-rsize")) }
            // We only receive on a publisher's connection.
            let sending = m.direction.sends
            a.append((sending ? MediaDirection.recvonly : .inactive).attribute)
            var twcc = false
            for ext in m.extensions where keptExtensions.contains(ext.uri) {
                if ext.uri == RTPExtensionURI.audioLevel && m.kind != "audio" { continue }
                a.append(.init("extmap", "\(ext.id) \(ext.uri)"))
                switch ext.uri {
                case RTPExtensionURI.sdesMid: ids.mid = ids.mid ?? ext.id
                case RTPExtensionURI.transportWideCC: ids.transportCC = ids.transportCC ?? ext.id; twcc = true
                case RTPExtensionURI.absSendTime: ids.absSendTime = ids.absSendTime ?? ext.id
                case RTPExtensionURI.rtpStreamID: ids.rid = ids.rid ?? ext.id
                case RTPExtensionURI.repairedRTPStreamID: ids.repairedRid = ids.repairedRid ?? ext.id
                default: ids.audioLevel = ids.audioLevel ?? ext.id
                }
            }
            let channels = codec.channels > 1 ? "/\(codec.channels)" : ""
            a.append(.init("rtpmap", "\(codec.payloadType) \(codec.name)/\(codec.clockRate)\(channels)"))
            if let fmtp = codec.fmtp { a.append(.init("fmtp", "\(codec.payloadType) \(fmtp)")) }
            var feedback = m.kind == "video" ? ["nack", "nack pli", "ccm fir"] : []
            if twcc { feedback.append("transport-cc") }
            for fb in feedback where codec.feedback.contains(fb) {
                a.append(.init("rtcp-fb", "\(codec.payloadType) \(fb)"))
            }
            if let rtx {
                a.append(.init("rtpmap", "\(rtx.payloadType) rtx/90000"))
                a.append(.init("fmtp", "\(rtx.payloadType) apt=\(codec.payloadType)"))
            }
            let simulcast: (encodings: [SimulcastEncoding], answer: [SessionDescription.Attribute]) = m.kind == "video" && sending ? simulcastEncodings(m) : ([], [])
            a += simulcast.answer
            section.attributes = a
            answer.media.append(section)
            // SSRCs: the first a=ssrc is the media SSRC; FID groups name the RTX one.
            var ssrc = m.ssrcs.first
            var rtxSSRC: UInt32?
            for g in m.values("ssrc-group") where g.hasPrefix("FID ") {
                let parts = g.split(separator: " ").dropFirst().compactMap { UInt32($0) }
                if parts.count == 2 { ssrc = parts[0]; rtxSSRC = parts[1] }
            }
            if m.has("simulcast") || m.has("rid") { ssrc = nil; rtxSSRC = nil }  // learned from the rid/mid extensions
            if let first = simulcast.encodings.first, first.ssrc != nil { ssrc = first.ssrc; rtxSSRC = first.rtxSSRC }
            sections.append(PublishedSection(mid: mid, kind: m.kind == "audio" ? .audio : .video, codec: forwarded(codec), payloadType: codec.payloadType,
                                             clockRate: codec.clockRate, rtxPayloadType: rtx?.payloadType, ssrc: ssrc, rtxSSRC: rtxSSRC,
                                             encodings: simulcast.encodings, sending: sending, transportCC: twcc))
        }
        guard !accepted.isEmpty else { throw .bad("no Opus audio or VP8 video section with rtcp-mux to answer") }
        if accepted.count > 1, !accepted.allSatisfy(bundle.contains) {
            throw .bad("several media sections need a=group:BUNDLE (the server uses one transport per peer connection)")
        }
        answer.sessionAttributes = [.init("ice-lite")]
        if !bundle.isEmpty { answer.sessionAttributes.append(.init("group", "BUNDLE " + accepted.joined(separator: " "))) }
        answer.sessionAttributes.append(.init("msid-semantic", " WMS"))
        return (answer, sections, ids)
    }

    /// One m-line of a subscriber offer.
    package struct SubscriberSlot: Sendable, Equatable {
        package var mid: String
        package var codec: ForwardedCodec
        /// nil: the slot's track went away (inactive m-line).
        package var track: SubscribedTrack?
        package var kind: MediaKind { codec.kind }
    }

    package struct SubscribedTrack: Sendable, Equatable {
        package var peerID: String
        package var trackID: String
        package var ssrc: UInt32
        package var rtxSSRC: UInt32?
        package var cname: String
    }

    /// The transport-cc extension id in our subscriber offers.
    package static let subscriberTransportCCID: UInt8 = 3

    /// A subscriber offer with one m-line per slot.
    package static func subscriberOffer(slots: [SubscriberSlot], local: LocalTransportParameters, sessionVersion: Int, sessionID: UInt64) -> SessionDescription {
        var offer = SessionDescription()
        offer.sessionLines = ["v=0", "o=- \(sessionID) \(sessionVersion) IN IP4 127.0.0.1", "s=sfu", "t=0 0"]
        offer.sessionAttributes = [.init("ice-lite"), .init("group", "BUNDLE " + slots.map(\.mid).joined(separator: " ")),
                                   .init("msid-semantic", " WMS *")]
        for slot in slots {
            let codec = slot.codec
            let pt = codec.offerPayloadType
            let formats = [String(pt)] + (codec.offerRTXPayloadType.map { [String($0)] } ?? [])
            var m = SessionDescription.Media(kind: slot.kind.rawValue, port: 9, proto: "UDP/TLS/RTP/SAVPF", formats: formats)
            m.otherLines = ["c=IN IP4 0.0.0.0"]
            var a: [SessionDescription.Attribute] = [.init("mid", slot.mid)]
            a += local.attributes(setup: .actpass)
            a += [.init("rtcp-mux"), .init("rtcp-rsize"),
                  .init("extmap", "\(subscriberTransportCCID) \(RTPExtensionURI.transportWideCC)")]
            let channels = codec == .opus ? "/2" : ""
            a.append(.init("rtpmap", "\(pt) \(codec.name)/\(codec.clockRate)\(channels)"))
            if let fmtp = codec.fmtp { a.append(.init("fmtp", "\(pt) \(fmtp)")) }
            let feedback = codec.kind == .video ? ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"] : ["transport-cc"]
            for fb in feedback { a.append(.init("rtcp-fb", "\(pt) \(fb)")) }
            if let rtx = codec.offerRTXPayloadType {
                a += [.init("rtpmap", "\(rtx) rtx/90000"), .init("fmtp", "\(rtx) apt=\(pt)")]
            }
            if let t = slot.track {
                a.append(MediaDirection.sendonly.attribute)
                a.append(.init("msid", "\(t.peerID) \(t.trackID)"))
                if let rtx = t.rtxSSRC { a.append(.init("ssrc-group", "FID \(t.ssrc) \(rtx)")) }
                a.append(.init("ssrc", "\(t.ssrc) cname:\(t.cname)"))
                a.append(.init("ssrc", "\(t.ssrc) msid:\(t.peerID) \(t.trackID)"))
                if let rtx = t.rtxSSRC {
                    a.append(.init("ssrc", "\(rtx) cname:\(t.cname)"))
                    a.append(.init("ssrc", "\(rtx) msid:\(t.peerID) \(t.trackID)"))
                }
            } else {
                a.append(MediaDirection.inactive.attribute)
            }
            m.attributes = a
            offer.media.append(m)
        }
        return offer
    }

    /// What a subscriber's answer accepted, per mid: the payload types it will receive.
    package struct AnsweredSection: Sendable, Equatable {
        package var mid: String
        package var accepted: Bool
        package var payloadType: UInt8?
        package var rtxPayloadType: UInt8?
        package var transportCC: Bool
    }

    package static func readSubscriberAnswer(_ answer: SessionDescription) -> [AnsweredSection] {
        answer.media.enumerated().map { index, m in
            let codec = acceptedCodec(m)
            let rtx = codec.flatMap { c in m.codecs.first { $0.name.lowercased() == "rtx" && $0.fmtp?.contains("apt=\(c.payloadType)") == true } }
            let twcc = m.extensions.contains { $0.uri == RTPExtensionURI.transportWideCC && $0.id == subscriberTransportCCID }
            return AnsweredSection(mid: m.mid ?? String(index), accepted: m.port != 0 && codec != nil && m.direction != .inactive,
                                   payloadType: codec?.payloadType, rtxPayloadType: rtx?.payloadType, transportCC: twcc)
        }
    }
}
