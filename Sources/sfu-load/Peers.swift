#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import DTLS
import RTP
import SFU
import WebRTCClient

/// What the receive path needs to know about the datagram being handled (set by the loop).
final class ReceiveContext {
    /// Kernel receive time of the current datagram (CLOCK_REALTIME), 0 when unknown.
    var kernelRealtimeNanos: Int64 = 0
}

/// One client peer connection: a ``ClientTransport`` (ICE controlling, DTLS client, SRTP) on its own
/// UDP socket connected to the server's candidate. Sends go out at once (one `send` per datagram, as
/// a browser does). With ICE-TCP, a TCP connection to the server's passive candidate instead: each
/// datagram goes as an RFC 4571 frame (what the socket does not take waits, whole frames only, and
/// goes at the next send or tick), and what arrives is cut into frames.
final class PeerConnection {
    let fd: Int32
    let transport: ClientTransport
    let server: TransportAddress
    let isTCP: Bool
    private var frames = FrameReader()
    private var outgoing = FrameWriteQueue(capacity: 1 << 20)
    private var streamBuffer: [UInt8] = []
    private(set) var datagramsOut = 0
    private(set) var bytesOut = 0
    private(set) var sendErrors = 0
    private(set) var datagramsIn = 0

    init(server: TransportAddress, local: ICELiteAgent.Credentials, remote: ICELiteAgent.Credentials,
         fingerprint: CertificateFingerprint, context: DTLSContext, tcp: Bool = false) throws {
        self.server = server
        isTCP = tcp
        if tcp {
            fd = try Sockets.connectedTCP(to: server.over(tcp: false), nonBlocking: true)
            Sockets.setBuffers(fd, bytes: 1 << 20)
            streamBuffer = [UInt8](repeating: 0, count: 64 * 1024)
        } else {
            fd = try Sockets.connectedUDP(to: server)
        }
        do {
            transport = try ClientTransport(local: local, remote: remote, serverAddress: server, context: context, serverFingerprint: fingerprint)
        } catch {
            close(fd)
            throw error
        }
        transport.onSend = { [unowned self] bytes in self.write(bytes) }
    }

    deinit { close(fd) }

    private func write(_ bytes: UnsafeRawBufferPointer) {
        if isTCP {
            if outgoing.append(bytes) {
                datagramsOut += 1
                bytesOut += bytes.count
            } else {
                sendErrors += 1
            }
            flushStream()
            return
        }
        while true {
            let n = Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT))
            if n >= 0 {
                datagramsOut += 1
                bytesOut += bytes.count
                return
            }
            if errno == EINTR { continue }
            sendErrors += 1
            return
        }
    }

    func received() { datagramsIn += 1 }

    /// Writes what waits on the TCP connection, as much as the socket takes.
    func flushStream() {
        while !outgoing.isEmpty {
            let n = outgoing.drain { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)) }
            if n > 0 { continue }
            if n < 0, errno == EINTR { continue }
            if n < 0, errno != EAGAIN, errno != EWOULDBLOCK { sendErrors += 1 }
            return
        }
    }

    /// Reads the TCP connection and hands each frame to the transport.
    func readStream(nowNanos: Int64) {
        for _ in 0..<8 {
            let n = streamBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            guard n > 0 else { return }
            streamBuffer.withUnsafeMutableBytes { raw in
                frames.consume(UnsafeMutableRawBufferPointer(rebasing: raw[0..<n])) { event in
                    if case .frame(let frame) = event {
                        datagramsIn += 1
                        transport.handleDatagram(frame, nowNanos: nowNanos)
                    }
                    return true
                }
            }
            if n < streamBuffer.count { return }
        }
    }

    var isConnected: Bool { transport.state == .connected }
}

