import DTLS
import Testing
import TestSupport

/// libsrtp2 on our OpenSSL crypto types (Sources/CSFUShim/srtp_openssl.c) against an independent
/// SRTP implementation: the vectors were made by pylibsrtp 1.0.0 (PyPI; its own libsrtp2 build on
/// OpenSSL, not Debian's), `Session(Policy(key, SSRC_ANY_OUTBOUND, profile)).protect(...)` and
/// `.protect_rtcp(...)` of the packets below, the first packet of each session.
@Suite("SRTP crypto on OpenSSL, checked against another libsrtp build")
struct SRTPCryptoTests {
    struct Vector {
        var profile: SRTPProfile
        var master: [UInt8]
        var srtp: [UInt8]
        var srtcp: [UInt8]
    }

    /// An RTP packet with a one-byte header extension (MID-like) and 100 payload bytes.
    static let rtp = [UInt8](hex: "906012340001e240cafebabebede000110aa0000") + (0..<100).map { UInt8($0) }
    /// An RTCP SR-shaped packet.
    static let rtcp = [UInt8](hex: "80c80006cafebabe") + (0..<20).map { UInt8($0) }

    static let vectors: [Vector] = [
        Vector(
            profile: .aeadAes128Gcm,
            master: [UInt8](hex: "030a11181f262d343b424950575e656c737a81888f969da4abb2b9c0"),
            srtp: [UInt8](hex: """
                906012340001e240cafebabebede000110aa00006cc0e8c14cf2bc0786a54bc1df5fb9cb18c162384f4e135185e4ee51
                e4c26cac24e5211fb379b12d01b845e1dafd39bc688b38806a2abbd685ca98a4116800e5dcfd0d095a6883fd823411b4
                37e5df2fa1fe0c6aaa3584a0721fd06df14039f496c476c605ee7dec8a0e3c4a3eb3532b7d44a6db
                """),
            srtcp: [UInt8](hex: "80c80006cafebabee5798757795011dafe18a14cff17f1e14d6a598cddd2973a9278689ed4e2b0e2d0e9da6b80000001")
        ),
        Vector(
            profile: .aes128CmHmacSha1_80,
            master: [UInt8](hex: "030a11181f262d343b424950575e656c737a81888f969da4abb2b9c0c7ce"),
            srtp: [UInt8](hex: """
                906012340001e240cafebabebede000110aa0000b0dd820d2749d24fbb34288f597309c3df66b20f0a709d9b7534f514
                dec3b9dc9e835f9b724ff28d86349aa32ed4220ea2bd2ea897e6c069eb228eb70af72d7dc1fc7630dcff137c9ef7040b
                e3a9fac85fa22894657163be1854733604e5f7c1b8faaa7e64479d5ddfd8c1254b13
                """),
            srtcp: [UInt8](hex: "80c80006cafebabe374a5d7e8876b2c0ed57b3fbf97354a8522345cb80000001f553b74165d97e98c571")
        ),
    ]

    static func keys(_ v: Vector) -> SRTPKeys {
        SRTPKeys(profile: v.profile, key: Array(v.master[0..<16]), salt: Array(v.master[16...]))
    }

    @Test func theOpenSSLTypesPassedTheirKnownAnswerTestsAndAreInstalled() throws {
        try CryptoLibraries.initialize()
        // srtp_replace_cipher_type / srtp_replace_auth_type run our known-answer tests and libsrtp2's
        // own for the type replaced, plus random round trips; a failure leaves libsrtp2's type.
        #expect(CryptoLibraries.srtpCryptoInstallFailure == 0)
        #expect(CryptoLibraries.srtpCryptoBackend == .openSSL)
    }

    @Test(arguments: [0, 1])
    func protectGivesTheOtherImplementationsBytes(_ index: Int) throws {
        let v = Self.vectors[index]
        let tx = try SRTPSession(keys: Self.keys(v), direction: .outbound)
        var buffer = Self.rtp + [UInt8](repeating: 0, count: SRTPProfile.maxOverhead)
        let length = try buffer.withUnsafeMutableBytes { try tx.protectRTP($0.baseAddress!, length: Self.rtp.count, capacity: $0.count) }
        #expect(Array(buffer[0..<length]) == v.srtp)

        var control = Self.rtcp + [UInt8](repeating: 0, count: SRTPProfile.maxOverhead)
        let controlLength = try control.withUnsafeMutableBytes { try tx.protectRTCP($0.baseAddress!, length: Self.rtcp.count, capacity: $0.count) }
        #expect(Array(control[0..<controlLength]) == v.srtcp)
    }

