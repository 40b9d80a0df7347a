import DTLS
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import RTP
import SFU

/// Delivers webhook events (room_started, room_finished, participant_joined, participant_left,
/// recording_started, recording_finished) to the configured URLs: JSON body
/// `{"id", "event", "created_at", "data"}`, signed with HMAC-SHA256 of the API secret in
/// `X-SFU-Signature: sha256=<hex>`, retried with exponential backoff on a network error or a
/// non-2xx answer. Enqueueing never waits for delivery: a bounded queue, drained by one task per
/// URL, so a slow or dead receiver never blocks the caller (or media).
public actor WebhookDispatcher {
    public struct Configuration: Sendable {
        public var urls: [URL]
        public var secret: String
        public var maxAttempts = 6
        public var initialBackoffSeconds = 0.5
        public var maxQueued = 1000
        public var timeoutSeconds = 5.0
        public init(urls: [URL], secret: String) {
            self.urls = urls
            self.secret = secret
        }
    }

    struct Delivery: Sendable {
        var url: URL
        var body: Data
        var signature: String
        var event: String
        var id: String
    }

    public let configuration: Configuration
    let logger: Logger
    private var queues: [URL: [Delivery]] = [:]
    private var running: Set<URL> = []
    public private(set) var delivered = 0
    public private(set) var failed = 0
    public private(set) var dropped = 0

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Queues `event` for every URL and returns at once.
    public func send(_ webhook: WebhookEvent) {
        guard !configuration.urls.isEmpty else { return }
        let id = ResourceID.webhook.make()
        let event = webhook.name
        guard let body = try? webhook.body(id: id, createdAtMillis: MetadataStore.nowMillis) else {
            logger.error("webhook body is not JSON", metadata: ["event": "\(event)"])
            return
        }
        let mac = HMAC(digest: .sha256, key: Array(configuration.secret.utf8))?.authenticate([UInt8](body)) ?? []
        let signature = "sha256=" + hexString(mac)
        for url in configuration.urls {
            var queue = queues[url, default: []]
            if queue.count >= configuration.maxQueued {
                queue.removeFirst()
                dropped += 1
                logger.warning("webhook queue full; oldest event dropped", metadata: ["url": "\(url)"])
            }
            queue.append(Delivery(url: url, body: body, signature: signature, event: event, id: id))
            queues[url] = queue
            if !running.contains(url) {
                running.insert(url)
                Task { await self.drain(url) }
            }
        }
    }

    private func next(_ url: URL) -> Delivery? {
        guard var queue = queues[url], !queue.isEmpty else {
            running.remove(url)
            return nil
        }
        let d = queue.removeFirst()
        queues[url] = queue
        return d
    }

    private func drain(_ url: URL) async {
        while let delivery = next(url) {
            let ok = await deliver(delivery)
            if ok { delivered += 1 } else { failed += 1 }
        }
    }

    /// Pending deliveries (all URLs).
    public var pending: Int { queues.values.reduce(0) { $0 + $1.count } }

    private func deliver(_ d: Delivery) async -> Bool {
        var delay = configuration.initialBackoffSeconds
        for attempt in 1...configuration.maxAttempts {
            var request = URLRequest(url: d.url, timeoutInterval: configuration.timeoutSeconds)
            request.httpMethod = "POST"
            request.httpBody = d.body
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.setValue(d.signature, forHTTPHeaderField: "X-SFU-Signature")
            request.setValue(d.event, forHTTPHeaderField: "X-SFU-Event")
            request.setValue(d.id, forHTTPHeaderField: "X-SFU-Delivery")
            do {
                let (_, response) = try await URLSession.shared.data(for: request)
                let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                if (200..<300).contains(status) { return true }
                logger.warning("webhook answered \(status)", metadata: ["url": "\(d.url)", "event": "\(d.event)", "attempt": "\(attempt)"])
            } catch {
                logger.warning("webhook delivery failed", metadata: ["url": "\(d.url)", "event": "\(d.event)", "attempt": "\(attempt)", "error": "\(error)"])
            }
            if attempt < configuration.maxAttempts {
                try? await Task.sleep(for: .seconds(delay))
                delay = min(delay * 2, 30)
            }
        }
        logger.error("webhook given up", metadata: ["url": "\(d.url)", "event": "\(d.event)", "id": "\(d.id)"])
        return false
    }
}
