import DTLS
import RTP

/// A participant's subscriber peer connection: we offer one m-line per remote track and
/// renegotiate as tracks come and go; the client answers. Sends the consumers' packets with a
/// transport-wide sequence number, answers NACKs from the retransmission buffers, passes keyframe
/// requests to the producers and sends sender reports every second.
final class SubscriberConnection: WorkerSession, WebRTCTransportDelegate {
    unowned let participant: Participant
    unowned let room: Room
    private(set) var local: LocalTransportParameters
    let sessionID = UInt64.random(in: 1...UInt64(Int64.max))
    var sessionVersion = 0
    /// Created when the first answer arrives (it carries the client's ICE and DTLS parameters).
    private(set) var transport: WebRTCTransport
    private(set) var hasTransport = false
    var remote: RemoteTransportParameters?
    struct Slot {
        var mid: String
        var codec: ForwardedCodec
        var consumer: Consumer?
        /// The last offer sent carried this m-line inactive.
        var offeredInactive = false
        /// The client answered an offer with this m-line inactive: a new track of the same kind
        /// takes it over (same mid, new SSRC and msid) instead of growing the SDP by one m-line
        /// per track ever forwarded (long sessions with repeated screen shares and rejoins).
        var reusable = false
    }
    var slots: [Slot] = []
    var consumersBySSRC: [UInt32: Consumer] = [:]
    var offerOutstanding = false
    var needsOffer = false
    var nextMid = 0
    /// transport-cc on what we send (when the client's answer kept the extension).
    var transportCC: Bool { downlink.transportCC }
    var transportSequence = UInt16.random(in: 0...0x7FFF)
    /// Sender reports: when, in which compounds, and the round trip they give back.
    var reports = SenderReportSchedule()
    var rate = RateMeter()
    private(set) var rttNanos: Int64?
    private(set) var downlinkLoss: Double?
    /// Downlink estimation: what we sent with transport-wide numbers (its send times for the
    /// estimator), and the decisions made from the subscriber's feedback (``DownlinkController``).
    var sendHistory = SendHistory()
    var downlink = DownlinkController()
    /// The downlink estimate: GCC from transport-cc, or the subscriber's REMB without it.
    var downlinkEstimate: Double? { downlink.estimate }
    private var loggedEstimate = 0.0
    /// A wake-up asked of the host (a probe's next packets, a reallocation) is outstanding for this time.
    private var wakeNanos: Int64?
    var paddingBytesSent: Int { downlink.paddingBytesSent }
    var pausedTotal: Int { downlink.pausedTotal }

    init(participant: Participant, room: Room, local: LocalTransportParameters, nowNanos: Int64) throws {
        self.participant = participant
        self.room = room
        self.local = local
        // Placeholder until the answer: a transport that never connects (its ufrag is registered only
        // once the real one exists).
        transport = try WebRTCTransport(id: participant.peer.peerID + "/sub", iceCredentials: local.ice, remoteICE: nil,
                                        dtlsContext: room.dtlsContext, dtlsRole: .server,
                                        remoteFingerprint: CertificateFingerprint(algorithm: .sha256, digest: []), nowNanos: nowNanos)
    }

    var isConnected: Bool { hasTransport && transport.state == .connected }

    /// What its transport counted, and what became of the NACKed packets of its live consumers.
    struct Statistics {
        var transport = TransportStatistics()
        var retransmitted = 0, missed = 0, throttled = 0, skipped = 0
    }
    var statistics: Statistics {
        var s = Statistics(transport: hasTransport ? transport.statistics : TransportStatistics(), retransmitted: retransmittedGone)
        for slot in slots {
            guard let c = slot.consumer else { continue }
            s.retransmitted += c.retransmitted
            s.missed += c.retransmissionMisses
            s.throttled += c.retransmissionsThrottled
            s.skipped += c.retransmissionsSkipped
        }
        return s
    }
    /// Retransmissions of consumers already removed.
    var retransmittedGone = 0

    // MARK: Negotiation

