import DTLS
import RTP

/// A participant's publisher peer connection: the client offers, we answer. Demultiplexes the
/// decrypted RTP to its producers (by SSRC, learning new SSRCs from the MID extension), unwraps
/// RTX, and sends the publisher its RTCP: transport-cc feedback every 100 ms, NACKs for what we
/// lost, receiver reports every second and paced keyframe requests.
final class PublisherConnection: WorkerSession, WebRTCTransportDelegate {
    unowned let participant: Participant
    unowned let room: Room
    let transport: WebRTCTransport
    private(set) var remote: RemoteTransportParameters
    private(set) var local: LocalTransportParameters
    let setup: DTLSSetup
    let sessionID: UInt64
    var sessionVersion = 1
    var extensions = ExtensionIDs()
    /// Where a packet of one SSRC goes: a producer and one of its streams (simulcast layer).
    struct Route {
        unowned let producer: Producer
        unowned let stream: ProducerStream
    }
    var routesBySSRC: [UInt32: Route] = [:]
    var routesByRTXSSRC: [UInt32: Route] = [:]
    var producersByMid: [String: Producer] = [:]
    /// Our SSRC for the RTCP we send the publisher.
    let rtcpSSRC = UInt32.random(in: 1...UInt32.max)
    var twcc: TWCCRecorder?
    var lastFeedbackNanos: Int64 = 0
    var lastReportNanos: Int64 = 0
    var nackScratch: [UInt16] = []
    /// Packets that matched no producer (unknown SSRC without a usable MID).
    private(set) var unknownSSRCPackets = 0
    static let feedbackIntervalNanos: Int64 = 100_000_000
    static let reportIntervalNanos: Int64 = 1_000_000_000
    static let nackRTTNanos: Int64 = 100_000_000

    init(participant: Participant, room: Room, remote: RemoteTransportParameters, local: LocalTransportParameters, sessionID: UInt64, nowNanos: Int64) throws {
        self.sessionID = sessionID
        self.participant = participant
        self.room = room
        self.remote = remote
        self.local = local
        // We take the role the offer leaves us: passive (DTLS server) unless the client insists on passive.
        self.setup = remote.setup.answer
        let role = setup.role
        transport = try WebRTCTransport(id: participant.peer.peerID + "/pub", iceCredentials: local.ice, remoteICE: remote.ice,
                                        dtlsContext: room.dtlsContext, dtlsRole: role, remoteFingerprint: remote.fingerprint, nowNanos: nowNanos)
        transport.delegate = self
    }

    /// An offer with new ICE credentials (the client restarted ICE, e.g. after a network change):
    /// new credentials of ours too, everything else (DTLS, SRTP, producers, SSRCs) kept.
    /// - Returns: the new local parameters, or nil when the agent could not take them.
    func restartICE(remote newRemote: RemoteTransportParameters) -> LocalTransportParameters? {
        guard let renewed = restartICE(from: local, remote: newRemote.ice, host: room.host) else { return nil }
        local = renewed
        remote = newRemote
        return renewed
    }

    func bind(_ producer: Producer) {
        producersByMid[producer.mid] = producer
        for stream in producer.streams {
            if let s = stream.ssrc { routesBySSRC[s] = Route(producer: producer, stream: stream) }
            if let s = stream.rtxSSRC { routesByRTXSSRC[s] = Route(producer: producer, stream: stream) }
            if twcc == nil, let s = stream.ssrc { twcc = TWCCRecorder(senderSSRC: rtcpSSRC, mediaSSRC: s) }
        }
        producer.onKeyframe = { [unowned self, unowned producer] stream, nowNanos in
            room.logger.debug("keyframe in", metadata: ["peer": "\(participant.peer.peerID)", "track": "\(producer.trackID)",
                                                        "spatial": "\(stream.spatial)", "t_ms": "\(nowNanos / 1_000_000)"])
        }
        producer.sendKeyframeRequest = { [unowned self, unowned producer] stream, nowNanos in
            guard let ssrc = stream.ssrc else { return }
            room.logger.debug("keyframe request", metadata: ["peer": "\(participant.peer.peerID)", "track": "\(producer.trackID)",
                                                             "spatial": "\(stream.spatial)", "t_ms": "\(nowNanos / 1_000_000)"])
            transport.sendRTCP([.pli(PictureLossIndication(senderSSRC: rtcpSSRC, mediaSSRC: ssrc))])
        }
    }

    func unbind(_ producer: Producer) {
        producer.onKeyframe = nil
        producersByMid[producer.mid] = nil
        for (k, v) in routesBySSRC where v.producer === producer { routesBySSRC[k] = nil }
        for (k, v) in routesByRTXSSRC where v.producer === producer { routesByRTXSSRC[k] = nil }
        producer.sendKeyframeRequest = nil
    }