/// A publishing participant's media: audio at 50 packets/s and VP8-like video (or three simulcast
/// layers), each packet stamped; answers PLI/FIR with a keyframe, NACKs with RTX from its history,
/// and sends a sender report per stream every second.
///
/// Video goes through a pacer as in libwebrtc (2.5 x the video bitrate, a 5 ms budget): a keyframe
/// leaves over tens of milliseconds, not as one burst. The send stamp and the transport-wide
/// sequence number are written when a packet leaves the pacer, so latency is the forwarding path's
/// only. Audio is not paced.
final class LoadPublisher {
    let connection: PeerConnection
    let streams: [OutgoingStream]
    let tally: Tally
    var transportSequence = UInt16.random(in: 0...UInt16.max)
    var writer = HeaderWriter()
    let rtcpSSRC = UInt32.random(in: 1...UInt32.max)
    var lastReportNanos: Int64 = 0
    var sending = true
    private(set) var keyframeRequests = 0
    private(set) var nacksReceived = 0
    private(set) var feedbackReceived = 0
    private var scratch = [UInt8](repeating: 0xA5, count: 1500)

    // The pacer: a ring of plaintext packets waiting to leave.
    struct Paced {
        var stream: OutgoingStream
        var length: Int
        var payloadBytes: Int
        var transportCCOffset: Int
        /// Where the stamp is (nil: a packet without one, inside an encoded frame).
        var stampOffset: Int?
        var counter: UInt32
        /// First and last packet of a frame, and whether the frame is a keyframe.
        var frameStart: Bool
        var frameEnd: Bool
        var keyframe: Bool
    }
    static let slotSize = 1280
    private var ring: [UInt8]
    private var paced: [Paced?]
    private var head = 0
    private var tail = 0
    /// Bytes per nanosecond, and the budget (bytes; may go negative after a packet).
    let pacingRate: Double
    private var budget: Double = 0
    private var lastPaceNanos: Int64 = 0
    private(set) var pacerOverflows = 0
    /// For each keyframe that left whole: nanoseconds from its first packet's departure to its last's.
    private(set) var keyframeSendNanos: [Int64] = []
    /// Frames not sent because the loop ran late by more than a frame (the load tool was starved).
    private(set) var framesSkipped = 0

    init(connection: PeerConnection, streams: [OutgoingStream], tally: Tally) {
        self.connection = connection
        self.streams = streams
        self.tally = tally
        let videoBitrate = streams.filter { $0.kind == .video }.reduce(0) { $0 + $1.bitrate }
        // Bytes per nanosecond: 1.5 Mbit/s is 0.00047. (This once read `max(1, ...)`, 1 byte/ns,
        // 8 Gbit/s: nothing was paced and every keyframe left as one burst.)
        pacingRate = Double(max(videoBitrate, 1)) * 2.5 / 8 / 1e9
        let slots = 1024
        ring = [UInt8](repeating: 0xA5, count: slots * Self.slotSize)
        paced = [Paced?](repeating: nil, count: slots)
        connection.transport.onRTCP = { [unowned self] packets in self.handleRTCP(packets) }
    }

    /// The earliest time a frame is due or the pacer may send.
    var nextDueNanos: Int64 {
        var due = streams.map(\.nextDueNanos).min() ?? .max
        if head != tail {
            due = min(due, budget >= 0 ? lastPaceNanos : lastPaceNanos + Int64(-budget / pacingRate) + 1)
        }
        return due
    }

    /// Makes every frame that is due (frames due while not connected are skipped: time moves on),
    /// then lets the pacer send what its budget allows.
    func sendDue(nowNanos: Int64) {
        for s in streams where s.nextDueNanos <= nowNanos {
            // At most one frame late; a stalled loop does not burst the backlog.
            if nowNanos - s.nextDueNanos > s.periodNanos {
                framesSkipped += Int((nowNanos - s.nextDueNanos) / s.periodNanos)
                s.nextDueNanos = nowNanos
            }
            s.nextDueNanos += s.periodNanos
            guard sending, connection.isConnected else { continue }
            if s.kind == .audio { sendAudio(s) } else { queueFrame(s) }
        }
        pace(nowNanos: nowNanos)
    }