    /// Adds an m-line for `producer` and renegotiates.
    func add(_ producer: Producer) {
        guard !slots.contains(where: { $0.consumer?.producer === producer }) else { return }
        let consumer: Consumer
        if let i = slots.firstIndex(where: { $0.reusable && $0.consumer == nil && $0.codec.kind == producer.codec.kind }) {
            consumer = Consumer(producer: producer, subscriber: self, mid: slots[i].mid)
            slots[i] = Slot(mid: slots[i].mid, codec: producer.codec, consumer: consumer)
        } else {
            let mid = String(nextMid)
            nextMid += 1
            consumer = Consumer(producer: producer, subscriber: self, mid: mid)
            slots.append(Slot(mid: mid, codec: producer.codec, consumer: consumer))
        }
        consumersBySSRC[consumer.ssrc] = consumer
        producer.consumers.append(consumer)
        if !participant.receiving(producer.kind) { consumer.pause() }
        needsOffer = true
    }

    /// Takes `producer`'s m-line out (inactive from the next offer) and renegotiates.
    func remove(_ producer: Producer) {
        for i in slots.indices where slots[i].consumer?.producer === producer {
            if let c = slots[i].consumer {
                consumersBySSRC[c.ssrc] = nil
                downlink.forget(c.ssrc)
                c.active = false
            }
            slots[i].consumer = nil
            needsOffer = true
        }
        producer.consumers.removeAll { $0.subscriber === self }
    }

    /// An ICE restart asked for (by the client, or by us when its checks stopped): done with the
    /// next offer, so that the client never checks with credentials it has not been given.
    private(set) var iceRestartPending = false
    /// When we last restarted ICE by ourselves (once per silence: reset by the next valid check).
    private var selfRestartedAfterCheckNanos: Int64?
    /// Without a valid check from the client for this long while connected, we restart ICE
    /// ourselves: browsers check consent every few seconds (RFC 7675: 4-6 s), so two missed checks
    /// mean its path is gone (a network change), and the client can reconnect with the new offer
    /// before consent runs out (``ICELiteAgent/consentTimeoutNanos``, from the last valid check).
    static let selfRestartSilenceNanos: Int64 = 12_000_000_000

    func requestICERestart() {
        iceRestartPending = true
        needsOffer = true
        negotiateIfNeeded()
    }

    /// Sends a new offer if the slots changed (or an ICE restart is pending) and none is outstanding.
    func negotiateIfNeeded() {
        guard needsOffer, !offerOutstanding, !slots.isEmpty else { return }
        needsOffer = false
        offerOutstanding = true
        sessionVersion += 1
        if iceRestartPending, hasTransport {
            iceRestartPending = false
            // The client's new credentials come in its answer; until then any of its ufrags is taken.
            if let renewed = restartICE(from: local, remote: nil, host: room.host) {
                local = renewed
                room.logger.info("subscriber ICE restart", metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)"])
                participant.sink(.iceRestarted(.subscriber))
            }
        }
        for i in slots.indices { slots[i].offeredInactive = slots[i].consumer == nil }
        let offer = RoomSDP.subscriberOffer(slots: slots.map { slot in
            RoomSDP.SubscriberSlot(mid: slot.mid, codec: slot.codec, track: slot.consumer.map {
                RoomSDP.SubscribedTrack(peerID: $0.producer.peerID, trackID: $0.producer.trackID, ssrc: $0.ssrc, rtxSSRC: $0.rtxSSRC, cname: "sfu-" + $0.producer.peerID)
            })
        }, local: local, sessionVersion: sessionVersion, sessionID: sessionID)
        participant.sink(.subscriberOffer(sdp: offer.text))
    }

