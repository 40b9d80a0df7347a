import DTLS
import Foundation
import RTP
import Testing
import TestSupport
@testable import SFU

@Suite("Room SDP")
struct RoomSDPTests {
    static let local = LocalTransportParameters(
        ice: .init(ufrag: "srvufrag", password: "serverpassword0123456789"),
        fingerprint: (0..<32).map { String(format: "%02X", $0) }.joined(separator: ":"),
        candidates: [HostCandidate(address: TransportAddress(host: "127.0.0.1", port: 40000)!)])

    /// Real offers from each stack (Fixtures/sdp/README.md): what our answer must accept.
    @Test(arguments: ["aiortc-offer.sdp", "chromium-offer.sdp", "firefox-offer.sdp", "chromium-simulcast-offer.sdp"])
    func answersARealPublisherOffer(_ name: String) throws {
        let offer = try SessionDescription(parsing: try fixture("sdp/" + name))
        let (answer, sections, ids) = try RoomSDP.answerPublisher(offer: offer, local: Self.local, setup: .passive, sessionVersion: 1, sessionID: 7)
        // The answer is valid SDP with one m-line per offered one, in order, and the same mids.
        let reparsed = try SessionDescription(parsing: answer.text)
        #expect(reparsed.media.map(\.mid) == offer.media.enumerated().map { $0.element.mid ?? String($0.offset) })
        #expect(reparsed.sessionAttributes.contains { $0.name == "ice-lite" })
        let audio = try #require(sections.first { $0.kind == .audio })
        let video = try #require(sections.first { $0.kind == .video })
        #expect(audio.sending && video.sending)
        #expect(reparsed.bundleGroup == [audio.mid, video.mid])
        let audioCodec = try #require(offer.media.first { $0.mid == audio.mid }?.codecs.first { $0.name.lowercased() == "opus" })
        #expect(audio.payloadType == audioCodec.payloadType && audio.clockRate == 48000)
        let vp8 = try #require(offer.media.first { $0.mid == video.mid }?.codecs.first { $0.name == "VP8" })
        #expect(video.payloadType == vp8.payloadType && video.clockRate == 90000)
        // RTX for VP8 is kept when offered, with its apt.
        let offeredRTX = offer.media.first { $0.mid == video.mid }?.codecs.first { $0.name == "rtx" && $0.fmtp == "apt=\(vp8.payloadType)" }
        #expect(video.rtxPayloadType == offeredRTX?.payloadType)
        for (m, section) in zip(reparsed.media, answer.media) where section.port != 0 {
            #expect(m.direction == .recvonly)
            #expect(m.value("setup") == "passive" && m.value("ice-ufrag") == "srvufrag" && m.has("rtcp-mux"))
            #expect(m.value("fingerprint")?.hasPrefix("sha-256 00:01:02") == true)
            #expect(m.values("candidate") == ["1 1 udp 2130706431 127.0.0.1 40000 typ host"])
            // Only the header extensions we use, with the offer's ids.
            let offered = offer.media.first { $0.mid == m.mid }?.extensions ?? []
            for e in m.extensions {
                #expect(RoomSDP.keptExtensions.contains(e.uri))
                #expect(offered.contains { $0.id == e.id && $0.uri == e.uri })
            }
            // One codec (plus RTX), no audio codecs we cannot forward.
            #expect(m.codecs.map(\.name).filter { $0 != "rtx" }.count == 1)
        }
        if offer.media.contains(where: { $0.extensions.contains { $0.uri == RTPExtensionURI.transportWideCC } }) {
            #expect(ids.transportCC != nil)
            #expect(reparsed.media.first { $0.mid == video.mid }?.values("rtcp-fb").contains("\(vp8.payloadType) transport-cc") == true)
        }
        if name.contains("simulcast") {
            // Chromium sends three layers only if the answer receives every rid (DESIGN.md); the
            // SSRCs are learned from the rid extensions.
            #expect(video.ssrc == nil)
            #expect(video.encodings.map(\.rid) == ["q", "h", "f"])
            let m = try #require(reparsed.media.first { $0.mid == video.mid })
            #expect(m.values("rid") == ["q recv", "h recv", "f recv"])
            #expect(m.value("simulcast") == "recv q;h;f")
            #expect(m.extensions.contains { $0.uri == RTPExtensionURI.rtpStreamID } && ids.rid != nil)
            #expect(m.extensions.contains { $0.uri == RTPExtensionURI.repairedRTPStreamID } && ids.repairedRid != nil)
        } else {
            #expect(video.encodings.isEmpty)
            #expect(reparsed.media.allSatisfy { !$0.has("simulcast") && !$0.has("rid") })
            #expect(video.ssrc != nil && video.ssrc == offer.media.first { $0.mid == video.mid }?.ssrcs.first)
            if offeredRTX != nil { #expect(video.rtxSSRC != nil && video.rtxSSRC != video.ssrc) }
        }
    }

    /// RFC 8853 variants: paused (~) and alternative rids, rids not declared, SIM groups, one layer.
    @Test func simulcastVariants() throws {
        let base = try SessionDescription(parsing: try fixture("sdp/chromium-simulcast-offer.sdp"))
        func answer(_ edit: (inout SessionDescription.Media) -> Void) throws -> (PublishedSection, SessionDescription.Media) {
            var offer = base
            let i = try #require(offer.media.firstIndex { $0.kind == "video" })
            edit(&offer.media[i])
            let (a, sections, _) = try RoomSDP.answerPublisher(offer: offer, local: Self.local, setup: .passive, sessionVersion: 1, sessionID: 7)
            return (try #require(sections.first { $0.kind == .video }), try #require(a.media.first { $0.kind == "video" }))
        }
        func setSimulcast(_ m: inout SessionDescription.Media, _ value: String) {
            m.attributes.removeAll { $0.name == "simulcast" }
            m.attributes.append(.init("simulcast", value))
        }
        // A paused rid is not received; alternatives take the first.
        var (section, m) = try answer { setSimulcast(&$0, "send q;~h;f,h") }
        #expect(section.encodings.map(\.rid) == ["q", "f"] && m.value("simulcast") == "recv q;f")
        // A rid the offer does not declare with a=rid is ignored; one layer left is no simulcast.
        (section, m) = try answer { setSimulcast(&$0, "send q;zz") }
        #expect(section.encodings.isEmpty && !m.has("simulcast"))
        // A receive-direction simulcast line from a client is not ours to answer.
        (section, m) = try answer { setSimulcast(&$0, "recv q;h;f") }
        #expect(section.encodings.isEmpty)
        // Plan-B style SSRC groups: SIM lists the layers lowest first, FID pairs the RTX.
        (section, _) = try answer {
            $0.attributes.removeAll { $0.name == "simulcast" || $0.name == "rid" }
            $0.attributes += [.init("ssrc-group", "SIM 11 22 33"), .init("ssrc-group", "FID 11 111"), .init("ssrc-group", "FID 22 222"),
                              .init("ssrc-group", "FID 33 333"), .init("ssrc", "11 cname:x"), .init("ssrc", "22 cname:x"), .init("ssrc", "33 cname:x")]
        }
        #expect(section.encodings == [SimulcastEncoding(rid: nil, ssrc: 11, rtxSSRC: 111), SimulcastEncoding(rid: nil, ssrc: 22, rtxSSRC: 222),
                                      SimulcastEncoding(rid: nil, ssrc: 33, rtxSSRC: 333)])
        #expect(section.ssrc == 11)
    }

