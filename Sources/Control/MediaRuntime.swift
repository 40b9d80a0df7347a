import DTLS
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SFU

/// The media side of the server: the DTLS certificate and context, and the ``MediaWorker``s, each a
/// thread with its own UDP port.
package final class MediaRuntime: Sendable {
    package let workers: [MediaWorker]
    package let dtlsContext: DTLSContext
    package let announcedIP: String?
    private let next = NIOLockedValueBox(0)

    package static func start(config: ServerConfig, logger: Logger) async throws -> MediaRuntime {
        let count = config.workers == 0 ? System.coreCount : config.workers
        let certificate = try DTLSCertificate(commonName: "sfu")
        let context = try DTLSContext(certificate: certificate, profiles: config.srtpProfiles)
        var workers: [MediaWorker] = []
        do {
            for i in 0..<count {
                workers.append(try await MediaWorker.start(index: i, host: config.mediaHost, port: config.mediaPortBase + i,
                                                           tcp: config.tcpListen(worker: i), tcpLimits: config.iceTCPLimits, logger: logger))
            }
        } catch {
            for w in workers { await w.stop() }
            throw error
        }
        logger.notice("DTLS certificate", metadata: ["sha-256": "\(certificate.sha256Fingerprint)",
                                                     "srtp": "\(config.srtpProfiles.map(\.openSSLName))"])
        return MediaRuntime(workers: workers, dtlsContext: context, announcedIP: config.announcedIP)
    }

    init(workers: [MediaWorker], dtlsContext: DTLSContext, announcedIP: String?) {
        self.workers = workers
        self.dtlsContext = dtlsContext
        self.announcedIP = announcedIP
    }

    /// The worker for a new session: round robin (rooms will pin all their peers to one worker).
    package func pickWorker() -> MediaWorker {
        let i = next.withLockedValue { n in
            defer { n += 1 }
            return n
        }
        return workers[i % workers.count]
    }

    /// The host candidates of a worker's port: the announced address when configured, and the bound
    /// address (or, for a wildcard bind, every up interface's address); with ICE-TCP, the same
    /// addresses again on the worker's TCP port, after all the UDP ones.
    package func candidates(for worker: MediaWorker) -> [HostCandidate] {
        let udp = udpCandidates(for: worker)
        guard let tcp = worker.localTCPAddress else { return udp }
        return udp + udp.map { c in
            var t = c
            t.address = TransportAddress(ip: c.address.ip, port: tcp.port, tcp: true)
            return t
        }
    }

    private func udpCandidates(for worker: MediaWorker) -> [HostCandidate] {
        var out: [HostCandidate] = []
        if let announcedIP { out.append(HostCandidate(address: worker.localAddress, announcedHost: announcedIP)) }
        let bound = worker.localAddress
        let unspecified = bound.ip == .v4(0) || bound.ip == .v6(0, 0)
        if !unspecified {
            if announcedIP != bound.host { out.append(HostCandidate(address: bound)) }
        } else {
            for address in localInterfaceAddresses where address.isIPv4 == bound.isIPv4 && address.host != announcedIP {
                out.append(HostCandidate(address: TransportAddress(ip: address.ip, port: bound.port)))
            }
        }
        return out
    }

    /// Addresses of the machine's interfaces (for a wildcard bind), read once.
    let localInterfaceAddresses: [TransportAddress] = {
        let devices = (try? System.enumerateDevices()) ?? []
        var seen: [TransportAddress] = []
        for device in devices {
            guard let a = device.address, let t = TransportAddress(a), !seen.contains(t) else { continue }
            if case .v6(let hi, _) = t.ip, hi >> 48 == 0xFE80 { continue }  // link-local v6 needs a scope
            seen.append(TransportAddress(ip: t.ip, port: 0))
        }
        return seen
    }()

    package func stop() async {
        for w in workers { await w.stop() }
    }
}
