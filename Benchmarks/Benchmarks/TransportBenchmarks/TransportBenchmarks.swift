// Per-packet costs of the transport: SRTP protect + unprotect of a 1200-byte packet (both
// profiles) and STUN binding-request handling by the ICE-lite agent.
// Run: make bench (or `cd Benchmarks && swift package --disable-sandbox benchmark --target TransportBenchmarks`).
import Benchmark
import DTLS
import SFU

func srtpPair(_ profile: SRTPProfile) -> (SRTPSession, SRTPSession) {
    let keys = SRTPKeys(profile: profile, key: secureRandomBytes(profile.keyLength), salt: secureRandomBytes(profile.saltLength))
    guard let out = try? SRTPSession(keys: keys, direction: .outbound), let inbound = try? SRTPSession(keys: keys, direction: .inbound) else {
        fatalError("libsrtp2 session")
    }
    return (out, inbound)
}

func runSRTP(_ benchmark: Benchmark, _ profile: SRTPProfile) {
    let (out, inbound) = srtpPair(profile)
    var buffer = [UInt8](repeating: 0x5A, count: 1200 + SRTPProfile.maxOverhead)
    buffer[0] = 0x80
    buffer[1] = 96
    buffer[8] = 0x12
    var seq: UInt16 = 1
    buffer.withUnsafeMutableBytes { raw in
        guard let base = raw.baseAddress else { return }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            seq &+= 1
            raw[2] = UInt8(seq >> 8)
            raw[3] = UInt8(seq & 0xff)
            guard let protected = try? out.protectRTP(base, length: 1200, capacity: raw.count),
                  case .success(let plain) = inbound.unprotectRTP(base, length: protected) else { fatalError("srtp") }
            blackHole(plain)
        }
        benchmark.stopMeasurement()
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000
    )

    Benchmark("SRTP protect + unprotect, 1200 bytes, AES_CM_128_HMAC_SHA1_80") { benchmark in
        runSRTP(benchmark, .aes128CmHmacSha1_80)
    }

    Benchmark("SRTP protect + unprotect, 1200 bytes, AEAD_AES_128_GCM") { benchmark in
        runSRTP(benchmark, .aeadAes128Gcm)
    }

    Benchmark("STUN binding request handling (parse, check integrity, answer)", configuration: .init(scalingFactor: .one)) { benchmark in
        let local = ICELiteAgent.Credentials(ufrag: "srvU", password: "server-password-0123456789")
        guard let agent = ICELiteAgent(local: local, remote: .init(ufrag: "cliU", password: "client-password-0123456789")),
              let key = HMAC(digest: .sha1, key: Array(local.password.utf8)) else { fatalError("ice") }
        let request = STUNMessage(messageClass: .request, transactionID: secureRandomBytes(12), attributes: [
            STUNMessage.usernameAttribute("srvU:cliU"), STUNMessage.u32Attribute(STUNAttributeType.priority, 0x6e00_01ff),
            STUNMessage.u64Attribute(STUNAttributeType.iceControlling, 42), .init(type: STUNAttributeType.useCandidate, value: []),
        ]).serialized(integrity: key)
        let from = TransportAddress(ipv4: 10, 0, 0, 1, port: 5000)
        request.withUnsafeBytes { raw in
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                let outcome = agent.handle(raw, from: from, nowNanos: 1)
                guard outcome.authenticated else { fatalError("not authenticated") }
                blackHole(outcome.response)
            }
            benchmark.stopMeasurement()
        }
    }
}
