import RTP

/// One outgoing copy of a producer for one subscriber (mediasoup's Simple and SimulcastConsumer):
/// its own SSRC, sequence numbers, timestamps and payload type, a record of what it sent for NACKs
/// (the payloads stay in the producer's retransmission store, once for all consumers), and the
/// counters its sender reports need. The packet is written once into the subscriber
/// transport's send buffer with our header and header extensions; the payload is copied, never
/// allocated.
///
/// Layers: the consumer forwards one stream of the producer (`currentSpatial`) and moves to the
/// `targetSpatial` one only at a keyframe of it, splicing sequence numbers, timestamps (through the
/// streams' sender reports), VP8 picture ids and TL0PICIDX so the subscriber sees one continuous
/// stream. VP8 temporal layers above `currentTemporal` are dropped; going up waits for a
/// layer-sync frame.
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
    /// Paused by the allocator: the subscriber's downlink cannot carry even the lowest layer.
    var allocationPaused = false
    /// The stream being forwarded (spatial layer), nil before the first keyframe.
    var currentSpatial: Int?
    /// The stream the allocator chose; the switch happens at its next keyframe.
    var targetSpatial = 0
    /// Temporal layers forwarded (VP8 TID ≤ this) and the one the allocator chose.
    var currentTemporal = 3
    var targetTemporal = 3
    /// Caps from the subscriber (`set_layer`).
    var maxSpatial: Int?
    var maxTemporal: Int?
    var pictureIDs = SeqRewriter<UInt16>(bits: 15)
    var tl0PicIdx = SeqRewriter<UInt8>(bits: 8)
    var lastOutTimestamp: UInt32 = 0
    var lastSentNanos: Int64 = 0
    package private(set) var layerSwitches = 0
    /// The last packet seen of the current stream (forwarded or not): a jump of more than a second
    /// of media is a discontinuity (``resyncs``).
    private var lastInput: (sequence: UInt16, timestamp: UInt32)?
    /// Times the current stream jumped over more than a second of packets that never came (the
    /// publisher's path was down: a network change, an ICE restart): instead of forwarding the hole,
    /// which no retransmission can fill and which a receiver's jitter buffer may wait on for hundreds
    /// of packets (aiortc: 512), the consumer waits for a keyframe and continues the output sequence
    /// from there without a gap, as at a layer switch.
    package private(set) var resyncs = 0
    /// The input sequence number of the keyframe the current segment started at (``splice``): an
    /// older packet of the stream (a late retransmission of what was lost before a resync or a
    /// switch) would map onto output numbers already used, and is not forwarded.
    private var segmentStart: UInt16?
    /// Switching down because the current layer no longer fits the downlink: its packets are
    /// dropped until the target's keyframe (a short freeze instead of flooding the bottleneck).
    private(set) var dropCurrentWhileSwitching = false
    /// What this consumer forwards, bits/s, and video frames a second (packets with the marker bit).
    var rate = RateMeter()
    var frameRate = EventRate()
    /// Video waits for a keyframe at start and after a pause, so the decoder never starts mid-stream.
    var waitingForKeyframe: Bool
    var sequence = SeqRewriter<UInt16>(bits: 16)
    var timestampOffset: UInt32 = 0
    var timestampStarted = false
    var rtxSequence = UInt16.random(in: 0...0x7FFF)
    /// What went out under each of the last `sentCapacity` output sequence numbers (video only):
    /// where its payload is in the producer's store and the header fields and VP8 ids this copy
    /// had, so that a NACKed packet is rebuilt as it was sent.
    struct SentPacket {
        var sequence: UInt16 = 0
        var inputSequence: UInt16 = 0
        var spatial: UInt8 = 0
        var marker = false
        var payloadType: UInt8 = 0
        var timestamp: UInt32 = 0
        var pictureID: UInt16?
        var tl0PicIdx: UInt8?
        /// The transport-wide sequence number it carried (nil: transport-cc not negotiated). A
        /// resend without RTX carries it again, so the packet is byte-identical: SRTP then derives
        /// the same IV for the same plaintext (a different header under the same SSRC and sequence
        /// number would reuse an AES-GCM nonce).
        var transportSequence: UInt16?
        /// When it was sent (.min: nothing in this slot; .max: still in the pacer's queue), and last resent.
        var nanos: Int64 = .min
        var resentNanos: Int64 = .min
    }
    private var sentPackets: [SentPacket]
    static let sentCapacity = 512
    /// NACKs for packets sent longer ago than this are not answered (a miss: the subscriber gets a
    /// keyframe instead). Not 1-2 s as libwebrtc's and mediasoup's senders keep: a receiver that
    /// asks late still waits for the packet. aiortc asks again for a lost resend only at its next new
    /// gap (2.6 s later in a CI run at 5 % loss) and keeps missing numbers for 128 packets, and its
    /// jitter buffer holds 512 packets behind a missing one (~11 s of a 44 packets/s stream) before it
    /// gives up, keyframes or not. What is answered is still bounded by the producer's store (512
    /// packets per stream), once per round trip per packet and the retransmission budget.
    static let maxRetransmissionAgeNanos: Int64 = 5_000_000_000
    var packetsSent: UInt32 = 0
    var octetsSent: UInt32 = 0
    package private(set) var retransmitted = 0
    package private(set) var retransmissionMisses = 0
    /// The output sequence number of the keyframe the forwarded stream started at (last splice).
    /// Packets before it belong to a stream the subscriber's decoder has left behind: a NACK for one
    /// is not answered (at a switch down the resends would crowd the bottleneck that forced it, and
    /// the new layer's keyframe with them).
    var spliceSequence: UInt16?
    /// NACKed packets not resent because they belong to a stream left behind (or being left).
    package private(set) var retransmissionsSkipped = 0
    /// NACKed packets not resent because they were resent less than an RTT ago, or because the
    /// subscriber's retransmission budget was spent (``SubscriberConnection/retransmissionBudget``).
    package private(set) var retransmissionsThrottled = 0
    /// A packet is resent at most once per round trip (this when the RTT is not known yet), so
    /// repeated NACKs for it (one datagram can name the same number hundreds of times) cost nothing.
    static let defaultResendIntervalNanos: Int64 = 100_000_000
    static let resendIntervalRange: ClosedRange<Int64> = 10_000_000...1_000_000_000

    init(producer: Producer, subscriber: SubscriberConnection, mid: String) {
        self.producer = producer
        self.subscriber = subscriber
        self.mid = mid
        self.ssrc = UInt32.random(in: 0x1000_0000...0xEFFF_FFFF)
        let video = producer.kind == .video
        self.rtxSSRC = video ? UInt32.random(in: 0x1000_0000...0xEFFF_FFFF) : nil
        self.payloadType = producer.codec.offerPayloadType
        self.rtxPayloadType = producer.codec.offerRTXPayloadType
        self.sentPackets = video ? [SentPacket](repeating: SentPacket(), count: Self.sentCapacity) : []
        self.waitingForKeyframe = video
    }

    /// Media goes out: the subscriber accepted the m-line, its transport is up, and nothing paused it.
    /// (A keyframe that came while the transport was still connecting must not count as sent.)
    var forwarding: Bool { active && !paused && !allocationPaused && !producer.muted && subscriber.isConnected }

    /// Forwards one packet of the producer's `stream`. `packet` is the decrypted publisher packet (read only).
    func forward(_ packet: UnsafeRawBufferPointer, header: RTPHeader, stream: ProducerStream, info: FrameInfo, nowNanos: Int64) {
        let spatial = stream.spatial
        let current = spatial == currentSpatial
        guard current || spatial == targetSpatial else { return }  // another layer: not ours
        guard forwarding, header.payloadLength > 0 else {
            if current { skip(header.sequenceNumber) }
            return
        }
        if current, producer.kind == .video {
            let ahead = lastInput.map { Int16(bitPattern: header.sequenceNumber &- $0.sequence) }
            if !waitingForKeyframe {
                if let start = segmentStart, Int16(bitPattern: header.sequenceNumber &- start) < 0 { return }
                if let ahead, ahead > 1, let last = lastInput,
                   Int64(Int32(bitPattern: header.timestamp &- last.timestamp)) > Int64(producer.clockRate) {
                    waitingForKeyframe = true
                    resyncs += 1
                    subscriber.room.logger.debug("stream discontinuity: waiting for a keyframe", metadata: [
                        "peer": "\(subscriber.participant.peer.peerID)", "track": "\(producer.trackID)",
                        "missing": "\(ahead - 1)", "t_ms": "\(nowNanos / 1_000_000)"])
                }
            }
            if (ahead ?? 1) > 0 { lastInput = (header.sequenceNumber, header.timestamp) }
        }
        var spliced = false
        if spatial == targetSpatial && (!current || waitingForKeyframe) {
            // Starting, resuming or switching: only at a keyframe of the target stream, and one that
            // came in order. A retransmitted keyframe is older than packets already gone by (skipped
            // while waiting): splicing there would leave holes the subscriber waits on in vain. After
            // a publisher's move its NACKed packets of the dead path come back this way, an old
            // keyframe among them; the live keyframe asked for comes next.
            guard (info.keyframe && !info.retransmission) || producer.kind == .audio else {
                if current { skip(header.sequenceNumber) }
                producer.requestKeyframe(stream: stream, nowNanos: nowNanos)
                return
            }
            splice(to: stream, header: header, info: info, nowNanos: nowNanos)
            spliced = true
        } else if waitingForKeyframe || (dropCurrentWhileSwitching && spatial != targetSpatial) {
            // The current stream while the target's keyframe is awaited after a pause, or while
            // switching down from a layer the downlink cannot carry.
            skip(header.sequenceNumber)
            if let pid = info.vp8?.pictureID, pictureIDs.hasStarted { pictureIDs.drop(pid) }
            return
        }
        // Temporal layers: change at the start of a frame; up only at a layer-sync frame.
        if info.frameStart {
            if targetTemporal < currentTemporal {
                currentTemporal = targetTemporal
            } else if targetTemporal > currentTemporal, info.layerSync || info.keyframe, Int(info.temporal) <= targetTemporal {
                currentTemporal = targetTemporal
            }
        }
        if Int(info.temporal) > currentTemporal {
            skip(header.sequenceNumber)
            if let pid = info.vp8?.pictureID, pictureIDs.hasStarted { pictureIDs.drop(pid) }
            return
        }
        guard let outSequence = sequence.input(header.sequenceNumber) else { return }
        if spliced { spliceSequence = outSequence }
        let outTimestamp = header.timestamp &+ timestampOffset
        var vp8: SubscriberConnection.VP8Rewrite?
        if let d = info.vp8 {
            vp8 = (d, d.pictureID.flatMap { pictureIDs.input($0) }, d.tl0PicIdx.flatMap { tl0PicIdx.input($0) })
        }
        let payload = UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])
        let outcome = subscriber.sendMedia(consumer: self, marker: header.marker, payloadType: payloadType, sequenceNumber: outSequence,
                                           timestamp: outTimestamp, ssrc: ssrc, payload: payload, vp8: vp8, nowNanos: nowNanos)
        let transportSequence: UInt16?
        switch outcome {
        case .failed: return
        case .queued: transportSequence = nil
        case .sent(let seq): transportSequence = seq
        }
        packetsSent &+= 1
        octetsSent &+= UInt32(truncatingIfNeeded: payload.count)
        rate.add(payload.count + 12, nowNanos: nowNanos)
        if header.marker, vp8 != nil || producer.kind == .video { frameRate.add(nowNanos: nowNanos) }
        if Int32(bitPattern: outTimestamp &- lastOutTimestamp) > 0 || packetsSent == 1 { lastOutTimestamp = outTimestamp }
        lastSentNanos = nowNanos
        if !sentPackets.isEmpty {
            sentPackets[Int(outSequence) & (Self.sentCapacity - 1)] = SentPacket(
                sequence: outSequence, inputSequence: header.sequenceNumber, spatial: UInt8(truncatingIfNeeded: spatial), marker: header.marker,
                payloadType: payloadType, timestamp: outTimestamp, pictureID: vp8?.pictureID, tl0PicIdx: vp8?.tl0PicIdx,
                transportSequence: transportSequence, nanos: outcome == .queued ? .max : nowNanos)
        }
    }

    /// The pacer let a queued packet go (``SubscriberConnection/releasePaced(nowNanos:)``): its
    /// record gets the transport-wide number it carried and its send time.
    func released(sequence: UInt16, transportSequence: UInt16?, nowNanos: Int64) {
        guard !sentPackets.isEmpty else { return }
        let slot = Int(sequence) & (Self.sentCapacity - 1)
        guard sentPackets[slot].sequence == sequence, sentPackets[slot].nanos == .max else { return }
        sentPackets[slot].transportSequence = transportSequence
        sentPackets[slot].nanos = nowNanos
    }

    /// Starts on `stream` at its keyframe (`header`): the output continues from the last packet
    /// sent, whichever stream it came from (DESIGN.md: seq = last + 1, timestamps aligned through the
    /// streams' SR NTP times, else arrival time; picture id and TL0PICIDX continue).
    func splice(to stream: ProducerStream, header: RTPHeader, info: FrameInfo, nowNanos: Int64) {
        let previous = currentSpatial.map { producer.streams[$0] }
        if !sequence.hasStarted {
            // Start well below 2^15: libsrtp guesses the rollover counter badly near the wrap.
            sequence.sync(input: header.sequenceNumber, output: UInt16.random(in: 1000...16000))
        } else {
            sequence.sync(nextInput: header.sequenceNumber, gap: 1)
        }
        if !timestampStarted {
            timestampOffset = UInt32.random(in: 0...UInt32.max) &- header.timestamp
            timestampStarted = true
        } else if let previous, previous !== stream {
            let elapsed = MediaClock.ticks(nanos: max(1, (stream.lastPacketNanos ?? lastSentNanos) - lastSentNanos), clockRate: producer.clockRate)
            let byArrival = lastOutTimestamp &+ UInt32(truncatingIfNeeded: max(1, elapsed))
            var out = byArrival
            if let mapped = previous.timestamp(mapping: header.timestamp, from: stream, clockRate: producer.clockRate) {
                let candidate = mapped &+ timestampOffset
                // Trust the SR mapping when it moves forward by less than a second.
                let step = Int64(Int32(bitPattern: candidate &- lastOutTimestamp))
                if step > 0 && step < Int64(producer.clockRate) { out = candidate }
            }
            timestampOffset = out &- header.timestamp
        }
        if let d = info.vp8 {
            if let pid = d.pictureID {
                if pictureIDs.hasStarted { pictureIDs.sync(nextInput: pid, gap: 1) } else { pictureIDs.sync(input: pid, output: pid) }
            }
            if let t = d.tl0PicIdx {
                if tl0PicIdx.hasStarted { tl0PicIdx.sync(nextInput: t, gap: 1) } else { tl0PicIdx.sync(input: t, output: t) }
            }
        }
        if currentSpatial != nil && currentSpatial != stream.spatial {
            layerSwitches += 1
            subscriber.room.logger.debug("layer switch", metadata: ["peer": "\(subscriber.participant.peer.peerID)", "t_ms": "\(nowNanos / 1_000_000)",
                                                                    "from": "\(currentSpatial ?? -1)", "to": "\(stream.spatial)"])
        }
        currentSpatial = stream.spatial
        currentTemporal = targetTemporal
        lastInput = (header.sequenceNumber, header.timestamp)
        segmentStart = header.sequenceNumber
        waitingForKeyframe = false
        dropCurrentWhileSwitching = false
    }

    /// The producer's path was down (its publisher moved to a new address): what it lost will not
    /// come, so the output continues from the next keyframe without the hole (``resyncs``).
    func resync(nowNanos: Int64) {
        guard producer.kind == .video, forwarding, currentSpatial != nil, !waitingForKeyframe else { return }
        waitingForKeyframe = true
        resyncs += 1
        requestKeyframe(nowNanos: nowNanos)
    }

    /// An input that produces no output (paused, padding, waiting for a keyframe): later packets close the gap.
    func skip(_ sequenceNumber: UInt16) {
        if sequence.hasStarted { sequence.drop(sequenceNumber) }
    }

    /// The highest spatial layer the subscriber allows (its `set_layer` cap) that the producer has.
    var spatialCeiling: Int { min(producer.streams.count - 1, maxSpatial ?? Int.max) }

    /// The allocator's choice. A new spatial target asks the publisher for a keyframe on it.
    /// `dropCurrent`: going down from a layer far over the budget, stop forwarding it now rather
    /// than at the target's keyframe.
    func setTarget(spatial: Int, temporal: Int, dropCurrent: Bool = false, nowNanos: Int64) {
        let spatial = min(max(spatial, 0), producer.streams.count - 1)
        targetTemporal = min(max(temporal, 0), 3)
        if spatial == currentSpatial { dropCurrentWhileSwitching = false }
        if dropCurrent, let current = currentSpatial, spatial < current { dropCurrentWhileSwitching = true }
        guard spatial != targetSpatial else { return }
        targetSpatial = spatial
        if forwarding, producer.kind == .video, spatial != currentSpatial {
            producer.requestKeyframe(stream: producer.streams[spatial], nowNanos: nowNanos)
        }
    }

    /// Asks for a keyframe of the stream this consumer waits for or forwards.
    func requestKeyframe(nowNanos: Int64) {
        guard producer.kind == .video else { return }
        let spatial = waitingForKeyframe || currentSpatial == nil ? targetSpatial : (currentSpatial ?? targetSpatial)
        producer.requestKeyframe(stream: producer.streams[min(spatial, producer.streams.count - 1)], nowNanos: nowNanos)
    }

    /// Sends what the subscriber NACKed (as RTX when negotiated), rebuilt from the producer's stored
    /// packet and what this consumer sent under that number.
    func retransmit(_ sequenceNumbers: [UInt16], nowNanos: Int64) {
        guard !sentPackets.isEmpty, active else { return }
        var missed = false
        // One NACK datagram can name thousands of numbers (17 per 4 bytes), the same ones again
        // and again: each once, and no more than the record keeps.
        var seen = Set<UInt16>(minimumCapacity: min(sequenceNumbers.count, Self.sentCapacity))
        for s in sequenceNumbers {
            guard seen.count < Self.sentCapacity else { break }
            guard seen.insert(s).inserted else { continue }
            // The stream being left for a lower one that fits, or one already left: its frames will not be decoded.
            if dropCurrentWhileSwitching || spliceSequence.map({ Int16(bitPattern: s &- $0) < 0 }) == true {
                retransmissionsSkipped += 1
                continue
            }
            switch resend(s, nowNanos: nowNanos) {
            case .sent: retransmitted += 1
            case .throttled: retransmissionsThrottled += 1
            case .missed:
                retransmissionMisses += 1
                missed = true
            }
        }
        // A packet we cannot resend leaves the subscriber's decoder stuck until the next keyframe: ask for one.
        if missed { requestKeyframe(nowNanos: nowNanos) }
    }

    /// Logs why a NACKed packet could not be resent (debug: a receiver whose jitter buffer waits for
    /// it stalls until the next keyframe, or, in aiortc, until 512 later packets have arrived).
    private func miss(_ sequenceNumber: UInt16, _ why: @autoclosure () -> String, nowNanos: Int64) -> SubscriberConnection.RetransmissionOutcome {
        subscriber.room.logger.debug("retransmission missed", metadata: [
            "peer": "\(subscriber.participant.peer.peerID)", "seq": "\(sequenceNumber)", "why": "\(why())", "t_ms": "\(nowNanos / 1_000_000)"])
        return .missed
    }

    /// Rebuilds and sends the packet sent as `sequenceNumber`, if it is recent and still stored.
    private func resend(_ sequenceNumber: UInt16, nowNanos: Int64) -> SubscriberConnection.RetransmissionOutcome {
        let slot = Int(sequenceNumber) & (Self.sentCapacity - 1)
        let record = sentPackets[slot]
        guard record.nanos != .min, record.sequence == sequenceNumber else {
            return miss(sequenceNumber, "never sent under this number, or overwritten", nowNanos: nowNanos)
        }
        // Still waiting in the pacer's queue: it goes soon anyway.
        if record.nanos == .max { return .throttled }
        let age = nowNanos - record.nanos
        guard age <= Self.maxRetransmissionAgeNanos else { return miss(sequenceNumber, "sent \(age / 1_000_000) ms ago", nowNanos: nowNanos) }
        guard Int(record.spatial) < producer.streams.count, let store = producer.streams[Int(record.spatial)].retransmissions else {
            return miss(sequenceNumber, "its stream keeps no copies", nowNanos: nowNanos)
        }
        let interval = min(max(subscriber.rttNanos ?? Self.defaultResendIntervalNanos, Self.resendIntervalRange.lowerBound),
                           Self.resendIntervalRange.upperBound)
        if record.resentNanos != .min, nowNanos - record.resentNanos < interval { return .throttled }
        let outcome = store.withPacket(sequenceNumber: record.inputSequence, nowNanos: nowNanos,
                                       maxAgeNanos: Self.maxRetransmissionAgeNanos) { stored -> SubscriberConnection.RetransmissionOutcome in
            guard let header = try? RTPHeader(parsing: stored), header.payloadLength > 0 else { return .missed }
            let payload = UnsafeRawBufferPointer(rebasing: stored[header.payloadRange])
            var vp8: SubscriberConnection.VP8Rewrite?
            if producer.codec == .vp8, let d = try? VP8Descriptor(parsing: payload) { vp8 = (d, record.pictureID, record.tl0PicIdx) }
            return subscriber.sendRetransmission(consumer: self, record: record, payload: payload, vp8: vp8, nowNanos: nowNanos)
        } ?? .missed
        switch outcome {
        case .sent: sentPackets[slot].resentNanos = nowNanos
        case .missed: return miss(sequenceNumber, "no longer stored, or the send failed", nowNanos: nowNanos)
        case .throttled: break
        }
        return outcome
    }

    func pause() {
        paused = true
    }

    func resume(nowNanos: Int64) {
        guard paused else { return }
        paused = false
        restartAtKeyframe(nowNanos: nowNanos)
    }

    /// The allocator pauses video it cannot afford (true) or resumes it.
    func setAllocationPaused(_ value: Bool, nowNanos: Int64) {
        guard value != allocationPaused else { return }
        allocationPaused = value
        if !value { restartAtKeyframe(nowNanos: nowNanos) }
    }

    private func restartAtKeyframe(nowNanos: Int64) {
        guard producer.kind == .video else { return }
        waitingForKeyframe = true
        if forwarding { requestKeyframe(nowNanos: nowNanos) }
    }

    /// The sender report for this consumer, from the forwarded stream's NTP/RTP mapping shifted by our timestamp offset.
    func senderReport(nowNanos: Int64) -> SenderReport? {
        guard timestampStarted, packetsSent > 0 else { return nil }
        let stream = producer.streams[min(currentSpatial ?? 0, producer.streams.count - 1)]
        guard let mapping = stream.rtpTime(atNanos: nowNanos, clockRate: producer.clockRate) else { return nil }
        return SenderReport(ssrc: ssrc, ntpTime: mapping.ntp, rtpTime: mapping.rtp &+ timestampOffset, packetCount: packetsSent, octetCount: octetsSent)
    }
}
