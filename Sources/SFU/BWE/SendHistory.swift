import RTP

/// One packet's fate, from transport-cc feedback.
public struct PacketResult: Sendable, Equatable {
    public var sequence: Int64
    public var sendNanos: Int64
    public var size: Int
    /// nil: reported lost.
    public var arrivalNanos: Int64?
    /// Part of a probe cluster.
    public var probeCluster: Int?
}

/// What we sent with a transport-wide sequence number, matched against transport-cc feedback
/// (the send side of GCC, as libwebrtc's TransportFeedbackAdapter). Sans-IO; bounded.
public struct SendHistory: Sendable {
    struct Sent {
        var sequence: Int64 = -1
        var sendNanos: Int64 = 0
        var size: Int = 0
        var probeCluster: Int?
    }
    /// A ring indexed by sequence number: no allocation per packet.
    private var sent: [Sent]
    private var unwrapper = SequenceUnwrapper()
    private var feedbackUnwrapper = SequenceUnwrapper()
    public let capacity: Int
    /// The receiver's clock offset is unknown: arrival times are relative to the first feedback's reference.
    private var referenceBaseMicros: Int64?
    private var lastReferenceMicros: Int64 = 0
    /// The packets recorded since the last ``markWritten(nowNanos:)`` (unwrapped, first and last):
    /// queued, not yet handed to the socket.
    private var unwritten: (first: Int64, last: Int64)?

    public init(capacity: Int = 8192) {
        self.capacity = capacity
        sent = [Sent](repeating: Sent(), count: capacity)
    }

    /// Records a packet given a transport-wide sequence number, queued at `sendNanos`; a later
    /// ``markWritten(nowNanos:)`` replaces that with when it left.
    public mutating func onSent(sequence: UInt16, sendNanos: Int64, size: Int, probeCluster: Int? = nil) {
        let s = unwrapper.unwrap(sequence)
        sent[Int(s & Int64(capacity - 1))] = Sent(sequence: s, sendNanos: sendNanos, size: size, probeCluster: probeCluster)
        unwritten = (unwritten?.first ?? s, s)
    }

    /// The packets recorded since the last call were written to the socket at `nowNanos` (the
    /// worker writes a batch when a read batch or a tick ends): that is their send time. A packet
    /// stamped when it was queued would count the rest of the batch's processing as path delay.
    public mutating func markWritten(nowNanos: Int64) {
        guard let range = unwritten else { return }
        unwritten = nil
        var s = max(range.first, range.last - Int64(capacity) + 1)
        while s <= range.last {
            let slot = Int(s & Int64(capacity - 1))
            if sent[slot].sequence == s { sent[slot].sendNanos = nowNanos }
            s += 1
        }
    }

    /// The packets a feedback reports, in sequence order; arrival times on a receiver clock that
    /// only has to be consistent between feedbacks (the estimator uses differences).
    public mutating func onFeedback(_ fb: TransportLayerCC) -> [PacketResult] {
        let statuses = fb.statuses
        // The 24-bit reference time in 64 ms units, unwrapped.
        var referenceMicros = Int64(fb.referenceTime) * 64_000
        let wrap: Int64 = (1 << 24) * 64_000
        while referenceMicros - lastReferenceMicros < -wrap / 2 { referenceMicros += wrap }
        while referenceMicros - lastReferenceMicros > wrap / 2 { referenceMicros -= wrap }
        lastReferenceMicros = referenceMicros
        var arrivalMicros = referenceMicros
        var deltaIndex = 0
        var out: [PacketResult] = []
        let base = feedbackUnwrapper.unwrap(fb.baseSequenceNumber)
        for (i, status) in statuses.enumerated() {
            // Map the feedback's sequence space onto ours: same 16-bit numbers.
            let seq16 = UInt16(truncatingIfNeeded: base + Int64(i))
            var arrival: Int64?
            if status == 1 || status == 2, deltaIndex < fb.recvDeltas.count {
                arrivalMicros += Int64(fb.recvDeltas[deltaIndex]) * 250
                deltaIndex += 1
                arrival = arrivalMicros * 1000
            }
            var probe = unwrapper
            let s = probe.unwrap(seq16)
            let slot = Int(s & Int64(capacity - 1))
            guard s >= 0, sent[slot].sequence == s else { continue }
            let packet = sent[slot]
            sent[slot].sequence = -1
            out.append(PacketResult(sequence: s, sendNanos: packet.sendNanos, size: packet.size, arrivalNanos: arrival,
                                    probeCluster: packet.probeCluster))
        }
        return out
    }
}