    /// Applies the client's answer; makes the transport on the first one.
    func applyAnswer(_ sdp: SessionDescription, nowNanos: Int64) throws(RoomSDPError) {
        guard offerOutstanding else { throw .bad("no subscriber offer is outstanding") }
        let params = try RemoteTransportParameters(sdp)
        if !hasTransport {
            let role = params.setup.answer.role
            do {
                transport = try WebRTCTransport(id: participant.peer.peerID + "/sub", iceCredentials: local.ice, remoteICE: params.ice,
                                                dtlsContext: room.dtlsContext, dtlsRole: role, remoteFingerprint: params.fingerprint, nowNanos: nowNanos)
            } catch {
                throw .bad("cannot set up the transport: \(error)")
            }
            transport.delegate = self
            hasTransport = true
            remote = params
            room.host.add(self)
        } else if params.ice != remote?.ice {
            // The answer to an offer that restarted ICE carries the client's new credentials.
            guard transport.ice.remote == nil else {
                throw .bad("the answer changed the ICE credentials without an ICE restart (send restart_ice)")
            }
            guard params.fingerprint == remote?.fingerprint else { throw .bad("the DTLS fingerprint changed") }
            transport.ice.remote = params.ice
            remote = params
        }
        offerOutstanding = false
        let answered = RoomSDP.readSubscriberAnswer(sdp)
        var byMid: [String: RoomSDP.AnsweredSection] = [:]
        for a in answered { byMid[a.mid] = a }
        downlink.transportCC = answered.contains { $0.accepted && $0.transportCC }
        for i in slots.indices where slots[i].offeredInactive && slots[i].consumer == nil { slots[i].reusable = true }
        for slot in slots {
            guard let c = slot.consumer else { continue }
            guard let a = byMid[slot.mid], a.accepted else {
                c.active = false
                continue
            }
            if let pt = a.payloadType { c.payloadType = pt }
            c.rtxPayloadType = a.rtxPayloadType
            if !c.active {
                c.active = true
                // Before the transport is up, the keyframe is asked for when it connects.
                if isConnected, c.producer.kind == .video {
                    c.waitingForKeyframe = true
                    c.requestKeyframe(nowNanos: nowNanos)
                }
            }
        }
        negotiateIfNeeded()
    }

    // MARK: Sending

    /// A VP8 payload descriptor and the picture id and TL0PICIDX this subscriber's copy takes
    /// (continuous across layer switches).
    typealias VP8Rewrite = RTPWriter.VP8Rewrite

    /// The transport-cc extension for the next packet, nil when the client's answer dropped it.
    private var nextTransportCC: RTPWriter.TransportCC? {
        transportCC ? RTPWriter.TransportCC(id: RoomSDP.subscriberTransportCCID, sequence: transportSequence) : nil
    }

    /// What became of a media packet handed to ``sendMedia(consumer:marker:payloadType:sequenceNumber:timestamp:ssrc:payload:vp8:nowNanos:)``.
    enum MediaSendOutcome: Equatable {
        /// Written, with this transport-wide sequence number (nil without transport-cc).
        case sent(transportSequence: UInt16?)
        /// Held by the pacer: it goes within the pacer's queue time (``Consumer/released(sequence:transportSequence:nowNanos:)``).
        case queued
        /// Not connected, or the transport could not send it.
        case failed
    }

    /// A video packet the pacer holds: what ``transmit`` needs besides the payload.
    struct PacedPacket {
        var consumer: Consumer
        var marker: Bool
        var payloadType: UInt8
        var sequenceNumber: UInt16
        var timestamp: UInt32
        var ssrc: UInt32
        var vp8: VP8Rewrite?
    }
    /// Paces video at a multiple of the downlink estimate (``MediaPacer``).
    var pacer = MediaPacer<PacedPacket>()
    /// A wake-up for the pacer's next release is asked of the host for this time.
    private var pacerWakeNanos: Int64?
    /// The pacing rate, bytes/s; nil (nothing paced) while ``DownlinkController/pacingWanted(nowNanos:)``
    /// says no: during the warm-up the estimate is mostly the start value, and pacing the first
    /// keyframes by it would only delay the first picture and each step up; a path without a
    /// recent cut for congestion is no bottleneck near our rate. Paced from what the allocation
    /// spends when that is more than the estimate (a layer kept through a cut,
    /// ``DownlinkController/keepFactor(nowNanos:)``): the pacer must never be what holds the media back.
    func pacingRate(nowNanos: Int64) -> Double? {
        guard let estimate = downlink.estimate, downlink.pacingWanted(nowNanos: nowNanos) else { return nil }
        return MediaPacer<PacedPacket>.rate(estimateBitsPerSecond: max(estimate, Double(downlink.allocatedBitrate)))
    }