    private func pace(nowNanos: Int64) {
        // libwebrtc's interval budget: at most 5 ms worth of bytes saved up.
        budget = min(budget + Double(nowNanos - lastPaceNanos) * pacingRate, pacingRate * 5_000_000)
        lastPaceNanos = nowNanos
        while head != tail, budget >= 0 {
            guard let p = paced[head] else { break }
            paced[head] = nil
            let slot = head
            head = (head + 1) % paced.count
            guard sending, connection.isConnected else { continue }
            budget -= Double(p.length)
            ring.withUnsafeMutableBytes { all in
                let b = UnsafeMutableRawBufferPointer(rebasing: all[(slot * Self.slotSize)..<((slot + 1) * Self.slotSize)])
                b[p.transportCCOffset] = UInt8(transportSequence >> 8)
                b[p.transportCCOffset + 1] = UInt8(truncatingIfNeeded: transportSequence)
                let sentNanos = Clock.realtimeNanos
                if let stampOffset = p.stampOffset { b.storeBytes(of: sentNanos.bigEndian, toByteOffset: stampOffset + 16, as: Int64.self) }
                p.stream.sendTimes?.record(counter: p.counter, realtimeNanos: sentNanos)
                let packet = UnsafeRawBufferPointer(rebasing: b[0..<p.length])
                let sequence = UInt16(b[2]) << 8 | UInt16(b[3])
                p.stream.history?.store(packet, sequenceNumber: sequence, nowNanos: nowNanos)
                send(p.stream, packet, payloadBytes: p.payloadBytes, counter: p.counter)
                if p.frameStart { p.stream.frameLeftNanos = nowNanos }
                if p.frameEnd, p.keyframe, p.stream.frameLeftNanos > 0 { keyframeSendNanos.append(nowNanos - p.stream.frameLeftNanos) }
            }
        }
    }

    private func sendAudio(_ s: OutgoingStream) {
        let payloadSize = 100
        scratch.withUnsafeMutableBytes { b in
            let h = writer.write(b, marker: false, payloadType: s.payloadType, sequence: s.sequence, timestamp: s.timestamp, ssrc: s.ssrc,
                                 transportSequence: transportSequence, mid: s.mid, rid: nil)
            let payload = UnsafeMutableRawBufferPointer(rebasing: b[h..<(h + payloadSize)])
            payload[0] = 0x78  // an Opus TOC byte (CELT FB 20 ms)
            Stamp.write(Stamp.Value(stream: s.id, counter: s.counter, flags: 0, sendNanos: Clock.realtimeNanos), atEndOf: payload)
            send(s, UnsafeRawBufferPointer(rebasing: b[0..<(h + payloadSize)]), payloadBytes: payloadSize, counter: s.counter)
        }
        s.sequence &+= 1
        s.counter &+= 1
        s.timestamp &+= 960
    }

