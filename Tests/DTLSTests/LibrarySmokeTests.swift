import COpenSSL
import CSFUShim
import CSRTP
import DTLS
import Testing

@Suite("C library link: libsrtp2 and OpenSSL")
struct LibrarySmokeTests {
    @Test func srtpInitializesAndReportsVersion() throws {
        try CryptoLibraries.initialize()
        try CryptoLibraries.initialize()  // idempotent
        #expect(CryptoLibraries.srtpVersion.hasPrefix("libsrtp2 2."))
    }

    @Test func srtpProtectsAndUnprotectsAPacket() throws {
        try CryptoLibraries.initialize()
        var policy = srtp_policy_t()
        srtp_crypto_policy_set_rtp_default(&policy.rtp)  // = AES_CM_128_HMAC_SHA1_80 (a macro in the header)
        srtp_crypto_policy_set_rtcp_default(&policy.rtcp)
        var key = [UInt8](repeating: 0x11, count: 30)
        policy.ssrc.type = ssrc_any_outbound
        policy.window_size = 1024
        var sender: srtp_t?
        var receiver: srtp_t?
        try key.withUnsafeMutableBufferPointer { k in
            policy.key = k.baseAddress
            #expect(srtp_create(&sender, &policy) == srtp_err_status_ok)
            policy.ssrc.type = ssrc_any_inbound
            #expect(srtp_create(&receiver, &policy) == srtp_err_status_ok)
            _ = try #require(sender)
        }
        defer { srtp_dealloc(sender); srtp_dealloc(receiver) }
        // A minimal RTP packet: V=2, PT=96, seq=1, ts=0, ssrc=0x01020304, 4 payload bytes.
        let plain: [UInt8] = [0x80, 96, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4, 0xde, 0xad, 0xbe, 0xef]
        var buffer = plain + [UInt8](repeating: 0, count: 16)
        var length = Int32(plain.count)
        #expect(srtp_protect(sender, &buffer, &length) == srtp_err_status_ok)
        #expect(length == Int32(plain.count + 10))  // 80-bit auth tag
        #expect(Array(buffer[12..<16]) != Array(plain[12..<16]))  // payload encrypted
        #expect(srtp_unprotect(receiver, &buffer, &length) == srtp_err_status_ok)
        #expect(Array(buffer[0..<Int(length)]) == plain)
    }

    @Test func openSSLMakesADTLSContextWithSRTPProfilesAndAP256Key() throws {
        #expect(CryptoLibraries.openSSLVersion.hasPrefix("OpenSSL 3."))
        let ctx = try #require(SSL_CTX_new(DTLS_method()))
        defer { SSL_CTX_free(ctx) }
        // Returns 0 on success (the inverse of most OpenSSL calls).
        #expect(SSL_CTX_set_tlsext_use_srtp(ctx, "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80") == 0)
        #expect(sfu_SSL_CTX_set_min_proto_version(ctx, DTLS1_2_VERSION) == 1)
        let key = try #require(sfu_EC_P256_keygen())
        defer { EVP_PKEY_free(key) }
        #expect(EVP_PKEY_get_bits(key) == 256)
        let ssl = try #require(SSL_new(ctx))
        defer { SSL_free(ssl) }
        #expect(sfu_DTLS_set_link_mtu(ssl, 1200) == 1)
    }
}