    @Test func rejectsWhatItCannotForward() throws {
        var offer = try SessionDescription(parsing: try fixture("sdp/aiortc-offer.sdp"))
        // Only G722 audio, and a data channel section.
        offer.media[0].formats = ["9"]
        offer.media.append(.init(kind: "application", port: 9, proto: "UDP/DTLS/SCTP", formats: ["webrtc-datachannel"]))
        let (answer, sections, _) = try RoomSDP.answerPublisher(offer: offer, local: Self.local, setup: .passive, sessionVersion: 1, sessionID: 1)
        #expect(answer.media.map(\.port) == [0, 9, 0])
        #expect(sections.map(\.kind) == [.video])
        // Nothing usable at all is an error, not an empty answer.
        var nothing = offer
        nothing.media = [offer.media[0]]
        #expect(throws: RoomSDPError.self) {
            _ = try RoomSDP.answerPublisher(offer: nothing, local: Self.local, setup: .passive, sessionVersion: 1, sessionID: 1)
        }
    }

    /// H.264 is answered only when the offer has no VP8, with packetization mode 1, and the
    /// subscriber offer carries the publisher's fmtp.
    @Test func h264IsPassedThroughWhenThereIsNoVP8() throws {
        var offer = try SessionDescription(parsing: try fixture("sdp/chromium-offer.sdp"))
        let videoIndex = try #require(offer.media.firstIndex { $0.kind == "video" })
        let vp8 = try #require(offer.media[videoIndex].codecs.first { $0.name == "VP8" })
        let (_, withVP8, _) = try RoomSDP.answerPublisher(offer: offer, local: Self.local, setup: .passive, sessionVersion: 1, sessionID: 1)
        #expect(withVP8.first { $0.kind == .video }?.codec == .vp8)
        // Chromium without VP8: its H.264 with packetization-mode=1 and constrained baseline.
        offer.media[videoIndex].formats.removeAll { $0 == String(vp8.payloadType) }
        let (answer, sections, _) = try RoomSDP.answerPublisher(offer: offer, local: Self.local, setup: .passive, sessionVersion: 1, sessionID: 1)
        let video = try #require(sections.first { $0.kind == .video })
        guard case .h264(let fmtp) = video.codec else { Issue.record("not H264: \(video.codec)"); return }
        #expect(fmtp.contains("packetization-mode=1") && fmtp.contains("profile-level-id=42e0"))
        let m = try #require(try SessionDescription(parsing: answer.text).media.first { $0.mid == video.mid })
        #expect(m.codecs.first?.name == "H264" && m.codecs.first?.payloadType == video.payloadType)
        let sub = RoomSDP.subscriberOffer(slots: [.init(mid: "0", codec: video.codec, track: .init(peerID: "pe_a", trackID: "tr_1", ssrc: 5, rtxSSRC: 6, cname: "c"))],
                                          local: Self.local, sessionVersion: 1, sessionID: 1)
        let subVideo = try #require(sub.media.first)
        #expect(subVideo.codecs.map(\.name) == ["H264", "rtx"])
        #expect(subVideo.codecs.first?.fmtp == fmtp && subVideo.codecs.first?.payloadType == 102)
    }

    @Test func receiveOnlySectionsPublishNothing() throws {
        let text = try fixture("sdp/aiortc-offer.sdp").replacingOccurrences(of: "a=sendrecv", with: "a=recvonly")
        let offer = try SessionDescription(parsing: text)
        let (answer, sections, _) = try RoomSDP.answerPublisher(offer: offer, local: Self.local, setup: .passive, sessionVersion: 1, sessionID: 1)
        #expect(sections.allSatisfy { !$0.sending })
        #expect(answer.media.allSatisfy { $0.direction == .inactive })
    }

    @Test func subscriberOfferHasAnMLinePerSlotAndKeepsGoneOnesInactive() throws {
        let slots = [
            RoomSDP.SubscriberSlot(mid: "0", codec: .opus, track: .init(peerID: "pe_a", trackID: "tr_1", ssrc: 111, rtxSSRC: nil, cname: "sfu-pe_a")),
            RoomSDP.SubscriberSlot(mid: "1", codec: .vp8, track: .init(peerID: "pe_a", trackID: "tr_2", ssrc: 222, rtxSSRC: 333, cname: "sfu-pe_a")),
            RoomSDP.SubscriberSlot(mid: "2", codec: .vp8, track: nil),
        ]
        let offer = try SessionDescription(parsing: RoomSDP.subscriberOffer(slots: slots, local: Self.local, sessionVersion: 3, sessionID: 9).text)
        #expect(offer.bundleGroup == ["0", "1", "2"])
        #expect(offer.media.map(\.direction) == [.sendonly, .sendonly, .inactive])
        #expect(offer.media.map { $0.value("msid") } == ["pe_a tr_1", "pe_a tr_2", nil])
        #expect(offer.media[1].values("ssrc-group") == ["FID 222 333"])
        #expect(offer.media[1].ssrcs == [222, 333] && offer.media[2].ssrcs.isEmpty)
        #expect(offer.media.allSatisfy { $0.value("setup") == "actpass" && $0.has("rtcp-mux") })
        #expect(offer.media[1].codecs.map(\.name) == ["VP8", "rtx"] && offer.media[0].codecs.map(\.name) == ["opus"])
        #expect(offer.sessionLines.contains("o=- 9 3 IN IP4 127.0.0.1"))

        // An answer that accepts the first two and rejects the third.
        var answer = offer
        for i in answer.media.indices {
            answer.media[i].attributes = answer.media[i].attributes.filter { !["sendonly", "inactive", "msid", "ssrc", "ssrc-group"].contains($0.name) }
            answer.media[i].attributes.append(.init(i < 2 ? "recvonly" : "inactive"))
        }
        let read = RoomSDP.readSubscriberAnswer(answer)
        #expect(read.map(\.accepted) == [true, true, false])
        #expect(read[1].payloadType == 96 && read[1].rtxPayloadType == 97 && read[1].transportCC)
    }

    @Test func consumerHeaderParsesBackWithTheTransportSequence() throws {
        var bytes = [UInt8](repeating: 0, count: 24)
        bytes.withUnsafeMutableBytes {
            RTPWriter.writeHeader($0, marker: true, payloadType: 96, sequenceNumber: 0xFFFE, timestamp: 0xDEAD_BEEF,
                                  ssrc: 0x0102_0304, transportCC: .init(id: RoomSDP.subscriberTransportCCID, sequence: 0x1234))
        }
        bytes[20...] = [1, 2, 3, 4]
        let header = try RTPHeader(parsing: bytes)
        #expect(header.marker && header.payloadType == 96 && header.sequenceNumber == 0xFFFE)
        #expect(header.timestamp == 0xDEAD_BEEF && header.ssrc == 0x0102_0304)
        #expect(header.payloadOffset == 20 && header.payloadLength == 4)
        let value = bytes.withUnsafeBytes { header.extensionValue(id: RoomSDP.subscriberTransportCCID, in: $0).map(Array.init) }
        #expect(value == [0x12, 0x34])
    }
}