    /// Packetizes one frame into the pacer: sequence numbers and stamp counters are assigned here.
    private func queueFrame(_ s: OutgoingStream) {
        let keyframe = s.keyframeWanted || s.frameIndex % s.gop == 0
        if keyframe {
            s.keyframeWanted = false
            s.frameIndex = 0
            s.keyframes += 1
        }
        let temporal = s.temporalLayer(s.frameIndex)
        if s.temporalLayers > 1, temporal == 0 { s.tl0PicIdx &+= 1 }
        let encoded = s.clip.map { $0.frames[s.frameIndex % $0.frames.count] }
        // An encoded frame's last packet also carries the stamp after the frame (a VP8 decoder does
        // not read past the last partition's data).
        let size = encoded.map { $0.count + Stamp.size } ?? s.nextFrameSize(keyframe: keyframe)
        let descriptor = s.temporalLayers > 1 ? 6 : 4
        let header = 24
        let room = maxPacketSize - header - descriptor
        let count = max(1, (size + room - 1) / room)
        let per = size / count
        for i in 0..<count {
            let next = (tail + 1) % paced.count
            guard next != head else {
                pacerOverflows += 1
                break
            }
            let dataSize = i == count - 1 ? size - per * (count - 1) : per
            let slot = tail
            ring.withUnsafeMutableBytes { all in
                let b = UnsafeMutableRawBufferPointer(rebasing: all[(slot * Self.slotSize)..<((slot + 1) * Self.slotSize)])
                let h = writer.write(b, marker: i == count - 1, payloadType: s.payloadType, sequence: s.sequence, timestamp: s.timestamp,
                                     ssrc: s.ssrc, transportSequence: 0, mid: s.mid, rid: s.rid)
                let stamp = Stamp.Value(stream: s.id, counter: s.counter, flags: keyframe ? Stamp.keyframeFlag : 0, sendNanos: 0)
                let out = UnsafeMutableRawBufferPointer(rebasing: b[h..<Self.slotSize])
                let tl0PicIdx = s.temporalLayers > 1 ? s.tl0PicIdx : nil, layer = s.temporalLayers > 1 ? temporal : nil
                let n: Int
                var stamped = true
                if let encoded {
                    let d = writeVP8Descriptor(out, first: i == 0, keyframe: keyframe, pictureID: s.pictureID, tl0PicIdx: tl0PicIdx, temporalLayer: layer)
                    let last = i == count - 1
                    let start = per * i, end = last ? encoded.count : min(encoded.count, per * (i + 1))
                    encoded.withUnsafeBytes { src in
                        UnsafeMutableRawBufferPointer(rebasing: out[d..<(d + end - start)]).copyMemory(from: UnsafeRawBufferPointer(rebasing: src[start..<end]))
                    }
                    n = d + end - start + (last ? Stamp.size : 0)
                    if last { Stamp.write(stamp, atEndOf: UnsafeMutableRawBufferPointer(rebasing: out[0..<n])) }
                    stamped = last
                } else {
                    n = writeVP8Payload(out, dataSize: dataSize, first: i == 0, keyframe: keyframe, pictureID: s.pictureID, tl0PicIdx: tl0PicIdx,
                                        temporalLayer: layer, width: s.width, height: s.height, stamp: stamp)
                }
                paced[slot] = Paced(stream: s, length: h + n, payloadBytes: n, transportCCOffset: 16 + 1 + s.mid.count + 1,
                                    stampOffset: stamped ? h + n - Stamp.size : nil, counter: s.counter, frameStart: i == 0,
                                    frameEnd: i == count - 1, keyframe: keyframe)
            }
            tail = next
            s.sequence &+= 1
            s.counter &+= 1
        }
        s.timestamp &+= UInt32(90000 / s.fps)
        s.pictureID = (s.pictureID + 1) & 0x7FFF
        s.frameIndex += 1
    }

    private func send(_ s: OutgoingStream, _ packet: UnsafeRawBufferPointer, payloadBytes: Int, counter: UInt32) {
        guard connection.transport.sendRTP(packet) else { return }
        s.sentThrough = counter &+ 1
        transportSequence &+= 1
        s.packetsSent &+= 1
        s.octetsSent &+= UInt32(payloadBytes)
        s.bytesSent += packet.count
    }

    /// Timer work: sender reports every second.
    func tick(nowNanos: Int64) {
        guard connection.isConnected, nowNanos - lastReportNanos >= 1_000_000_000 else { return }
        lastReportNanos = nowNanos
        let realtime = Clock.realtimeNanos
        let ntp = ntpTime(realtimeNanos: realtime)
        var packets: [RTCPPacket] = []
        for s in streams where s.packetsSent > 0 {
            packets.append(.senderReport(SenderReport(ssrc: s.ssrc, ntpTime: ntp, rtpTime: s.timestamp, packetCount: s.packetsSent, octetCount: s.octetsSent)))
        }
        if !packets.isEmpty {
            packets.append(.sourceDescription(SourceDescription(chunks: [.init(ssrc: streams[0].ssrc, items: [.init(type: 1, text: "client")])])))
            connection.transport.sendRTCP(packets)
        }
    }

