import DTLS
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SFU

/// The echo endpoint's sessions (`/v1/echo`): one ``EchoSession`` per signaling connection.
package struct EchoService: Sendable {
    package let media: MediaRuntime
    package let logger: Logger

    package struct Handle: Sendable {
        package let worker: MediaWorker
        package let ufrag: String
        package let answer: String
    }

    package init(media: MediaRuntime, logger: Logger) {
        self.media = media
        self.logger = logger
    }

    /// Creates a session for `offer` on a worker and returns the answer.
    /// - Throws: ``EchoSession/Error`` for an offer we cannot answer.
    package func open(offer text: String) async throws -> Handle {
        // Parsed here, not on the worker's loop.
        let offer: SessionDescription
        do {
            offer = try SessionDescription(parsing: text)
        } catch {
            throw EchoSession.Error.badOffer("SDP does not parse: \(error)")
        }
        let worker = media.pickWorker()
        let context = media.dtlsContext
        let candidates = media.candidates(for: worker)
        let logger = self.logger
        let (ufrag, answer) = try await worker.submit { () throws -> (String, String) in
            let id = "echo-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
            let session = try EchoSession(offer: offer, dtlsContext: context, candidates: candidates,
                                          nowNanos: MediaWorker.nowNanos, id: id)
            session.sink = worker
            session.onConnect = { [weak session] in
                logger.info("echo connected", metadata: ["session": "\(id)", "remote": "\(session?.transport.remoteAddress.map { "\($0)" } ?? "?")",
                                                          "srtp": "\(session?.transport.dtls.selectedProfile.map { "\($0)" } ?? "?")"])
            }
            session.onClose = { [weak session] reason in
                let stats = session?.transport.statistics ?? TransportStatistics()
                logger.info("echo closed", metadata: ["session": "\(id)", "reason": "\(reason)", "rtp_in": "\(stats.rtpPacketsIn)",
                                                       "rtp_out": "\(stats.rtpPacketsOut)", "replayed": "\(stats.replayed)",
                                                       "auth_failures": "\(stats.authenticationFailures)", "malformed": "\(stats.malformed)"])
            }
            worker.add(session)
            return (session.transport.ice.local.ufrag, session.answer.text)
        }
        return Handle(worker: worker, ufrag: ufrag, answer: answer)
    }

    /// Ends a session (its signaling connection closed).
    package func close(_ handle: Handle) {
        let worker = handle.worker
        let ufrag = handle.ufrag
        worker.execute {
            guard let session = worker.session(ufrag: ufrag) else { return }
            session.transport.close(reason: "signaling closed")
            worker.remove(session)
        }
    }
}