    /// Sends a consumer's media packet: audio at once, video through the pacer (at once while its
    /// budget lasts and nothing waits, else queued behind what does).
    func sendMedia(consumer: Consumer, marker: Bool, payloadType: UInt8, sequenceNumber: UInt16, timestamp: UInt32, ssrc: UInt32,
                   payload: UnsafeRawBufferPointer, vp8: VP8Rewrite? = nil, nowNanos: Int64) -> MediaSendOutcome {
        guard isConnected else { return .failed }
        let size = payload.count + Self.mediaOverhead
        let rate = pacingRate(nowNanos: nowNanos)
        if consumer.producer.kind == .audio {
            pacer.charge(size: size, bytesPerSecond: rate, nowNanos: nowNanos)
        } else {
            if !pacer.isEmpty { releasePaced(nowNanos: nowNanos) }
            guard pacer.admit(size: size, bytesPerSecond: rate, nowNanos: nowNanos) else {
                pacer.enqueue(PacedPacket(consumer: consumer, marker: marker, payloadType: payloadType, sequenceNumber: sequenceNumber,
                                          timestamp: timestamp, ssrc: ssrc, vp8: vp8), payload: payload, size: size, nowNanos: nowNanos)
                schedulePacerWake(rate: rate, nowNanos: nowNanos)
                return .queued
            }
        }
        return transmit(marker: marker, payloadType: payloadType, sequenceNumber: sequenceNumber, timestamp: timestamp, ssrc: ssrc,
                        payload: payload, vp8: vp8, nowNanos: nowNanos)
    }

    /// RTP header with its extensions and the SRTP tag, roughly: what a packet costs beyond its payload.
    static let mediaOverhead = 36

    /// Writes one media packet with the next transport-wide sequence number.
    private func transmit(marker: Bool, payloadType: UInt8, sequenceNumber: UInt16, timestamp: UInt32, ssrc: UInt32,
                          payload: UnsafeRawBufferPointer, vp8: VP8Rewrite?, nowNanos: Int64) -> MediaSendOutcome {
        let twcc = transportCC
        let seq = transportSequence
        let extensionValue = nextTransportCC
        let sent = transport.sendRTP { buffer in
            RTPWriter.writePacket(buffer, marker: marker, payloadType: payloadType, sequenceNumber: sequenceNumber, timestamp: timestamp, ssrc: ssrc,
                                  transportCC: extensionValue, originalSequence: nil, payload: payload, vp8: vp8)
        }
        guard sent else { return .failed }
        if twcc {
            sendHistory.onSent(sequence: seq, sendNanos: nowNanos, size: payload.count + 20, batch: room.host.writeBatch)
            transportSequence &+= 1
        }
        rate.add(payload.count + 12, nowNanos: nowNanos)
        return .sent(transportSequence: twcc ? seq : nil)
    }

    /// Sends the queued video the pacer's budget allows now, and asks for a wake-up for the rest.
    func releasePaced(nowNanos: Int64) {
        guard !pacer.isEmpty else { return }
        let connected = isConnected
        let rate = pacingRate(nowNanos: nowNanos)
        pacer.release(bytesPerSecond: rate, nowNanos: nowNanos) { p, payload in
            // A consumer removed (or its m-line rejected) while its packets waited: they go nowhere.
            guard connected, p.consumer.active else { return }
            if case .sent(let seq) = transmit(marker: p.marker, payloadType: p.payloadType, sequenceNumber: p.sequenceNumber, timestamp: p.timestamp,
                                              ssrc: p.ssrc, payload: payload, vp8: p.vp8, nowNanos: nowNanos) {
                p.consumer.released(sequence: p.sequenceNumber, transportSequence: seq, nowNanos: nowNanos)
            }
        }
        schedulePacerWake(rate: rate, nowNanos: nowNanos)
    }

    /// Asks for a wake-up when the pacer's next packet may go (`rate`: the pacing rate now).
    private func schedulePacerWake(rate: Double?, nowNanos: Int64) {
        guard let next = pacer.nextReleaseNanos(bytesPerSecond: rate, nowNanos: nowNanos) else { return }
        requestWake(&pacerWakeNanos, atNanos: next)
    }

    /// Resends a packet a consumer sent as `sequenceNumber`, rebuilt from the producer's stored copy
    /// of its payload: as RTX (on the consumer's RTX SSRC, the original sequence number before the
    /// payload) when negotiated, else as the packet again.
    /// What became of one NACKed packet.
    enum RetransmissionOutcome { case sent, missed, throttled }

    /// Retransmissions to this subscriber, bytes per second: a share of its downlink estimate, never
    /// less than the floor (NACKs come before the estimator has learned much). Tokens for a quarter
    /// of a second at most: a NACK storm gets one burst, then the steady share.
    struct RetransmissionBudget {
        static let share = 0.5
        static let floorBitsPerSecond = 300_000.0
        static let burstSeconds = 0.25
        var bucket = TokenBucket(burst: floorBitsPerSecond / 8 * burstSeconds)