    func handleRTCP(_ packets: [RTCPPacket]) {
        for packet in packets {
            switch packet {
            case .pli(let p):
                keyframeRequests += 1
                streams.first { $0.ssrc == p.mediaSSRC && $0.kind == .video }?.keyframeWanted = true
            case .fir(let f):
                keyframeRequests += 1
                for e in f.entries { streams.first { $0.ssrc == e.ssrc && $0.kind == .video }?.keyframeWanted = true }
            case .nack(let n):
                nacksReceived += 1
                if let s = streams.first(where: { $0.ssrc == n.mediaSSRC }) { retransmit(s, n.sequenceNumbers) }
            case .transportCC:
                feedbackReceived += 1
            default:
                break
            }
        }
    }

    /// RTX (RFC 4588): the original sequence number, then the original payload, on the RTX SSRC.
    private func retransmit(_ s: OutgoingStream, _ sequenceNumbers: [UInt16]) {
        guard let rtxSSRC = s.rtxSSRC ?? (s.rid != nil ? s.ssrc ^ 0x5A5A_5A5A : nil) else { return }
        for seq in sequenceNumbers {
            _ = s.history?.withPacket(sequenceNumber: seq, nowNanos: Clock.monotonicNanos) { stored in
                guard let h = try? RTPHeader(parsing: stored) else { return }
                let payload = UnsafeRawBufferPointer(rebasing: stored[h.payloadRange])
                scratch.withUnsafeMutableBytes { b in
                    let n = writer.write(b, marker: h.marker, payloadType: s.rtxPayloadType, sequence: s.rtxSequence, timestamp: h.timestamp,
                                         ssrc: rtxSSRC, transportSequence: transportSequence, mid: s.mid, rid: s.rid, repaired: true)
                    guard n + 2 + payload.count <= b.count, let base = b.baseAddress, let source = payload.baseAddress else { return }
                    b[n] = UInt8(seq >> 8)
                    b[n + 1] = UInt8(truncatingIfNeeded: seq)
                    (base + n + 2).copyMemory(from: source, byteCount: payload.count)
                    if connection.transport.sendRTP(UnsafeRawBufferPointer(rebasing: b[0..<(n + 2 + payload.count)])) {
                        transportSequence &+= 1
                        s.rtxSequence &+= 1
                        s.retransmitted += 1
                    }
                }
            }
        }
    }
}

/// A subscribing participant's receive side, like a browser's: per-SSRC receive statistics, NACKs
/// for gaps (video), transport-cc feedback every 100 ms, a receiver report every second; every
/// packet's stamp is checked against the tally (window counts, duplicates, one-way latency).
final class LoadSubscriber {
    let connection: PeerConnection
    let tally: Tally
    let context: ReceiveContext
    let rtcpSSRC = UInt32.random(in: 1...UInt32.max)
    /// The transport-cc extension id of the server's offer (nil: none negotiated).
    var transportCCID: UInt8?
    /// Instead of transport-cc: a REMB with this estimate every second.
    var rembBitrate: UInt64?
    /// RTX SSRC -> media SSRC (a=ssrc-group:FID of the offers).
    var rtxToMedia: [UInt32: UInt32] = [:]
    var videoSSRCs: Set<UInt32> = []
    /// Track id -> (publisher's peer id, kind), from the offers' a=msid lines.
    var tracks: [String: (peer: String, kind: String)] = [:]
    /// Tracks the server paused for bandwidth (track_paused/track_resumed), now and at any time in the window.
    var pausedTracks: Set<String> = []
    var pausedInWindow: Set<String> = []
    var pauseEvents = 0