    // MARK: WorkerSession

    func workerDidRemove() {}

    func tick(nowNanos: Int64) {
        guard transport.state == .connected else { return }
        var out: [RTCPPacket] = []
        for p in producersByMid.values {
            p.tick(nowNanos: nowNanos)
            for stream in p.streams where stream.nack != nil {
                guard let ssrc = stream.ssrc else { continue }
                nackScratch.removeAll(keepingCapacity: true)
                stream.nack?.dueInto(&nackScratch, nowNanos: nowNanos, rttNanos: Self.nackRTTNanos)
                if !nackScratch.isEmpty {
                    out.append(.nack(GenericNACK(senderSSRC: rtcpSSRC, mediaSSRC: ssrc, lost: nackScratch)))
                }
            }
        }
        if extensions.transportCC != nil, nowNanos - lastFeedbackNanos >= Self.feedbackIntervalNanos, twcc != nil {
            lastFeedbackNanos = nowNanos
            for fb in twcc?.buildFeedback() ?? [] { out.append(.transportCC(fb)) }
        }
        if nowNanos - lastReportNanos >= Self.reportIntervalNanos {
            lastReportNanos = nowNanos
            var reports: [ReceptionReport] = []
            for p in producersByMid.values {
                for stream in p.streams {
                    guard let ssrc = stream.ssrc, stream.stats.received > 0 else { continue }
                    var lsr: UInt32 = 0, dlsr: UInt32 = 0
                    if let sr = stream.lastReceivedSR {
                        lsr = UInt32(truncatingIfNeeded: sr.ntp >> 16)
                        dlsr = UInt32(truncatingIfNeeded: MediaClock.ticks(nanos: nowNanos - sr.arrivalNanos, clockRate: 65536))
                    }
                    reports.append(stream.stats.makeReport(ssrc: ssrc, lastSR: lsr, delaySinceLastSR: dlsr))
                    stream.lastReport = reports.last
                }
            }
            if !reports.isEmpty {
                out.insert(.receiverReport(ReceiverReport(ssrc: rtcpSSRC, reports: Array(reports.prefix(31)))), at: 0)
            }
        }
        if !out.isEmpty {
            // Keep each compound well under the MTU.
            var batch: [RTCPPacket] = []
            var size = 0
            for packet in out {
                var bytes: [UInt8] = []
                packet.serialize(into: &bytes)
                if size + bytes.count > 1000, !batch.isEmpty {
                    transport.sendRTCP(batch)
                    batch.removeAll()
                    size = 0
                }
                batch.append(packet)
                size += bytes.count
            }
            if !batch.isEmpty { transport.sendRTCP(batch) }
        }
    }

    // MARK: WebRTCTransportDelegate

    func transport(_ transport: WebRTCTransport, send datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
        room.host.send(datagram, to: address)
    }

    func transport(_ transport: WebRTCTransport, didMoveTo address: TransportAddress) {
        room.logger.info("publisher moved to a new address", metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)", "address": "\(address)"])
        // What was sent on the old path is lost: every receiver restarts its video at a keyframe,
        // without a hole it would wait on.
        let now = transport.arrivalNanos
        for producer in producersByMid.values where producer.kind == .video {
            for consumer in producer.consumers { consumer.resync(nowNanos: now) }
        }
    }

    func transportDidConnect(_ transport: WebRTCTransport) {
        room.logger.info("publisher connected", metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)"])
        // Keyframes for consumers that were waiting since before the connection.
        let now = transport.ice.lastValidRequestNanos ?? transport.createdNanos
        for p in producersByMid.values {
            for c in p.consumers { c.requestKeyframe(nowNanos: now) }
        }
    }

