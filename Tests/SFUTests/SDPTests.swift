import DTLS
import Foundation
import Testing
import TestSupport
@testable import SFU

let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures")

func fixture(_ path: String) throws -> String {
    try String(contentsOf: fixturesDirectory.appendingPathComponent(path), encoding: .utf8)
}

@Suite("SDP")
struct SDPTests {
    @Test func parsesAnAiortcOffer() throws {
        let sdp = try SessionDescription(parsing: try fixture("sdp/aiortc-offer.sdp"))
        #expect(sdp.bundleGroup == ["0", "1"])
        #expect(sdp.media.map(\.kind) == ["audio", "video"])
        let audio = sdp.media[0], video = sdp.media[1]
        #expect(audio.mid == "0" && video.mid == "1")
        #expect(audio.codecs.first == SessionDescription.Codec(payloadType: 96, name: "opus", clockRate: 48000, channels: 2))
        #expect(audio.codecs.map(\.name) == ["opus", "G722", "PCMU", "PCMA"])
        let vp8 = try #require(video.codecs.first { $0.name == "VP8" })
        #expect(vp8.clockRate == 90000 && vp8.feedback.contains("nack pli"))
        #expect(video.codecs.contains { $0.name == "rtx" && $0.fmtp?.hasPrefix("apt=") == true })
        #expect(audio.extensions.contains { $0.id == 1 && $0.uri == "urn:ietf:params:rtp-hdrext:sdes:mid" })
        #expect(sdp.value("ice-ufrag", in: audio) != nil && sdp.value("ice-pwd", in: audio) != nil)
        #expect(CertificateFingerprint(sdpValue: try #require(sdp.value("fingerprint", in: audio)))?.algorithm == .sha256)
        #expect(sdp.value("setup", in: audio) == "actpass")
        #expect(video.ssrcs.count == 2 && audio.direction == .sendrecv)
        // Serializing keeps every line.
        let again = try SessionDescription(parsing: sdp.text)
        #expect(again == sdp)
    }

    @Test func echoAnswerAcceptsOpusAndVP8Only() throws {
        var offer = try fixture("sdp/aiortc-offer.sdp")
        offer += "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\n"
        let context = try DTLSContext(certificate: DTLSCertificate())
        let session = try EchoSession(offer: offer, dtlsContext: context,
                                      candidates: [HostCandidate(address: TransportAddress(ipv4: 127, 0, 0, 1, port: 40000))],
                                      nowNanos: 0, id: "x")
        let answer = session.answer
        #expect(answer.sessionAttributes.contains { $0.name == "ice-lite" })
        #expect(answer.bundleGroup == ["0", "1"])
        #expect(answer.media.count == 3)
        let (audio, video, data) = (answer.media[0], answer.media[1], answer.media[2])
        #expect(audio.formats == ["96"] && audio.codecs.map(\.name) == ["opus"])
        #expect(video.codecs.map(\.name) == ["VP8"])
        #expect(data.port == 0)
        for m in [audio, video] {
            #expect(m.value("setup") == "passive")
            #expect(m.value("fingerprint") == "sha-256 " + context.certificate.sha256Fingerprint)
            #expect(m.values("candidate") == ["1 1 udp 2130706431 127.0.0.1 40000 typ host"])
            #expect(m.has("rtcp-mux") && m.ssrcs.count == 1)
            #expect(m.value("ice-ufrag") == session.transport.ice.local.ufrag)
        }
        #expect(video.values("rtcp-fb").contains("\(video.formats[0]) nack pli"))
        // The answer parses as SDP itself.
        #expect(try SessionDescription(parsing: answer.text) == answer)
    }

    @Test func badOffersAreRejectedWithAReason() throws {
        let context = try DTLSContext(certificate: DTLSCertificate())
        let candidates = [HostCandidate(address: TransportAddress(ipv4: 127, 0, 0, 1, port: 40000))]
        func attempt(_ text: String) -> String? {
            do {
                _ = try EchoSession(offer: text, dtlsContext: context, candidates: candidates, nowNanos: 0, id: "x")
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(attempt("hello")?.contains("does not parse") == true)
        #expect(attempt("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n")?.contains("ICE") == true)
        let offer = try fixture("sdp/aiortc-offer.sdp")
        #expect(attempt(offer.replacingOccurrences(of: "a=fingerprint:", with: "a=x-fingerprint:"))?.contains("fingerprint") == true)
        #expect(attempt(offer.replacingOccurrences(of: "opus/48000", with: "speex/48000").replacingOccurrences(of: "VP8/90000", with: "AV1/90000"))?.contains("no Opus") == true)
        // One transport per peer: several sections without BUNDLE, or without rtcp-mux, are refused.
        #expect(attempt(offer.replacingOccurrences(of: "a=group:BUNDLE 0 1\r\n", with: ""))?.contains("BUNDLE") == true)
        #expect(attempt(offer.replacingOccurrences(of: "a=rtcp-mux\r\n", with: ""))?.contains("rtcp-mux") == true)
        #expect(throws: SessionDescription.ParseError.self) { try SessionDescription(parsing: String(repeating: "a", count: 70_000)) }
        #expect(throws: SessionDescription.ParseError.missingVersion) { try SessionDescription(parsing: "o=- 1 1 IN IP4 0.0.0.0\r\n") }
    }

    /// Random edits of a real offer: parsing and answering either work or throw; nothing traps.
    @Test func mutatedOffersNeverTrap() throws {
        let base = Array(try fixture("sdp/aiortc-offer.sdp").utf8)
        let context = try DTLSContext(certificate: DTLSCertificate())
        let candidates = [HostCandidate(address: TransportAddress(ipv4: 127, 0, 0, 1, port: 40000))]
        var rng = SeededGenerator(seed: 0x5D9)
        let alphabet = Array("=: /\r\naamv0123456789-".utf8)
        var parsed = 0
        for _ in 0..<1500 {
            var b = base
            for _ in 0..<Int(rng.next() % 8 + 1) {
                let i = Int(rng.next() % UInt64(b.count))
                switch rng.next() % 3 {
                case 0: b[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                case 1: b.remove(at: i)
                default: b.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: i)
                }
            }
            let text = String(decoding: b, as: UTF8.self)
            if (try? SessionDescription(parsing: text)) != nil { parsed += 1 }
            _ = try? EchoSession(offer: text, dtlsContext: context, candidates: candidates, nowNanos: 0, id: "f")
        }
        #expect(parsed > 0)
    }
}