    final class Inbound {
        var stats: ReceiveStatistics
        var nack: NACKRegister?
        var lastSR: (middle: UInt32, arrivalNanos: Int64)?
        /// Encoded video (`--encoded-video`): only a frame's last packet carries a stamp. The last
        /// stamped packet, and the unstamped ones waiting for the next stamp to place them.
        var anchor: (sequence: UInt16, stream: UInt32, counter: UInt32)?
        var unplaced: [Unplaced] = []
        init(video: Bool) {
            stats = ReceiveStatistics(clockRate: video ? 90000 : 48000)
            nack = video ? NACKRegister() : nil
        }
    }
    var inbound: [UInt32: Inbound] = [:]
    var twcc = TWCCRecorder(senderSSRC: 0, mediaSSRC: 0)
    var lastFeedbackNanos: Int64 = 0
    var lastReportNanos: Int64 = 0
    /// By stream id: what arrived.
    var received: [UInt32: Tally.Received] = [:]
    private var nackScratch: [UInt16] = []
    private(set) var nacksSent = 0
    private(set) var nackedPackets = 0
    private(set) var plisSent = 0
    private(set) var rtxReceived = 0
    /// One-way latency of this subscriber's first arrivals inside the window.
    private(set) var latencies: [Int64] = []
    private(set) var rtpPackets = 0
    private(set) var rtpBytes = 0

    init(connection: PeerConnection, tally: Tally, context: ReceiveContext) {
        self.connection = connection
        self.tally = tally
        self.context = context
        twcc.senderSSRC = rtcpSSRC
        connection.transport.onRTP = { [unowned self] packet, header in self.receive(packet, header: header) }
        connection.transport.onRTCP = { [unowned self] packets in self.handleRTCP(packets) }
    }

    /// Reads what a (re)offer says: the transport-cc id, video SSRCs and RTX pairs.
    func apply(offer: SessionDescription) {
        for m in offer.media {
            if rembBitrate == nil, let ext = m.extensions.first(where: { $0.uri == RTPExtensionURI.transportWideCC }) { transportCCID = ext.id }
            for g in m.values("ssrc-group") where g.hasPrefix("FID ") {
                let parts = g.split(separator: " ").dropFirst().compactMap { UInt32($0) }
                if parts.count == 2 { rtxToMedia[parts[1]] = parts[0] }
            }
            if m.kind == "video" { videoSSRCs.formUnion(m.ssrcs.filter { rtxToMedia[$0] == nil }) }
            if let msid = m.value("msid") {
                let parts = msid.split(separator: " ")
                if parts.count == 2 { tracks[String(parts[1])] = (String(parts[0]), m.kind) }
            }
        }
    }

