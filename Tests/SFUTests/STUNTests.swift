import DTLS
import Testing
import TestSupport
@testable import SFU

@Suite("STUN messages")
struct STUNTests {
    /// RFC 5769 2.1: sample request (password "VOkJxbRl1RmTxUk/WvJxBt").
    static let rfc5769Request = [UInt8](hex: """
        00010058 2112a442 b7e7a701 bc34d686 fa87dfae
        80220010 5354554e 20746573 7420636c 69656e74
        00240004 6e0001ff
        80290008 932ff9b1 51263b36
        00060009 6576746a 3a683676 59202020
        00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
        80280004 e57a3bcf
        """)
    /// RFC 5769 2.2: sample IPv4 response, mapped address 192.0.2.1:32853.
    static let rfc5769Response = [UInt8](hex: """
        0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
        8022000b 74657374 20766563 746f7220
        00200008 0001a147 e112a643
        00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
        80280004 c07d4c96
        """)

    @Test func parsesRFC5769RequestAndChecksIntegrity() throws {
        let m = try STUNMessage(parsing: Self.rfc5769Request)
        #expect(m.messageClass == .request && m.method == STUNMessage.bindingMethod)
        #expect(m.transactionID == [UInt8](hex: "b7e7a701bc34d686fa87dfae"))
        #expect(m.username == "evtj:h6vY")
        #expect(m.priority == 0x6e00_01ff)
        #expect(m.iceControlled == 0x932f_f9b1_5126_3b36)
        #expect(m.hadFingerprint)
        let right = try #require(HMAC(digest: .sha1, key: Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)))
        let wrong = try #require(HMAC(digest: .sha1, key: Array("VOkJxbRl1RmTxUk/WvJxBT".utf8)))
        Self.rfc5769Request.withUnsafeBytes { raw in
            #expect(m.checkIntegrity(raw, key: right))
            #expect(!m.checkIntegrity(raw, key: wrong))
        }
    }

    @Test func parsesRFC5769Response() throws {
        let m = try STUNMessage(parsing: Self.rfc5769Response)
        #expect(m.messageClass == .successResponse)
        #expect(m.xorMappedAddress == TransportAddress(ipv4: 192, 0, 2, 1, port: 32853))
        let key = try #require(HMAC(digest: .sha1, key: Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)))
        Self.rfc5769Response.withUnsafeBytes { raw in #expect(m.checkIntegrity(raw, key: key)) }
    }

    @Test func buildsWhatItParses() throws {
        let key = try #require(HMAC(digest: .sha1, key: Array("VOkJxbRl1RmTxUk/WvJxBt".utf8)))
        // Rebuilding the RFC response gives its bytes except the padding of SOFTWARE (the RFC pads
        // with spaces, we with zeros), and our MAC and CRC verify.
        var m = try STUNMessage(parsing: Self.rfc5769Response)
        let rebuilt = m.serialized(integrity: key, fingerprint: true)
        #expect(rebuilt.count == Self.rfc5769Response.count)
        #expect(Array(rebuilt[0..<35]) == Array(Self.rfc5769Response[0..<35]))
        #expect(Array(rebuilt[36..<48]) == Array(Self.rfc5769Response[36..<48]))
        let reparsed = try STUNMessage(parsing: rebuilt)
        rebuilt.withUnsafeBytes { #expect(reparsed.checkIntegrity($0, key: key)) }
        #expect(reparsed.attributes == m.attributes)
        m.attributes = [STUNMessage.xorMappedAddressAttribute(TransportAddress(host: "2001:db8:1234:5678:11:2233:4455:6677", port: 32853)!,
                                                              transactionID: m.transactionID)]
        let v6 = try STUNMessage(parsing: m.serialized(integrity: key))
        #expect(v6.xorMappedAddress == TransportAddress(host: "2001:db8:1234:5678:11:2233:4455:6677", port: 32853))
        let error = STUNMessage(messageClass: .errorResponse, transactionID: m.transactionID,
                                attributes: [STUNMessage.errorCodeAttribute(487, reason: "Role Conflict")])
        let parsed = try STUNMessage(parsing: error.serialized())
        #expect(parsed.messageClass == .errorResponse && parsed.errorCode?.code == 487 && parsed.errorCode?.reason == "Role Conflict")
    }

    @Test func rejectsMalformedMessages() {
        var bad = Self.rfc5769Request
        bad[bad.count - 1] ^= 1  // fingerprint
        #expect(throws: STUNError.badFingerprint) { try STUNMessage(parsing: bad) }
        #expect(throws: STUNError.truncated) { try STUNMessage(parsing: Array(Self.rfc5769Request.prefix(19))) }
        #expect(throws: STUNError.badLength) { try STUNMessage(parsing: Array(Self.rfc5769Request.prefix(40))) }
        var cookie = Self.rfc5769Request
        cookie[4] = 0
        #expect(throws: STUNError.notSTUN) { try STUNMessage(parsing: cookie) }
        // An attribute length running past the end.
        let overrun = [UInt8](hex: "00010008 2112a442 000000000000000000000000 00060010 61626364")
        #expect(throws: STUNError.badAttribute) { try STUNMessage(parsing: overrun) }
    }

    @Test func randomCorruptionNeverTraps() {
        var rng = SeededGenerator(seed: 99)
        var rejected = 0
        for i in 0..<20_000 {
            var b = i % 2 == 0 ? Self.rfc5769Request : Self.rfc5769Response
            for _ in 0..<Int(rng.next() % 6 + 1) { b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            if rng.next() % 3 == 0 { b = Array(b.prefix(Int(rng.next() % UInt64(b.count)))) }
            if (try? STUNMessage(parsing: b)) == nil { rejected += 1 }
        }
        #expect(rejected > 10_000)
    }

    @Test func transportAddressParsing() {
        #expect(TransportAddress(host: "127.0.0.1", port: 5)?.description == "127.0.0.1:5")
        #expect(TransportAddress(host: "::1", port: 9)?.addressBytes == [UInt8](repeating: 0, count: 15) + [1])
        #expect(TransportAddress(host: "fe80::1%eth0", port: 9) != nil)
        #expect(TransportAddress(host: "1.2.3", port: 1) == nil)
        #expect(TransportAddress(host: "1.2.3.256", port: 1) == nil)
        #expect(TransportAddress(host: "1::2::3", port: 1) == nil)
        #expect(TransportAddress(host: "example.org", port: 1) == nil)
    }
}