        mutating func take(_ bytes: Int, estimateBitsPerSecond: Double, nowNanos: Int64) -> Bool {
            let rate = max(estimateBitsPerSecond * Self.share, Self.floorBitsPerSecond) / 8
            return bucket.take(Double(bytes), rate: rate, burst: rate * Self.burstSeconds, nowNanos: nowNanos)
        }
    }
    var retransmissionBudget = RetransmissionBudget()

    /// Resends a packet `consumer` sent (its `record`). As RTX when negotiated: the RTX SSRC's own
    /// sequence number, a new transport-wide number. Without RTX the packet goes again byte for
    /// byte, its original transport-wide number included (``Consumer/SentPacket/transportSequence``),
    /// and is not fed to the estimator twice.
    func sendRetransmission(consumer: Consumer, record: Consumer.SentPacket, payload: UnsafeRawBufferPointer, vp8: VP8Rewrite?,
                            nowNanos: Int64) -> RetransmissionOutcome {
        guard isConnected else { return .missed }
        guard retransmissionBudget.take(payload.count + 22, estimateBitsPerSecond: downlink.estimator.estimate, nowNanos: nowNanos) else { return .throttled }
        // Resends go ahead of queued video, and the video behind them waits for what they spent.
        pacer.charge(size: payload.count + Self.mediaOverhead + 2, bytesPerSecond: pacingRate(nowNanos: nowNanos), nowNanos: nowNanos)
        if let rtxPT = consumer.rtxPayloadType, let rtxSSRC = consumer.rtxSSRC {
            let twcc = transportCC
            let seq = transportSequence
            let extensionValue = nextTransportCC
            let rtxSeq = consumer.rtxSequence
            let sent = transport.sendRTP { buffer in
                RTPWriter.writePacket(buffer, marker: record.marker, payloadType: rtxPT, sequenceNumber: rtxSeq, timestamp: record.timestamp, ssrc: rtxSSRC,
                                      transportCC: extensionValue, originalSequence: record.sequence, payload: payload, vp8: vp8)
            }
            guard sent else { return .missed }
            consumer.rtxSequence &+= 1
            if twcc {
                sendHistory.onSent(sequence: seq, sendNanos: nowNanos, size: payload.count + 22, batch: room.host.writeBatch)
                transportSequence &+= 1
            }
            return .sent
        }
        let original = record.transportSequence.map { RTPWriter.TransportCC(id: RoomSDP.subscriberTransportCCID, sequence: $0) }
        let sent = transport.sendRTP { buffer in
            RTPWriter.writePacket(buffer, marker: record.marker, payloadType: record.payloadType, sequenceNumber: record.sequence, timestamp: record.timestamp,
                                  ssrc: consumer.ssrc, transportCC: original, originalSequence: nil, payload: payload, vp8: vp8)
        }
        return sent ? .sent : .missed
    }

    // MARK: Allocation

    /// The bitrates the allocator sees for `c`: per active stream up to the subscriber's cap, per
    /// temporal layer up to the highest sent (and capped); nil where nothing is sent.
    func layerBitrates(_ c: Consumer, nowNanos: Int64) -> [[Int64?]] {
        let streams = c.producer.streams
        return streams.indices.map { s -> [Int64?] in
            let stream = streams[s]
            guard s <= c.spatialCeiling, stream.isActive(nowNanos: nowNanos) else { return [nil] }
            let top = min(stream.maxTemporal, c.maxTemporal ?? 3)
            return (0...top).map { t -> Int64? in
                let measured = stream.bitrate(upToTemporal: t)
                if measured > 0 { return measured }
                return DownlinkController.nominalBitrate(spatial: s, of: streams.count, resolution: stream.resolution)
                    * Int64(t + 1) / Int64(stream.maxTemporal + 1)
            }
        }
    }