    func receive(_ packet: UnsafeMutableRawBufferPointer, header: RTPHeader) {
        let now = Clock.monotonicNanos
        let raw = UnsafeRawBufferPointer(packet)
        rtpPackets += 1
        rtpBytes += packet.count
        if let id = transportCCID, header.hasExtension, let v = header.extensionValue(id: id, in: raw), let seq = TransportWideSequence.decode(v) {
            if twcc.mediaSSRC == 0 { twcc.mediaSSRC = header.ssrc }
            // Arrival at the socket (the kernel's receive time), as a browser's network thread sees
            // it, not when this single thread got round to the packet: one realtime timebase either way.
            let arrival = context.kernelRealtimeNanos != 0 ? context.kernelRealtimeNanos : Clock.realtimeNanos
            twcc.record(sequenceNumber: seq, arrivalMicros: arrival / 1000)
        }
        var payload = UnsafeRawBufferPointer(rebasing: raw[header.payloadRange])
        var ssrc = header.ssrc
        var sequence = header.sequenceNumber
        var retransmission = false
        if let media = rtxToMedia[header.ssrc] {
            guard payload.count >= 2 else { return }  // padding-only probe
            sequence = UInt16(payload[0]) << 8 | UInt16(payload[1])
            payload = UnsafeRawBufferPointer(rebasing: payload[2...])
            ssrc = media
            retransmission = true
            rtxReceived += 1
        }
        let entry: Inbound
        if let known = inbound[ssrc] {
            entry = known
        } else {
            entry = Inbound(video: header.payloadType != 111)
            inbound[ssrc] = entry
        }
        entry.stats.record(sequenceNumber: sequence, rtpTimestamp: header.timestamp, arrivalNanos: now, payloadBytes: payload.count,
                           retransmission: retransmission)
        entry.nack?.received(sequenceNumber: sequence, nowNanos: now)
        let arrival = context.kernelRealtimeNanos != 0 ? context.kernelRealtimeNanos : Clock.realtimeNanos
        let unplaced = Unplaced(sequence: sequence, arrivalNanos: arrival, fromKernel: context.kernelRealtimeNanos != 0, bytes: packet.count,
                                retransmission: retransmission)
        guard let stamp = Stamp.read(payload) else {
            if entry.nack != nil { hold(unplaced, in: entry) } else { tally.unstamped += 1 }
            return
        }
        account(stamp, unplaced)
        if entry.nack != nil { anchor(entry, at: sequence, stamp) }
    }

    /// A packet of an encoded frame without a stamp (every packet but a frame's last).
    struct Unplaced {
        var sequence: UInt16
        var arrivalNanos: Int64
        var fromKernel: Bool
        var bytes: Int
        var retransmission: Bool
    }

    /// Holds an unstamped packet until the next stamped one of its SSRC (normally the last packet of
    /// the same frame) places it; a late one (a retransmission, reordering) is placed from the
    /// last stamp at once. The SFU forwards a frame's packets with consecutive sequence numbers, as
    /// the publisher numbered them with its counters, so the distance in sequence numbers to a
    /// stamped packet is the distance in counters.
    private func hold(_ p: Unplaced, in entry: Inbound) {
        if let a = entry.anchor, Int16(bitPattern: a.sequence &- p.sequence) > 0 {
            place(p, from: a)
            return
        }
        entry.unplaced.append(p)
        if entry.unplaced.count > 1024 {
            // No stamp for a thousand packets: not encoded frames of ours.
            tally.unstamped += entry.unplaced.count
            entry.unplaced.removeAll()
        }
    }

    private func anchor(_ entry: Inbound, at sequence: UInt16, _ stamp: Stamp.Value) {
        let a = (sequence: sequence, stream: stamp.stream, counter: stamp.counter)
        if let last = entry.anchor, Int16(bitPattern: sequence &- last.sequence) < 0 { return }  // an older stamp (a retransmission)
        entry.anchor = a
        guard !entry.unplaced.isEmpty else { return }
        var kept: [Unplaced] = []
        for p in entry.unplaced {
            let distance = Int16(bitPattern: sequence &- p.sequence)
            if distance > 0 {
                place(p, from: a)
            } else {
                kept.append(p)  // after the stamp (reordered): the next stamp places it
            }
        }
        entry.unplaced = kept
    }

    /// Places what is still held from each SSRC's last stamp, forward (at the end of the run: a
    /// frame whose last packet did not leave the publisher before it stopped sending).
    func placeHeld() {
        for entry in inbound.values where !entry.unplaced.isEmpty {
            if let a = entry.anchor {
                for p in entry.unplaced { place(p, from: a) }
            } else {
                tally.unstamped += entry.unplaced.count
            }
            entry.unplaced.removeAll()
        }
    }

    private func place(_ p: Unplaced, from a: (sequence: UInt16, stream: UInt32, counter: UInt32)) {
        let counter = a.counter &+ UInt32(bitPattern: Int32(Int16(bitPattern: p.sequence &- a.sequence)))
        guard let sent = tally.sendTimes(a.stream)?.sent(counter: counter) else {
            tally.unstamped += 1
            return
        }
        account(Stamp.Value(stream: a.stream, counter: counter, flags: 0, sendNanos: sent), p)
        tally.placedBySequence += 1
    }