    @Test(arguments: [0, 1])
    func unprotectReadsTheOtherImplementationsPacketsAndRejectsTamperedOnes(_ index: Int) throws {
        let v = Self.vectors[index]
        let rx = try SRTPSession(keys: Self.keys(v), direction: .inbound)
        var buffer = v.srtp
        let plain = buffer.withUnsafeMutableBytes { rx.unprotectRTP($0.baseAddress!, length: $0.count) }
        #expect(plain.map { Array(buffer[0..<$0]) } == .success(Self.rtp))

        var control = v.srtcp
        let plainControl = control.withUnsafeMutableBytes { rx.unprotectRTCP($0.baseAddress!, length: $0.count) }
        #expect(plainControl.map { Array(control[0..<$0]) } == .success(Self.rtcp))

        // One flipped bit anywhere in the payload or the tag fails authentication (a fresh session
        // each time, so that the replay window does not answer first).
        for position in [20, 70, v.srtp.count - 1] {
            let fresh = try SRTPSession(keys: Self.keys(v), direction: .inbound)
            var tampered = v.srtp
            tampered[position] ^= 0x01
            let result = tampered.withUnsafeMutableBytes { fresh.unprotectRTP($0.baseAddress!, length: $0.count) }
            #expect(result == .failure(.authentication), "bit flipped at \(position)")
            // A packet that failed authentication leaves no plaintext behind (AES-GCM decrypts
            // before it checks the tag: our OpenSSL cipher zeroes the output on failure).
            let payload = 20..<Self.rtp.count
            let leaked = zip(tampered[payload], Self.rtp[payload]).filter { $0 == $1 }.count
            #expect(leaked <= 2, "\(leaked) plaintext bytes in the buffer after a failed decryption (bit flipped at \(position))")
        }
        // The same packet again is a replay.
        var again = v.srtp
        let replay = again.withUnsafeMutableBytes { rx.unprotectRTP($0.baseAddress!, length: $0.count) }
        #expect(replay == .failure(.replay))
    }

    @Test(arguments: [0, 1])
    func garbageOfAnyLengthIsRejectedWithoutHarm(_ index: Int) throws {
        let v = Self.vectors[index]
        let rx = try SRTPSession(keys: Self.keys(v), direction: .inbound)
        var rng = SeededGenerator(seed: 99)
        var accepted = 0
        for n in 0..<3000 {
            // RTP-looking headers (version 2, so libsrtp gets past its header checks) of every
            // length from 0 up, with random bodies, and fully random ones.
            var bytes = randomBytes(n % 300, using: &rng)
            if n % 2 == 0, !bytes.isEmpty { bytes[0] = 0x80 | (bytes[0] & 0x3f) }
            var copy = bytes
            let rtp = bytes.withUnsafeMutableBytes { b in b.baseAddress.map { rx.unprotectRTP($0, length: b.count) } }
            let rtcp = copy.withUnsafeMutableBytes { b in b.baseAddress.map { rx.unprotectRTCP($0, length: b.count) } }
            if case .success = rtp { accepted += 1 }
            if case .success = rtcp { accepted += 1 }
        }
        #expect(accepted == 0)
    }

    @Test(arguments: [0, 1])
    func aThousandPacketsOfEverySizeRoundTrip(_ index: Int) throws {
        let v = Self.vectors[index]
        let tx = try SRTPSession(keys: Self.keys(v), direction: .outbound)
        let rx = try SRTPSession(keys: Self.keys(v), direction: .inbound)
        var rng = SeededGenerator(seed: 7)
        for n in 0..<1000 {
            let size = 12 + n % 1189
            var packet = [UInt8](hex: "80600000000000000badcafe") + randomBytes(size - 12, using: &rng)
            packet[2] = UInt8(truncatingIfNeeded: n >> 8)
            packet[3] = UInt8(truncatingIfNeeded: n)
            let original = packet
            packet += [UInt8](repeating: 0, count: SRTPProfile.maxOverhead)
            let sealed = try packet.withUnsafeMutableBytes { try tx.protectRTP($0.baseAddress!, length: size, capacity: $0.count) }
            #expect(sealed == size + (v.profile == .aeadAes128Gcm ? 16 : 10))
            let opened = packet.withUnsafeMutableBytes { rx.unprotectRTP($0.baseAddress!, length: sealed) }
            guard case .success(let plainLength) = opened else {
                Issue.record("packet \(n) of \(size) bytes: \(opened)")
                return
            }
            #expect(Array(packet[0..<plainLength]) == original)
        }
    }
}
