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
    let remote: RemoteTransportParameters
    let local: LocalTransportParameters
    let setup: String
    let sessionID: UInt64
    var sessionVersion = 1
    var extensions = ExtensionIDs()
    var producersBySSRC: [UInt32: Producer] = [:]
    var producersByRTXSSRC: [UInt32: Producer] = [:]
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
        let role: DTLSEndpoint.Role = remote.setup == "passive" ? .client : .server
        self.setup = role == .server ? "passive" : "active"
        transport = try WebRTCTransport(id: participant.peer.peerID + "/pub", iceCredentials: local.ice, remoteICE: remote.ice,
                                        dtlsContext: room.dtlsContext, dtlsRole: role, remoteFingerprint: remote.fingerprint, nowNanos: nowNanos)
        transport.delegate = self
    }

    func bind(_ producer: Producer) {
        producersByMid[producer.mid] = producer
        if let s = producer.ssrc { producersBySSRC[s] = producer }
        if let s = producer.rtxSSRC { producersByRTXSSRC[s] = producer }
        if twcc == nil, let s = producer.ssrc { twcc = TWCCRecorder(senderSSRC: rtcpSSRC, mediaSSRC: s) }
        producer.sendKeyframeRequest = { [unowned self] p in
            guard let ssrc = p.ssrc else { return }
            transport.sendRTCP([.pli(PictureLossIndication(senderSSRC: rtcpSSRC, mediaSSRC: ssrc))])
        }
    }

    func unbind(_ producer: Producer) {
        producersByMid[producer.mid] = nil
        for (k, v) in producersBySSRC where v === producer { producersBySSRC[k] = nil }
        for (k, v) in producersByRTXSSRC where v === producer { producersByRTXSSRC[k] = nil }
        producer.sendKeyframeRequest = nil
    }

    // MARK: WorkerSession

    func workerDidRemove() {}

    func tick(nowNanos: Int64) {
        guard transport.state == .connected else { return }
        var out: [RTCPPacket] = []
        for p in producersByMid.values {
            p.tick(nowNanos: nowNanos)
            if p.nack != nil, let ssrc = p.ssrc {
                nackScratch.removeAll(keepingCapacity: true)
                p.nack?.dueInto(&nackScratch, nowNanos: nowNanos, rttNanos: Self.nackRTTNanos)
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
                guard let ssrc = p.ssrc, p.stats.received > 0 else { continue }
                var lsr: UInt32 = 0, dlsr: UInt32 = 0
                if let sr = p.senderReport {
                    lsr = UInt32(truncatingIfNeeded: sr.ntp >> 16)
                    dlsr = UInt32(truncatingIfNeeded: (nowNanos - sr.arrivalNanos) * 65536 / 1_000_000_000)
                }
                reports.append(p.stats.makeReport(ssrc: ssrc, lastSR: lsr, delaySinceLastSR: dlsr))
                p.lastReport = reports.last
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

    func transportDidConnect(_ transport: WebRTCTransport) {
        room.logger.info("publisher connected", metadata: ["room": "\(room.id)", "peer": "\(participant.peer.peerID)"])
        // Keyframes for consumers that were waiting since before the connection.
        let now = transport.ice.lastValidRequestNanos ?? transport.createdNanos
        for p in producersByMid.values where !p.consumers.isEmpty { p.requestKeyframe(nowNanos: now) }
    }

    func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        let raw = UnsafeRawBufferPointer(packet)
        if let id = extensions.transportCC, header.hasExtension, let v = header.extensionValue(id: id, in: raw),
           let seq = TransportWideSequence.decode(v) {
            twcc?.record(sequenceNumber: seq, arrivalMicros: nowNanos / 1000)
        }
        if let producer = producersBySSRC[header.ssrc] {
            producer.receive(packet, header: header, nowNanos: nowNanos, retransmission: false)
            return
        }
        if let producer = producersByRTXSSRC[header.ssrc] {
            receiveRTX(packet, header: header, producer: producer, nowNanos: nowNanos)
            return
        }
        // An SSRC the SDP did not declare: bind it by the MID extension (or the payload type).
        var found: Producer?
        if let id = extensions.mid, header.hasExtension, let v = header.extensionValue(id: id, in: raw), let mid = SDESItemExtension.decode(v) {
            found = producersByMid[mid]
        }
        if found == nil {
            let candidates = producersByMid.values.filter { $0.payloadType == header.payloadType || $0.rtxPayloadType == header.payloadType }
            if candidates.count == 1 { found = candidates[0] }
        }
        guard let producer = found else {
            unknownSSRCPackets += 1
            return
        }
        if header.payloadType == producer.rtxPayloadType {
            guard producer.rtxSSRC == nil else { unknownSSRCPackets += 1; return }
            producer.rtxSSRC = header.ssrc
            producersByRTXSSRC[header.ssrc] = producer
            receiveRTX(packet, header: header, producer: producer, nowNanos: nowNanos)
        } else if header.payloadType == producer.payloadType {
            // A new SSRC for the track (first packet, or the publisher restarted its encoder).
            if let old = producer.ssrc { producersBySSRC[old] = nil }
            producer.ssrc = header.ssrc
            producersBySSRC[header.ssrc] = producer
            if twcc == nil { twcc = TWCCRecorder(senderSSRC: rtcpSSRC, mediaSSRC: header.ssrc) }
            producer.receive(packet, header: header, nowNanos: nowNanos, retransmission: false)
        } else {
            unknownSSRCPackets += 1
        }
    }

    /// RTX (RFC 4588): the original sequence number leads the payload. Unwrapped in place: the
    /// header moves two bytes forward over it and takes the original SSRC, sequence and payload type.
    func receiveRTX(_ packet: UnsafeMutableRawBufferPointer, header: RTPHeader, producer: Producer, nowNanos: Int64) {
        guard header.payloadLength >= 2, let ssrc = producer.ssrc, let base = packet.baseAddress else { return }  // padding probes
        let osn = UInt16(packet[header.payloadOffset]) << 8 | UInt16(packet[header.payloadOffset + 1])
        (base + 2).copyMemory(from: base, byteCount: header.payloadOffset)
        let unwrapped = UnsafeMutableRawBufferPointer(rebasing: packet[2...])
        RTPRewrite.setSSRC(ssrc, in: unwrapped)
        RTPRewrite.setSequenceNumber(osn, in: unwrapped)
        RTPRewrite.setPayloadType(producer.payloadType, in: unwrapped)
        guard let h = try? RTPHeader(parsing: UnsafeRawBufferPointer(unwrapped)) else { return }
        producer.receive(unwrapped, header: h, nowNanos: nowNanos, retransmission: true)
    }

    func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64) {
        for packet in packets {
            if case .senderReport(let sr) = packet, let p = producersBySSRC[sr.ssrc] {
                p.senderReport = (sr.ntpTime, sr.rtpTime, nowNanos)
            }
        }
    }

    func transportDidClose(_ transport: WebRTCTransport, reason: String) {
        room.connectionClosed(participant, reason: reason)
    }
}