    /// Runs the downlink controller's allocation over the live consumers and applies its decisions:
    /// targets, pauses (`track_paused`) and resumes (`track_resumed`).
    func allocate(nowNanos: Int64) {
        var audio: Int64 = 0
        var video: [DownlinkController.VideoTrack] = []
        let speaker = room.activeSpeaker(nowNanos: nowNanos)
        for slot in slots {
            guard let c = slot.consumer, c.active, !c.paused, !c.producer.muted else { continue }
            if c.producer.kind == .audio {
                audio += c.producer.bitsPerSecond
                continue
            }
            let priority = c.producer.source == .screen ? DownlinkController.Priority.screen
                : (c.producer.peerID == speaker ? DownlinkController.Priority.activeSpeaker : DownlinkController.Priority.camera)
            video.append(.init(key: c.ssrc, priority: priority, bitrates: layerBitrates(c, nowNanos: nowNanos),
                               topResolution: c.producer.streams.last?.resolution,
                               target: .init(spatial: c.targetSpatial, temporal: c.targetTemporal),
                               currentSpatial: c.currentSpatial, currentTemporal: c.currentTemporal, paused: c.allocationPaused))
        }
        for decision in downlink.allocate(audio: audio, video: video, nowNanos: nowNanos) {
            apply(decision, nowNanos: nowNanos)
        }
    }

