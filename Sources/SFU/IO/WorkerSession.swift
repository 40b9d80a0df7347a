/// Something a worker drives: it owns one ``WebRTCTransport`` and gets the worker's timer ticks.
package protocol WorkerSession: AnyObject {
    var transport: WebRTCTransport { get }
    /// Called on the worker's loop when the session is removed (closed by either side).
    func workerDidRemove()
    /// Called on the worker's 20 ms tick, when due (``nextTickNanos(after:)``), for periodic work:
    /// RTCP reports, feedback, allocation.
    func tick(nowNanos: Int64)
    /// When the session next needs ``tick(nowNanos:)``, asked after each tick: the worker ticks it
    /// at the first tick at or after that time, or at its transport's next timeout if earlier.
    /// The default, `nowNanos`: every tick.
    func nextTickNanos(after nowNanos: Int64) -> Int64
    /// Called at the time the session asked for with ``SessionHost/wake(_:atNanos:)``.
    func wake(nowNanos: Int64)
}

extension WorkerSession {
    package func tick(nowNanos: Int64) {}
    package func nextTickNanos(after nowNanos: Int64) -> Int64 { nowNanos }
    package func wake(nowNanos: Int64) {}

    /// ICE restart (RFC 8445 section 9) of this session's transport: `local` with new credentials,
    /// the agent restarted with them and `remote` (nil until the peer's are known), the host
    /// routing by the new ufrag. DTLS and SRTP go on.
    /// - Returns: the new local parameters; nil (nothing changed) when the agent could not take them.
    func restartICE(from local: LocalTransportParameters, remote: ICELiteAgent.Credentials?, host: SessionHost) -> LocalTransportParameters? {
        let renewed = LocalTransportParameters(ice: .random(), fingerprint: local.fingerprint, candidates: local.candidates)
        guard transport.ice.restart(local: renewed.ice, remote: remote) else { return nil }
        host.rekey(self, from: local.ice.ufrag)
        return renewed
    }

    /// When a host ticks the session next, asked after a tick: its own next tick or its
    /// transport's next timeout, whichever comes first.
    package func tickDueNanos(after nowNanos: Int64) -> Int64 {
        min(nextTickNanos(after: nowNanos), transport.nextTimeoutNanos ?? .max)
    }
}
