import RTP

/// One outgoing copy of a producer for one subscriber (mediasoup's SimpleConsumer): its own SSRC,
/// sequence numbers, timestamps and payload type, a retransmission buffer for NACKs, and the
/// counters its sender reports need. The packet is written once into the subscriber transport's
/// send buffer with our header and header extensions; the payload is copied, never allocated.
final class Consumer {
    unowned let producer: Producer
    unowned let subscriber: SubscriberConnection
    let mid: String
    let ssrc: UInt32
    let rtxSSRC: UInt32?
    var payloadType: UInt8
    var rtxPayloadType: UInt8?
    /// The subscriber's answer accepted the m-line: media flows.
    var active = false
    /// Paused by mute: packets are dropped without leaving a sequence gap.
    var paused = false
    /// Video waits for a keyframe at start and after a pause, so the decoder never starts mid-stream.
    var waitingForKeyframe: Bool
    var sequence = SeqRewriter<UInt16>(bits: 16)
    var timestampOffset: UInt32 = 0
    var timestampStarted = false
    var rtxSequence = UInt16.random(in: 0...0x7FFF)
    var retransmissions: RetransmissionBuffer?
    var packetsSent: UInt32 = 0
    var octetsSent: UInt32 = 0
    public private(set) var retransmitted = 0
    public private(set) var retransmissionMisses = 0

    init(producer: Producer, subscriber: SubscriberConnection, mid: String) {
        self.producer = producer
        self.subscriber = subscriber
        self.mid = mid
        self.ssrc = UInt32.random(in: 0x1000_0000...0xEFFF_FFFF)
        let video = producer.kind == .video
        self.rtxSSRC = video ? UInt32.random(in: 0x1000_0000...0xEFFF_FFFF) : nil
        self.payloadType = producer.codec.offerPayloadType
        self.rtxPayloadType = producer.codec.offerRTXPayloadType
        self.retransmissions = video ? RetransmissionBuffer(capacity: 512, slotSize: WebRTCTransport.maxPlaintextSize) : nil
        self.waitingForKeyframe = video
    }

    /// Media goes out: the subscriber accepted the m-line, its transport is up, and nothing paused it.
    /// (A keyframe that came while the transport was still connecting must not count as sent.)
    var forwarding: Bool { active && !paused && !producer.muted && subscriber.isConnected }

    /// Forwards one packet of the producer. `packet` is the decrypted publisher packet (read only).
    func forward(_ packet: UnsafeRawBufferPointer, header: RTPHeader, keyframe: Bool, nowNanos: Int64) {
        guard forwarding, header.payloadLength > 0 else {
            skip(header.sequenceNumber)
            return
        }
        if waitingForKeyframe {
            guard keyframe else {
                skip(header.sequenceNumber)
                return
            }
            waitingForKeyframe = false
        }
        if !sequence.hasStarted {
            // Start well below 2^15: libsrtp guesses the rollover counter badly near the wrap.
            sequence.sync(input: header.sequenceNumber, output: UInt16.random(in: 1000...16000))
        }
        guard let outSequence = sequence.input(header.sequenceNumber) else { return }
        if !timestampStarted {
            timestampOffset = UInt32.random(in: 0...UInt32.max) &- header.timestamp
            timestampStarted = true
        }
        let outTimestamp = header.timestamp &+ timestampOffset
        let payload = UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])
        if subscriber.sendMedia(consumer: self, marker: header.marker, payloadType: payloadType, sequenceNumber: outSequence,
                                timestamp: outTimestamp, ssrc: ssrc, payload: payload, nowNanos: nowNanos) {
            packetsSent &+= 1
            octetsSent &+= UInt32(truncatingIfNeeded: payload.count)
        }
    }

    /// An input that produces no output (paused, padding, waiting for a keyframe): later packets close the gap.
    func skip(_ sequenceNumber: UInt16) {
        if sequence.hasStarted { sequence.drop(sequenceNumber) }
    }

    /// Sends what the subscriber NACKed from the retransmission buffer (as RTX when negotiated).
    func retransmit(_ sequenceNumbers: [UInt16], nowNanos: Int64) {
        guard let retransmissions, active else { return }
        var missed = false
        for s in sequenceNumbers {
            let sent = retransmissions.withPacket(sequenceNumber: s, nowNanos: nowNanos) { stored in
                subscriber.sendRetransmission(consumer: self, stored: stored, nowNanos: nowNanos)
            }
            if sent == true {
                retransmitted += 1
            } else {
                retransmissionMisses += 1
                missed = true
            }
        }
        // A packet we cannot resend leaves the subscriber's decoder stuck until the next keyframe: ask for one.
        if missed { producer.requestKeyframe(nowNanos: nowNanos) }
    }

    func pause() {
        paused = true
    }

    func resume(nowNanos: Int64) {
        guard paused else { return }
        paused = false
        if producer.kind == .video {
            waitingForKeyframe = true
            producer.requestKeyframe(nowNanos: nowNanos)
        }
    }

    /// The sender report for this consumer, from the producer's NTP/RTP mapping shifted by our timestamp offset.
    func senderReport(nowNanos: Int64) -> SenderReport? {
        guard timestampStarted, packetsSent > 0, let mapping = producer.rtpTime(atNanos: nowNanos), let ntp = mapping.ntp else { return nil }
        return SenderReport(ssrc: ssrc, ntpTime: ntp, rtpTime: mapping.rtp &+ timestampOffset, packetCount: packetsSent, octetCount: octetsSent)
    }
}