    private func apply(_ decision: DownlinkController.Decision, nowNanos: Int64) {
        switch decision {
        case .pause(let key, let estimate):
            guard let c = consumersBySSRC[key] else { return }
            c.setAllocationPaused(true, nowNanos: nowNanos)
            room.logger.info("video paused for bandwidth", metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)",
                                                                   "track": "\(c.producer.trackID)", "estimate": "\(Int(estimate))"])
            participant.sink(.trackPaused(peerID: c.producer.peerID, trackID: c.producer.trackID))
        case .resume(let key, let estimate):
            guard let c = consumersBySSRC[key] else { return }
            c.setAllocationPaused(false, nowNanos: nowNanos)
            room.logger.info("video resumed", metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)",
                                                         "track": "\(c.producer.trackID)", "estimate": "\(Int(estimate))"])
            participant.sink(.trackResumed(peerID: c.producer.peerID, trackID: c.producer.trackID))
        case .target(let key, let l, let dropCurrent, let changed):
            guard let c = consumersBySSRC[key] else { return }
            if changed {
                room.logger.debug("layer target", metadata: ["peer": "\(participant.peer.peerID)", "t_ms": "\(nowNanos / 1_000_000)",
                                                             "from": "\(c.targetSpatial)/\(c.targetTemporal)", "to": "\(l.spatial)/\(l.temporal)",
                                                             "current": "\(c.currentSpatial ?? -1)", "estimate": "\(Int(downlinkEstimate ?? 0))"])
            }
            c.setTarget(spatial: l.spatial, temporal: l.temporal, dropCurrent: dropCurrent, nowNanos: nowNanos)
        }
    }

    /// Sends the due part of a probe cluster (``DownlinkController/probeDue(nowNanos:packetSize:carrier:)``)
    /// as padding-only packets on a video consumer's RTX stream (as libwebrtc does): the subscriber
    /// drops them, its transport-cc feedback still reports their arrival, and the estimator sees
    /// whether the path carries the probe rate. Between the 20 ms ticks the host wakes the session
    /// (``SessionHost/wake(_:atNanos:)``) when the cluster's next packet is due.
    func sendProbe(nowNanos: Int64) {
        // Any video consumer with RTX carries the padding, a paused one too (how a paused track learns it can resume).
        guard let due = downlink.probeDue(nowNanos: nowNanos, packetSize: Self.paddingPacketSize, carrier: {
            slots.lazy.compactMap(\.consumer).first { $0.active && $0.rtxSSRC != nil && $0.rtxPayloadType != nil }
        }) else { return }
        var sent = 0
        while sent < due.packets, sendPadding(consumer: due.carrier, cluster: due.cluster, nowNanos: nowNanos) { sent += 1 }
        guard let next = downlink.probeSent(packets: sent, packetSize: Self.paddingPacketSize, nowNanos: nowNanos) else { return }
        requestWake(&wakeNanos, atNanos: next)
    }

    /// One padding packet: RTP header with the P bit, transport-cc, 255 bytes of padding.
    static let paddingPacketSize = RTPWriter.paddingPacketSize

    func sendPadding(consumer: Consumer, cluster: Int, nowNanos: Int64) -> Bool {
        guard isConnected, let rtxSSRC = consumer.rtxSSRC, let rtxPT = consumer.rtxPayloadType else { return false }
        let seq = transportSequence
        let rtxSeq = consumer.rtxSequence
        let timestamp = consumer.lastOutTimestamp
        let extensionValue = RTPWriter.TransportCC(id: RoomSDP.subscriberTransportCCID, sequence: seq)
        let sent = transport.sendRTP { buffer in
            RTPWriter.writePadding(buffer, payloadType: rtxPT, sequenceNumber: rtxSeq, timestamp: timestamp, ssrc: rtxSSRC, transportCC: extensionValue)
        }
        guard sent else { return false }
        consumer.rtxSequence &+= 1
        sendHistory.onSent(sequence: seq, sendNanos: nowNanos, size: Self.paddingPacketSize, probeCluster: cluster, batch: room.host.writeBatch)
        transportSequence &+= 1
        return true
    }

    // MARK: WorkerSession

    func workerDidRemove() {}

    /// Connected, a subscriber connection has work every 250 ms (allocation, and a probe that may
    /// be due) and every second (sender reports); what cannot wait for that (a probe's next
    /// packets, a reallocation when the estimate drops) asks the host for a wake-up.
    func nextTickNanos(after nowNanos: Int64) -> Int64 {
        guard isConnected else { return nowNanos }
        return min(downlink.lastAllocationNanos + DownlinkController.allocationIntervalNanos, reports.nextNanos)
    }

    /// Asks the host for a wake-up at `atNanos` unless the one recorded in `pending` (the pacer's,
    /// or the probe's and allocation's) comes by then.
    private func requestWake(_ pending: inout Int64?, atNanos: Int64) {
        if let pending, pending <= atNanos { return }
        pending = atNanos
        room.host.wake(self, atNanos: atNanos)
    }

    /// A wake-up is for the pacer, for the probe and allocation, or both; one asked for earlier and
    /// already served (or superseded) does nothing.
    func wake(nowNanos: Int64) {
        let slack = MediaPacer<PacedPacket>.minimumWakeNanos / 2
        if let due = pacerWakeNanos, nowNanos >= due - slack {
            pacerWakeNanos = nil
            releasePaced(nowNanos: nowNanos)
        }
        if let due = wakeNanos, nowNanos >= due - slack {
            wakeNanos = nil
            if isConnected { allocateAndProbeIfDue(nowNanos: nowNanos) }
        }
    }

    /// Allocation when its interval is over (or a drop of the estimate asked for it), then the due
    /// part of a probe: what both the tick and a wake-up do.
    private func allocateAndProbeIfDue(nowNanos: Int64) {
        if downlink.allocationDue(nowNanos: nowNanos) { allocate(nowNanos: nowNanos) }
        sendProbe(nowNanos: nowNanos)
    }

    func tick(nowNanos: Int64) {
        guard isConnected else { return }
        if let last = transport.ice.lastValidRequestNanos, nowNanos - last > Self.selfRestartSilenceNanos,
           selfRestartedAfterCheckNanos != last, !iceRestartPending {
            selfRestartedAfterCheckNanos = last
            room.logger.info("subscriber checks stopped: restarting ICE",
                             metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)", "silent_ms": "\((nowNanos - last) / 1_000_000)"])
            requestICERestart()
        }
        rate.roll(nowNanos: nowNanos)
        releasePaced(nowNanos: nowNanos)
        allocateAndProbeIfDue(nowNanos: nowNanos)
        guard nowNanos >= reports.nextNanos else { return }
        let streams = slots.compactMap { slot -> SenderReportSchedule.Stream? in
            guard let c = slot.consumer, c.active, let sr = c.senderReport(nowNanos: nowNanos) else { return nil }
            // The publisher's CNAME: its audio and video are synchronised together (a=ssrc cname in the offer).
            return .init(report: sr, cname: "sfu-" + c.producer.peerID)
        }
        guard let compounds = reports.compounds(streams, nowNanos: nowNanos) else { return }
        for compound in compounds { transport.sendRTCP(compound) }
    }

    // MARK: WebRTCTransportDelegate

    func transport(_ transport: WebRTCTransport, send datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        room.host.send(datagram, to: address)
    }

    func transport(_ transport: WebRTCTransport, didMoveTo address: TransportAddress) {
        room.logger.info("subscriber moved to a new address", metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)", "address": "\(address)"])
        downlink.pathChanged(atNanos: transport.ice.lastValidRequestNanos ?? transport.createdNanos)
    }

    func transportDidConnect(_ transport: WebRTCTransport) {
        room.logger.info("subscriber connected", metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)"])
        downlink.connected(atNanos: transport.ice.lastValidRequestNanos ?? transport.createdNanos)
        // Video starts at a keyframe: ask for one now that packets can reach the subscriber.
        let now = transport.ice.lastValidRequestNanos ?? transport.createdNanos
        for slot in slots {
            guard let c = slot.consumer, c.active, c.producer.kind == .video else { continue }
            c.waitingForKeyframe = true
            c.requestKeyframe(nowNanos: now)
        }
    }

    func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        // A subscriber sends no media on this connection.
    }

    func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64) {
        for packet in packets {
            switch packet {
            case .nack(let n):
                room.logger.debug("nack", metadata: ["peer": "\(participant.peer.peerID)", "t_ms": "\(nowNanos / 1_000_000)",
                                                     "count": "\(n.sequenceNumbers.count)"])
                consumersBySSRC[n.mediaSSRC]?.retransmit(n.sequenceNumbers, nowNanos: nowNanos)
            case .pli(let p):
                consumersBySSRC[p.mediaSSRC]?.requestKeyframe(nowNanos: nowNanos)
            case .fir(let f):
                for e in f.entries { consumersBySSRC[e.ssrc]?.requestKeyframe(nowNanos: nowNanos) }
            case .receiverReport(let rr):
                absorb(rr.reports, nowNanos: nowNanos)
            case .senderReport(let sr):
                absorb(sr.reports, nowNanos: nowNanos)
            case .remb(let r):
                downlink.received(remb: r.bitrate)
            case .transportCC(let fb):
                // Send times: when the worker wrote each packet's batch, not when it was queued.
                let host = room.host
                let results = sendHistory.onFeedback(fb) { host.writtenNanos(batch: $0) }
                // The downlink just shrank below what we send: reallocate now, not in up to 250 ms.
                if downlink.received(feedback: results, rttNanos: rttNanos, nowNanos: nowNanos) {
                    requestWake(&wakeNanos, atNanos: nowNanos)
                } else {
                    // A probe may be due (one a second, or the next at once while start-up probes carry).
                    sendProbe(nowNanos: nowNanos)
                }
                let lost = results.reduce(0) { $0 + ($1.arrivalNanos == nil ? 1 : 0) }
                let estimator = downlink.estimator
                if lost > 0 || estimator.usage != .normal || abs(estimator.estimate - loggedEstimate) > 0.1 * loggedEstimate {
                    loggedEstimate = estimator.estimate
                    room.logger.debug("feedback", metadata: ["peer": "\(participant.peer.peerID)", "t_ms": "\(nowNanos / 1_000_000)",
                                                             "lost": "\(lost)/\(results.count)", "usage": "\(estimator.usage)",
                                                             "loss": "\(Int(estimator.lossFraction * 100))%",
                                                             "estimate": "\(Int(estimator.estimate))", "acked": "\(Int(estimator.ackedBitrate ?? 0))",
                                                             "allocated": "\(downlink.allocatedBitrate)"])
                }
            default:
                break
            }
        }
    }

    func absorb(_ reports: [ReceptionReport], nowNanos: Int64) {
        var worstLoss: Double?
        for r in reports where consumersBySSRC[r.ssrc] != nil {
            let loss = Double(r.fractionLost) / 256
            worstLoss = max(worstLoss ?? 0, loss)
            if let rtt = self.reports.roundTrip(r, nowNanos: nowNanos) { rttNanos = rtt }
        }
        if let worstLoss { downlinkLoss = worstLoss }
    }

    func transportDidClose(_ transport: WebRTCTransport, reason: String) {
        room.connectionClosed(participant, reason: reason)
    }

    /// Closes the transport and forgets the consumers (the participant is leaving).
    func close(reason: String) {
        for slot in slots {
            if let c = slot.consumer { c.producer.consumers.removeAll { $0 === c } }
        }
        slots.removeAll()
        consumersBySSRC.removeAll()
        pacer.removeAll()
        if hasTransport {
            transport.delegate = nil
            transport.close(reason: reason)
            room.host.remove(self)
        }
    }
}
