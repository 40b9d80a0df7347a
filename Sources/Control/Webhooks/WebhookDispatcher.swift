import AsyncHTTPClient
import DTLS
import Foundation
import Logging
import NIOCore
import RTP
import SFU

/// Delivers webhook events (docs/API.md "Webhooks") through an outbox in the metadata store, so
/// that none is lost to a crash, a restart or a receiver that is down for hours:
/// - ``record(_:_:)`` writes the audit event and one delivery per URL in one transaction
///   (``MetadataStore/appendEvent(_:outbox:)``) and returns: the caller never waits for a receiver;
/// - one worker per URL sends that URL's deliveries in the order they were written (a delivery that
///   fails holds the ones after it, so a receiver sees each room's events in order), retrying with
///   backoff (0.5 s doubling to 30 s) for up to 24 h after the event, across restarts (the worker
///   starts from the outbox); then the delivery is given up (counted, logged, kept in the outbox);
/// - each attempt is signed over its time and the body: `SFU-Signature: t=<unix>,v1=<hex
///   HMAC-SHA256(secret, "<t>.<body>")>` (and, as before, `X-SFU-Signature: sha256=<hex HMAC of the
///   body>`); the body's `id` (also `X-SFU-Delivery`) is the same on every attempt, for de-duplication.
/// Requests go out through async-http-client's shared client.
package actor WebhookDispatcher {
    package struct Configuration: Sendable {
        package var urls: [URL]
        package var secret: String
        package var initialBackoffSeconds = 0.5
        package var maxBackoffSeconds = 30.0
        /// How long after its event a delivery is still tried.
        package var retryForSeconds = 86_400.0
        package var timeoutSeconds = 5.0
        /// Deliveries read from the outbox at a time, per URL.
        package var batch = 50
        package init(urls: [URL], secret: String) {
            self.urls = urls
            self.secret = secret
        }
    }

    package let configuration: Configuration
    let store: MetadataStore
    let logger: Logger
    /// Milliseconds since the Unix epoch (a test's clock may be another).
    let clock: @Sendable () -> Int64
    package private(set) var delivered = 0
    package private(set) var failed = 0
    /// Events whose outbox write failed (the store was down past its retry window): not delivered.
    package private(set) var lost = 0
    private var workers: [Task<Void, Never>] = []
    /// Each URL's worker waits on its own signal (new events wake them all).
    private let signals: [String: WakeSignal]
    private var stopped = false

    /// What is read of a receiver's answer.
    static let maxResponseBytes = 64 * 1024
    /// Delivered or given-up rows are kept this long (then purged, hourly).
    static let keepEndedMillis: Int64 = 7 * 86_400_000

    package init(configuration: Configuration, store: MetadataStore, logger: Logger,
                 clock: @escaping @Sendable () -> Int64 = { MetadataStore.nowMillis }) {
        var configuration = configuration
        // A URL listed twice is one receiver: one worker, one delivery per event.
        var seen: Set<String> = []
        configuration.urls = configuration.urls.filter { seen.insert($0.absoluteString).inserted }
        signals = Dictionary(uniqueKeysWithValues: configuration.urls.map { ($0.absoluteString, WakeSignal()) })
        self.configuration = configuration
        self.store = store
        self.logger = logger
        self.clock = clock
    }

    /// Starts one worker per URL: they deliver what the outbox holds (from before a restart too).
    package func start() {
        guard workers.isEmpty, !stopped else { return }
        for url in configuration.urls {
            let key = url.absoluteString
            workers.append(Task { await self.work(key) })
        }
        workers.append(Task { await self.purge() })
    }

    /// Stops the workers (what is left stays in the outbox for the next start).
    package func stop() {
        stopped = true
        for w in workers { w.cancel() }
        workers.removeAll()
        for signal in signals.values { signal.wake() }
    }

    /// Writes `event` to the audit trail and `webhook` to the outbox for every URL, in one
    /// transaction, and wakes the workers. Throws what the store throws (the event is then in
    /// neither).
    package func record(_ event: RoomEvent?, _ webhook: WebhookEvent) async throws {
        let id = ResourceID.webhook.make()
        let now = clock()
        guard let body = try? webhook.body(id: id, createdAtMillis: now) else {
            logger.error("webhook body is not JSON", metadata: ["event": "\(webhook.name)"])
            if let event { try await store.appendEvent(event) }
            return
        }
        let text = String(decoding: body, as: UTF8.self)
        let rows = configuration.urls.map {
            OutboxDelivery(id: id, url: $0.absoluteString, roomID: webhook.roomID, event: webhook.name, body: text, createdAt: now)
        }
        do {
            try await store.appendEvent(event, outbox: rows)
        } catch {
            lost += 1
            logger.error("webhook not written to the outbox: not delivered", metadata: ["event": "\(webhook.name)", "error": "\(error)"])
            throw error
        }
        wake()
    }

    /// Webhook-only events (no audit event goes with them).
    package func send(_ webhook: WebhookEvent) async {
        try? await record(nil, webhook)
    }

    /// Deliveries waiting in the outbox (all URLs); nil when the store cannot say.
    package func pending() async -> Int? { try? await store.pendingDeliveryCount() }

    // MARK: workers

    private func wake() {
        for signal in signals.values { signal.wake() }
    }

    /// Sleeps up to `millis`, or until ``wake()`` (a wake that came while the worker was busy ends
    /// the next nap at once).
    private func nap(_ url: String, millis: Int64) async {
        guard !stopped else { return }
        await signals[url]?.sleep(millis: millis)
    }

    /// Delivers `url`'s outbox in order, for as long as the dispatcher runs.
    private func work(_ url: String) async {
        while !stopped, !Task.isCancelled {
            let rows: [OutboxDelivery]
            do {
                rows = try await store.pendingDeliveries(url: url, limit: configuration.batch)
            } catch {
                logger.warning("webhook outbox unreadable; retrying", metadata: ["url": "\(url)", "error": "\(error)"])
                await nap(url, millis: 2_000)
                continue
            }
            guard !rows.isEmpty else {
                await nap(url, millis: 60_000)
                continue
            }
            for var row in rows {
                guard !stopped, !Task.isCancelled else { return }
                let now = clock()
                if Double(now - row.createdAt) > configuration.retryForSeconds * 1000 {
                    failed += 1
                    try? await store.recordAttempt(id: row.id, url: url, attempts: row.attempts, givenUpAt: now,
                                                   error: "no delivery within \(Int(configuration.retryForSeconds)) s")
                    logger.error("webhook given up", metadata: ["url": "\(url)", "event": "\(row.event)", "id": "\(row.id)", "attempts": "\(row.attempts)"])
                    continue
                }
                if row.nextAttemptAt > now {
                    // The head waits for its retry time; the ones behind it wait with it.
                    await nap(url, millis: row.nextAttemptAt - now)
                    break
                }
                let outcome = await attempt(row)
                row.attempts += 1
                do {
                    switch outcome {
                    case .delivered:
                        delivered += 1
                        try await store.recordAttempt(id: row.id, url: url, attempts: row.attempts, deliveredAt: clock())
                        continue
                    case .refused(let why):
                        // The receiver will never take it (a 4xx other than 408/429): retrying would only
                        // hold every later event to this URL back.
                        failed += 1
                        try await store.recordAttempt(id: row.id, url: url, attempts: row.attempts, givenUpAt: clock(), error: why)
                        logger.error("webhook refused by the receiver; given up", metadata: ["url": "\(url)", "event": "\(row.event)", "id": "\(row.id)",
                                                                                             "error": "\(why)"])
                        continue
                    case .failed(let why):
                        let delay = Backoff.seconds(afterAttempt: row.attempts, first: configuration.initialBackoffSeconds, cap: configuration.maxBackoffSeconds)
                        try await store.recordAttempt(id: row.id, url: url, attempts: row.attempts, nextAttemptAt: clock() + Int64(delay * 1000), error: why)
                        logger.warning("webhook delivery failed", metadata: ["url": "\(url)", "event": "\(row.event)", "attempt": "\(row.attempts)",
                                                                             "error": "\(why)", "retry_in_s": "\(delay)"])
                    }
                } catch {
                    // The outcome could not be written: wait before reading the outbox again (never a tight loop).
                    logger.warning("webhook outbox not updated; retrying", metadata: ["url": "\(url)", "error": "\(error)"])
                    await nap(url, millis: 2_000)
                }
                break
            }
        }
    }

    enum Outcome: Equatable {
        case delivered
        /// A 4xx other than 408 and 429: the receiver will not take this delivery.
        case refused(String)
        /// Anything else (5xx, 408, 429, no answer): tried again.
        case failed(String)
    }

    /// One POST and what came of it.
    private func attempt(_ d: OutboxDelivery) async -> Outcome {
        let body = Array(d.body.utf8)
        let t = clock() / 1000
        var request = HTTPClientRequest(url: d.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "SFU-Signature", value: Self.signature(secret: configuration.secret, unixTime: t, body: body))
        request.headers.add(name: "X-SFU-Signature", value: "sha256=" + Self.hmacHex(configuration.secret, body))
        request.headers.add(name: "X-SFU-Event", value: d.event)
        request.headers.add(name: "X-SFU-Delivery", value: d.id)
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .milliseconds(Int64(configuration.timeoutSeconds * 1000)))
            // The receiver's answer is not used; read (a bounded part of) it so the connection can be reused.
            _ = try? await response.body.collect(upTo: Self.maxResponseBytes)
            let status = Int(response.status.code)
            if (200..<300).contains(status) { return .delivered }
            if (400..<500).contains(status), status != 408, status != 429 { return .refused("answered \(status)") }
            return .failed("answered \(status)")
        } catch {
            return .failed("\(error)")
        }
    }

    /// `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: what a receiver recomputes to verify
    /// a delivery and the time it was sent (docs/API.md "Webhooks": replay window).
    package static func signature(secret: String, unixTime: Int64, body: [UInt8]) -> String {
        "t=\(unixTime),v1=" + hmacHex(secret, Array("\(unixTime).".utf8) + body)
    }

    static func hmacHex(_ secret: String, _ message: [UInt8]) -> String {
        hexString(HMAC(digest: .sha256, key: Array(secret.utf8))?.authenticate(message) ?? [])
    }

    /// Forgets ended deliveries after a week, at start and hourly.
    private func purge() async {
        while !stopped, !Task.isCancelled {
            try? await store.purgeDeliveries(endedBefore: clock() - Self.keepEndedMillis)
            try? await Task.sleep(for: .seconds(3600))
        }
    }
}

/// Appends an audit event and, with webhooks configured, its webhook in the same transaction.
package enum EventLog {
    package static func append(_ event: RoomEvent, webhook: WebhookEvent?, store: MetadataStore, webhooks: WebhookDispatcher?) async throws {
        if let webhook, let webhooks {
            try await webhooks.record(event, webhook)
        } else {
            try await store.appendEvent(event)
        }
    }
}