    /// Counts one packet of `stamp.stream` (window, duplicates, one-way latency).
    private func account(_ stamp: Stamp.Value, _ p: Unplaced) {
        let latency = p.arrivalNanos - stamp.sendNanos
        if p.fromKernel { tally.latencyFromKernel += 1 } else { tally.latencyFromUserspace += 1 }
        if tally.record(stamp, bytes: p.bytes, into: &received[stamp.stream, default: Tally.Received()], latencyNanos: latency,
                        retransmission: p.retransmission), !p.retransmission {
            latencies.append(latency)
        }
    }

    func handleRTCP(_ packets: [RTCPPacket]) {
        let now = Clock.monotonicNanos
        for case .senderReport(let sr) in packets {
            inbound[sr.ssrc]?.lastSR = (sr.ntpMiddle, now)
        }
    }

    /// Timer work: NACKs for what is missing, transport-cc feedback every 100 ms, RR every second.
    func tick(nowNanos: Int64) {
        guard connection.isConnected else { return }
        var out: [RTCPPacket] = []
        for (ssrc, entry) in inbound where entry.nack != nil {
            nackScratch.removeAll(keepingCapacity: true)
            entry.nack?.dueInto(&nackScratch, nowNanos: nowNanos, rttNanos: 20_000_000)
            if !nackScratch.isEmpty {
                out.append(.nack(GenericNACK(senderSSRC: rtcpSSRC, mediaSSRC: ssrc, lost: nackScratch)))
                nacksSent += 1
                nackedPackets += nackScratch.count
            }
            if entry.nack?.needsKeyframe == true {
                entry.nack?.keyframeHandled()
                out.append(.pli(PictureLossIndication(senderSSRC: rtcpSSRC, mediaSSRC: ssrc)))
                plisSent += 1
            }
        }
        if transportCCID != nil, nowNanos - lastFeedbackNanos >= 100_000_000 {
            lastFeedbackNanos = nowNanos
            for fb in twcc.buildFeedback() { out.append(.transportCC(fb)) }
        }
        if nowNanos - lastReportNanos >= 1_000_000_000, !inbound.isEmpty {
            lastReportNanos = nowNanos
            var reports: [ReceptionReport] = []
            for (ssrc, entry) in inbound.prefix(31) {
                var lsr: UInt32 = 0, dlsr: UInt32 = 0
                if let sr = entry.lastSR {
                    lsr = sr.middle
                    dlsr = UInt32(truncatingIfNeeded: (nowNanos - sr.arrivalNanos) * 65536 / 1_000_000_000)
                }
                reports.append(entry.stats.makeReport(ssrc: ssrc, lastSR: lsr, delaySinceLastSR: dlsr))
            }
            out.insert(.receiverReport(ReceiverReport(ssrc: rtcpSSRC, reports: reports)), at: 0)
            if let rembBitrate { out.append(.remb(ReceiverEstimatedMaximumBitrate(senderSSRC: rtcpSSRC, bitrate: rembBitrate, ssrcs: Array(inbound.keys.prefix(16))))) }
        }
        guard !out.isEmpty else { return }
        // Compounds stay under the MTU.
        var batch: [RTCPPacket] = []
        for p in out {
            batch.append(p)
            if batch.count == 8 {
                connection.transport.sendRTCP(batch)
                batch.removeAll()
            }
        }
        if !batch.isEmpty { connection.transport.sendRTCP(batch) }
    }

    /// RFC 3550 loss over everything received so far, summed over SSRCs.
    var sequenceLoss: (expected: Int64, lost: Int64) {
        inbound.values.reduce((0, 0)) { ($0.0 + $1.stats.expected, $0.1 + $1.stats.cumulativeLost) }
    }
}