    func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        let raw = UnsafeRawBufferPointer(packet)
        if let id = extensions.transportCC, header.hasExtension, let v = header.extensionValue(id: id, in: raw),
           let seq = TransportWideSequence.decode(v) {
            twcc?.record(sequenceNumber: seq, arrivalMicros: transport.arrivalNanos / 1000)
        }
        if let route = routesBySSRC[header.ssrc] {
            if route.producer.kind == .audio, let id = extensions.audioLevel, header.hasExtension,
               let v = header.extensionValue(id: id, in: raw), let level = AudioLevel(decoding: v) {
                route.producer.noteAudioLevel(level.level, nowNanos: nowNanos)
            }
            route.producer.receive(packet, header: header, stream: route.stream, nowNanos: nowNanos, arrivalNanos: transport.arrivalNanos, retransmission: false)
            return
        }
        if let route = routesByRTXSSRC[header.ssrc] {
            receiveRTX(packet, header: header, route: route, nowNanos: nowNanos)
            return
        }
        learn(packet, header: header, nowNanos: nowNanos)
    }

    /// An SSRC the SDP did not declare: bound by the rid / repaired-rid extensions (simulcast), the
    /// MID extension, or the payload type when only one section can have sent it.
    func learn(_ packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        let raw = UnsafeRawBufferPointer(packet)
        var found: Producer?
        if let id = extensions.mid, header.hasExtension, let v = header.extensionValue(id: id, in: raw), let mid = SDESItemExtension.decode(v) {
            found = producersByMid[mid]
        }
        var rid: String?
        var repaired = false
        if header.hasExtension {
            if let id = extensions.rid, let v = header.extensionValue(id: id, in: raw) {
                rid = SDESItemExtension.decode(v)
            } else if let id = extensions.repairedRid, let v = header.extensionValue(id: id, in: raw) {
                rid = SDESItemExtension.decode(v)
                repaired = true
            }
        }
        if found == nil, let rid {
            let candidates = producersByMid.values.filter { p in p.streams.contains { $0.rid == rid } }
            if candidates.count == 1 { found = candidates[0] }
        }
        if found == nil {
            let candidates = producersByMid.values.filter { $0.payloadType == header.payloadType || $0.rtxPayloadType == header.payloadType }
            if candidates.count == 1 { found = candidates[0] }
        }
        guard let producer = found else {
            unknownSSRCPackets += 1
            return
        }
        let stream: ProducerStream
        if producer.simulcast {
            // A simulcast encoding is known by its rid; without one (SIM groups) its SSRC was declared.
            guard let rid, let s = producer.streams.first(where: { $0.rid == rid }) else {
                unknownSSRCPackets += 1
                return
            }
            stream = s
        } else {
            stream = producer.streams[0]
        }
        let route = Route(producer: producer, stream: stream)
        if header.payloadType == producer.rtxPayloadType || repaired {
            if let old = stream.rtxSSRC { routesByRTXSSRC[old] = nil }
            stream.rtxSSRC = header.ssrc
            routesByRTXSSRC[header.ssrc] = route
            receiveRTX(packet, header: header, route: route, nowNanos: nowNanos)
        } else if header.payloadType == producer.payloadType {
            // A new SSRC for the stream (first packet, or the publisher restarted its encoder).
            if let old = stream.ssrc { routesBySSRC[old] = nil }
            stream.ssrc = header.ssrc
            routesBySSRC[header.ssrc] = route
            if twcc == nil { twcc = TWCCRecorder(senderSSRC: rtcpSSRC, mediaSSRC: header.ssrc) }
            producer.receive(packet, header: header, stream: stream, nowNanos: nowNanos, arrivalNanos: transport.arrivalNanos, retransmission: false)
        } else {
            unknownSSRCPackets += 1
        }
    }

    /// RTX (RFC 4588): the original sequence number leads the payload. Unwrapped in place: the
    /// header moves two bytes forward over it and takes the original SSRC, sequence and payload type.
    func receiveRTX(_ packet: UnsafeMutableRawBufferPointer, header: RTPHeader, route: Route, nowNanos: Int64) {
        let producer = route.producer
        guard header.payloadLength >= 2, let ssrc = route.stream.ssrc, let base = packet.baseAddress else { return }  // padding probes
        let osn = UInt16(packet[header.payloadOffset]) << 8 | UInt16(packet[header.payloadOffset + 1])
        (base + 2).copyMemory(from: base, byteCount: header.payloadOffset)
        let unwrapped = UnsafeMutableRawBufferPointer(rebasing: packet[2...])
        RTPRewrite.setSSRC(ssrc, in: unwrapped)
        RTPRewrite.setSequenceNumber(osn, in: unwrapped)
        RTPRewrite.setPayloadType(producer.payloadType, in: unwrapped)
        guard let h = try? RTPHeader(parsing: UnsafeRawBufferPointer(unwrapped)) else { return }
        producer.receive(unwrapped, header: h, stream: route.stream, nowNanos: nowNanos, retransmission: true)
    }

    func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64) {
        for packet in packets {
            if case .senderReport(let sr) = packet, let route = routesBySSRC[sr.ssrc] {
                route.stream.receiveSenderReport(ntp: sr.ntpTime, rtp: sr.rtpTime, nowNanos: nowNanos, clockRate: route.producer.clockRate)
            }
        }
    }

    func transportDidClose(_ transport: WebRTCTransport, reason: String) {
        room.connectionClosed(participant, reason: reason)
    }
}
