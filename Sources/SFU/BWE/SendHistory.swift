import RTP

/// One packet's fate, from transport-cc feedback.
package struct PacketResult: Sendable, Equatable {
    package var sequence: Int64
    package var sendNanos: Int64
    package var size: Int
    /// nil: reported lost.
    package var arrivalNanos: Int64?
    /// Part of a probe cluster.
    package var probeCluster: Int?
}

/// What we sent with a transport-wide sequence number, matched against transport-cc feedback
/// (the send side of GCC, as libwebrtc's TransportFeedbackAdapter). Sans-IO; bounded.
package struct SendHistory: Sendable {
    /// 32 bytes: the ring is touched once per packet sent and once per packet reported.
    struct Sent {
        var sequence: Int64 = -1
        var sendNanos: Int64 = 0
        /// The host's write batch it was queued in (``SessionHost/writeBatch``).
        var batch: UInt64 = 0
        var size: Int32 = 0
        /// The probe cluster, -1 for none.
        var probeCluster: Int32 = -1
    }
    /// A ring indexed by sequence number: no allocation per packet. 4,096 packets are 5 s at
    /// 8 Mbit/s; transport-cc feedback comes every 50-100 ms.
    private var sent: [Sent]
    private var unwrapper = SequenceUnwrapper()
    private var feedbackUnwrapper = SequenceUnwrapper()
    package let capacity: Int
    /// The receiver's clock offset is unknown: arrival times are relative to the first feedback's reference.
    private var referenceBaseMicros: Int64?
    private var lastReferenceMicros: Int64 = 0
    private var referenceKnown = false
    /// Feedback comes every 50-250 ms; its reference time moves by about that much.
    static let maxReferenceStepMicros: Int64 = 60_000_000

    package init(capacity: Int = 4096) {
        let c = capacity.roundedUpToPowerOfTwo
        self.capacity = c
        sent = [Sent](repeating: Sent(), count: c)
    }

    /// Records a packet given a transport-wide sequence number, queued at `sendNanos` into the
    /// host's write batch `batch` (``SessionHost/writeBatch``).
    package mutating func onSent(sequence: UInt16, sendNanos: Int64, size: Int, probeCluster: Int? = nil, batch: UInt64 = 0) {
        let s = unwrapper.unwrap(sequence)
        sent[Int(s & Int64(capacity - 1))] = Sent(sequence: s, sendNanos: sendNanos, batch: batch, size: Int32(clamping: size),
                                                   probeCluster: probeCluster.map { Int32(clamping: $0) } ?? -1)
    }

    /// The packets a feedback reports, in sequence order; arrival times on a receiver clock that
    /// only has to be consistent between feedbacks (the estimator uses differences).
    /// - Parameter writtenNanos: when the host wrote a batch to the socket (nil: not known); a
    ///   packet's send time is that of its batch, else when it was queued. The worker writes a
    ///   batch when a read batch or a tick ends: a packet stamped when it was queued would count
    ///   the rest of the batch's processing as path delay.
    package mutating func onFeedback(_ fb: TransportLayerCC, writtenNanos: (UInt64) -> Int64? = { _ in nil }) -> [PacketResult] {
        let statuses = fb.statuses
        // The 24-bit reference time in 64 ms units, unwrapped: the step from the last one folded
        // into ±half the wrap. A step of more than a minute is no feedback of a live stream (the
        // peer chose it): start the unwrapping over from this value and use nothing of this one,
        // so a peer cannot walk the unwrapped time towards overflow.
        let raw = Int64(fb.referenceTime) * 64_000
        let wrap: Int64 = (1 << 24) * 64_000
        var step = (raw - lastReferenceMicros) % wrap
        if step > wrap / 2 { step -= wrap } else if step < -wrap / 2 { step += wrap }
        guard abs(step) <= Self.maxReferenceStepMicros || !referenceKnown else {
            lastReferenceMicros = raw
            return []
        }
        referenceKnown = true
        let referenceMicros = lastReferenceMicros + step
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
            out.append(PacketResult(sequence: s, sendNanos: writtenNanos(packet.batch) ?? packet.sendNanos, size: Int(packet.size), arrivalNanos: arrival,
                                    probeCluster: packet.probeCluster < 0 ? nil : Int(packet.probeCluster)))
        }
        return out
    }
}
