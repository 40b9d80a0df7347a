import RTP

/// Bits per second over the last whole second, and smoothed over seconds.
struct RateMeter {
    var bytes = 0
    var windowStart: Int64 = 0
    private(set) var bitsPerSecond: Int64 = 0
    /// Half the last second plus half the smoothed value before it: a keyframe (several times a
    /// delta frame) in one second counts half, so the allocator does not leave a layer for it.
    private(set) var smoothedBitsPerSecond: Int64 = 0

    mutating func add(_ count: Int, nowNanos: Int64) {
        roll(nowNanos: nowNanos)
        bytes += count
    }

    mutating func roll(nowNanos: Int64) {
        let elapsed = nowNanos - windowStart
        guard elapsed >= 1_000_000_000 else { return }
        bitsPerSecond = Int64(bytes) * 8 * 1_000_000_000 / elapsed
        // Windows with nothing in them (a stream that stopped) count at once.
        smoothedBitsPerSecond = smoothedBitsPerSecond == 0 || bitsPerSecond == 0 ? bitsPerSecond : (smoothedBitsPerSecond + bitsPerSecond) / 2
        bytes = 0
        windowStart = nowNanos
    }
}

/// Events a second (a consumer's video frames) over the last whole second.
struct EventRate {
    var count = 0
    var windowStart: Int64 = 0
    private(set) var perSecond: Double = 0

    mutating func add(nowNanos: Int64) {
        roll(nowNanos: nowNanos)
        count += 1
    }

    mutating func roll(nowNanos: Int64) {
        let elapsed = nowNanos - windowStart
        guard elapsed >= 1_000_000_000 else { return }
        // A first window (from 0) or a long gap says nothing about the rate now.
        perSecond = elapsed > 3_000_000_000 ? 0 : Double(count) * 1e9 / Double(elapsed)
        count = 0
        windowStart = nowNanos
    }
}

/// Something that sees a producer's packets besides its consumers (the recorder).
/// Called on the room's loop with the decrypted packet, valid during the call only.
package protocol ProducerTap: AnyObject {
    func producer(_ producer: Producer, didReceive packet: UnsafeRawBufferPointer, header: RTPHeader, nowNanos: Int64)
}

/// What the producer learned from one video packet's payload descriptor, passed to every consumer
/// so the descriptor is parsed once per packet.
struct FrameInfo {
    /// The packet starts a keyframe.
    var keyframe = false
    /// The packet starts a frame (VP8: S bit set in partition 0; H.264/Opus: always true).
    var frameStart = true
    /// VP8 temporal layer (0 when the descriptor has none).
    var temporal: UInt8 = 0
    /// VP8 layer-sync bit: the frame depends only on the base temporal layer.
    var layerSync = false
    /// The parsed VP8 descriptor (for picture id / TL0PICIDX rewriting), nil for other codecs.
    var vp8: VP8Descriptor?
    /// The packet came again on the RTX stream, after a NACK: packets newer than it went by before it.
    var retransmission = false
}

/// One RTP stream of a producer: the only one without simulcast, one per encoding with it
/// (spatial layer `spatial`, 0 lowest). Receive statistics, the NACK register, the publisher's
/// sender-report mapping, the bitrate per temporal layer and keyframe-request pacing are per stream.
package final class ProducerStream {
    package let rid: String?
    package let spatial: Int
    package internal(set) var ssrc: UInt32?
    var rtxSSRC: UInt32?
    var stats: ReceiveStatistics
    var nack: NACKRegister?
    /// The last 512 packets as received (video), by the publisher's sequence number: the one copy
    /// every consumer rebuilds its NACKed packets from.
    var retransmissions: RetransmissionBuffer?
    /// The publisher's last SR for this stream taken as its RTP <-> NTP mapping (``SenderReportFilter``):
    /// its NTP time and RTP time, and when it arrived (our clock).
    package internal(set) var senderReport: (ntp: UInt64, rtp: UInt32, arrivalNanos: Int64)?
    /// The last SR received, taken or not: our receiver reports echo it (LSR/DLSR) for the publisher's RTT.
    var lastReceivedSR: (ntp: UInt64, arrivalNanos: Int64)?
    var senderReportFilter = SenderReportFilter()
    var lastArrival: (rtp: UInt32, nanos: Int64)?
    /// Everything this stream carries, and per temporal layer (index = TID, 0...3).
    var rate = RateMeter()
    var temporalRates = [RateMeter](repeating: RateMeter(), count: 4)
    /// Highest temporal layer seen in the last second (0 without temporal layers).
    var maxTemporal = 0
    var maxTemporalSeenNanos: Int64 = 0
    var lastPacketNanos: Int64?
    /// Since when the stream has been sending without a pause of ``inactiveAfterNanos``.
    var activeSinceNanos: Int64?
    var lastKeyframeNanos: Int64?
    /// Our last receiver report for this stream (uplink loss and jitter for the quality figures).
    var lastReport: ReceptionReport?
    var lastKeyframeRequestNanos: Int64?
    var keyframeWanted = false
    /// Frame width and height from the last keyframe.
    package internal(set) var resolution: (width: Int, height: Int)?

    init(rid: String?, spatial: Int, ssrc: UInt32?, rtxSSRC: UInt32?, kind: MediaKind, clockRate: Int) {
        self.rid = rid
        self.spatial = spatial
        self.ssrc = ssrc
        self.rtxSSRC = rtxSSRC
        self.stats = ReceiveStatistics(clockRate: clockRate)
        self.nack = kind == .video ? NACKRegister() : nil
        self.retransmissions = kind == .video ? RetransmissionBuffer(capacity: 512, slotSize: WebRTCTransport.maxPlaintextSize) : nil
    }

    /// A stream that sent nothing for this long is inactive (the publisher dropped the layer).
    static let inactiveAfterNanos: Int64 = 1_000_000_000

    func isActive(nowNanos: Int64) -> Bool {
        guard let last = lastPacketNanos else { return false }
        return nowNanos - last < Self.inactiveAfterNanos
    }

    /// The bitrate of temporal layers 0...`temporal`, bits/s, smoothed over seconds (``RateMeter``).
    func bitrate(upToTemporal temporal: Int) -> Int64 {
        var total: Int64 = 0
        for t in 0...min(max(temporal, 0), 3) { total += temporalRates[t].smoothedBitsPerSecond }
        return total
    }

    func roll(nowNanos: Int64) {
        rate.roll(nowNanos: nowNanos)
        for t in 0..<4 { temporalRates[t].roll(nowNanos: nowNanos) }
        if nowNanos - maxTemporalSeenNanos > Self.inactiveAfterNanos { maxTemporal = 0 }
    }

    /// A sender report from the publisher for this stream, received at `nowNanos`.
    func receiveSenderReport(ntp: UInt64, rtp: UInt32, nowNanos: Int64, clockRate: Int) {
        lastReceivedSR = (ntp, nowNanos)
        if senderReportFilter.offer((ntp, rtp, nowNanos), clockRate: clockRate) { senderReport = senderReportFilter.accepted }
    }

    /// This stream's RTP time and NTP time at `nowNanos`, from the publisher's last SR.
    func rtpTime(atNanos nowNanos: Int64, clockRate: Int) -> (rtp: UInt32, ntp: UInt64)? {
        guard let sr = senderReport else { return nil }
        let elapsed = nowNanos - sr.arrivalNanos
        let ticks = UInt32(truncatingIfNeeded: MediaClock.ticks(nanos: elapsed, clockRate: clockRate))
        return (sr.rtp &+ ticks, sr.ntp &+ MediaClock.ntpDuration(nanos: elapsed))
    }

    /// Two layers' SRs further apart than this are not one capture clock (or not current): a layer
    /// switch then places the new layer by arrival time.
    static let maxLayerSRDistanceNanos: Int64 = 60_000_000_000

    /// The RTP time in this stream's timeline of `rtp` from `other`'s timeline, through both
    /// streams' SR mappings (NTP), or nil when either has no SR yet or they are implausibly far apart.
    func timestamp(mapping rtp: UInt32, from other: ProducerStream, clockRate: Int) -> UInt32? {
        guard let mine = senderReport, let theirs = other.senderReport,
              let ntpDelta = MediaClock.difference(theirs.ntp, mine.ntp, limitNanos: Self.maxLayerSRDistanceNanos) else { return nil }
        // other: rtp -> NTP; mine: NTP -> rtp. Differences kept signed and small.
        let sinceTheirs = Int64(Int32(bitPattern: rtp &- theirs.rtp))
        let ntpTicks = MediaClock.ticks(nanos: ntpDelta, clockRate: clockRate)
        return mine.rtp &+ UInt32(truncatingIfNeeded: ntpTicks + sinceTheirs)
    }
}

/// An incoming track of a publisher (mediasoup's Producer): its streams (one, or one per
/// simulcast encoding), keyframe-request pacing and the consumers it fans out to. Confined to the
/// room's event loop.
package final class Producer {
    package let trackID: String
    package let peerID: String
    package let kind: MediaKind
    package let codec: ForwardedCodec
    package internal(set) var source: TrackSource
    package internal(set) var muted = false
    package let mid: String
    /// Lowest spatial layer first; one stream without simulcast.
    package let streams: [ProducerStream]
    let payloadType: UInt8
    let rtxPayloadType: UInt8?
    package let clockRate: Int
    var consumers: [Consumer] = []
    /// Observers of the packets (not called while muted: a muted track is not recorded either).
    /// With simulcast they see one stream: the highest that is active when they start, until it
    /// stops; a tap that set a size (``setTapSize(_:width:height:nowNanos:)``) sees its own.
    package var taps: [ProducerTap] = []
    var tapStream = 0
    /// Taps that choose their simulcast stream by the size they draw it at (the composite), by tap.
    /// Empty for every other use, so the taps' loop costs what it did.
    private var sizedTaps: [ObjectIdentifier: SizedTap] = [:]

    /// A tap's wanted size and the stream it sees.
    final class SizedTap {
        var width: Int
        var height: Int
        var stream: Int
        init(width: Int, height: Int, stream: Int) {
            self.width = width
            self.height = height
            self.stream = stream
        }
    }
    /// Keyframe requests: at most one per `keyframeInterval` per stream; one asked for meanwhile waits.
    static let keyframeRequestIntervalNanos: Int64 = 1_000_000_000
    /// And at most one per `keyframeRequestSpacingNanos` for the whole producer: libwebrtc ignores a
    /// request that comes within 300 ms of the last one it honoured (one encoder makes every simulcast
    /// layer, and a request gets a keyframe on each), so a request for another layer sent sooner is
    /// lost and its switch waits for the next one (a second later). It waits here instead.
    static let keyframeRequestSpacingNanos: Int64 = 350_000_000
    var lastKeyframeRequestNanos: Int64?
    package private(set) var keyframeRequestsSent = 0
    package private(set) var keyframeRequestsThrottled = 0
    /// Audio: loudness from the audio-level extension (127 - level in -dBov, smoothed), and when it was last heard.
    var loudness: Double = 0
    var loudnessNanos: Int64 = 0
    /// Sends a PLI for this stream to its publisher.
    var sendKeyframeRequest: ((ProducerStream, Int64) -> Void)?
    /// Sees the first packet of each keyframe (debug logging).
    var onKeyframe: ((ProducerStream, Int64) -> Void)?

    init(trackID: String, peerID: String, section: PublishedSection, source: TrackSource) {
        self.trackID = trackID
        self.peerID = peerID
        self.kind = section.kind
        self.codec = section.codec
        self.source = source
        self.mid = section.mid
        self.payloadType = section.payloadType
        self.rtxPayloadType = section.rtxPayloadType
        self.clockRate = section.clockRate
        if section.encodings.count > 1 {
            streams = section.encodings.enumerated().map { i, e in
                ProducerStream(rid: e.rid, spatial: i, ssrc: e.ssrc, rtxSSRC: e.rtxSSRC, kind: section.kind, clockRate: section.clockRate)
            }
        } else {
            streams = [ProducerStream(rid: nil, spatial: 0, ssrc: section.ssrc, rtxSSRC: section.rtxSSRC, kind: section.kind, clockRate: section.clockRate)]
        }
        tapStream = streams.count - 1
    }

    package var simulcast: Bool { streams.count > 1 }

    package var info: TrackInfo {
        TrackInfo(trackID: trackID, kind: kind, source: source, muted: muted, simulcast: simulcast)
    }

    /// The sender report of the stream the taps see (the recorder's timeline).
    package var senderReport: (ntp: UInt64, rtp: UInt32, arrivalNanos: Int64)? { streams[tapStream].senderReport }

    /// One decrypted packet of stream `stream`: statistics, then fan-out to every consumer.
    /// `arrivalNanos` (when the packet reached the host, ``WebRTCTransport/arrivalNanos``) times the
    /// interarrival jitter of our receiver reports: the time it waited for the worker is not network jitter.
    func receive(_ packet: UnsafeMutableRawBufferPointer, header: RTPHeader, stream: ProducerStream, nowNanos: Int64, arrivalNanos: Int64? = nil,
                 retransmission: Bool) {
        stream.stats.record(sequenceNumber: header.sequenceNumber, rtpTimestamp: header.timestamp, arrivalNanos: arrivalNanos ?? nowNanos,
                            payloadBytes: header.payloadLength, retransmission: retransmission)
        stream.nack?.received(sequenceNumber: header.sequenceNumber, nowNanos: nowNanos)
        stream.rate.add(packet.count, nowNanos: nowNanos)
        if !retransmission {
            stream.lastArrival = (header.timestamp, nowNanos)
            if !stream.isActive(nowNanos: nowNanos) { stream.activeSinceNanos = nowNanos }
            stream.lastPacketNanos = nowNanos
        }
        let raw = UnsafeRawBufferPointer(packet)
        if !consumers.isEmpty, header.payloadLength > 0 { stream.retransmissions?.store(raw, sequenceNumber: header.sequenceNumber, nowNanos: nowNanos) }
        var info = FrameInfo()
        info.retransmission = retransmission
        if kind == .video, header.payloadLength > 0 {
            let payload = UnsafeRawBufferPointer(rebasing: raw[header.payloadRange])
            switch codec {
            case .vp8:
                if let d = try? VP8Descriptor(parsing: payload) {
                    info.vp8 = d
                    info.keyframe = d.isKeyframeStart(payload: payload)
                    info.frameStart = d.startOfPartition && d.partitionIndex == 0
                    info.temporal = min(d.temporalLayer ?? 0, 3)
                    info.layerSync = d.layerSync
                    if info.keyframe, let size = d.keyframeSize(payload: payload) { stream.resolution = size }
                }
            case .h264: info.keyframe = H264.isKeyframe(payload: payload)
            case .opus: break
            }
            if info.keyframe {
                onKeyframe?(stream, nowNanos)
                stream.keyframeWanted = false
                stream.lastKeyframeNanos = nowNanos
                if stream.nack?.needsKeyframe == true { stream.nack?.keyframeHandled() }
            }
        }
        stream.temporalRates[Int(info.temporal)].add(packet.count, nowNanos: nowNanos)
        if Int(info.temporal) >= stream.maxTemporal {
            stream.maxTemporal = Int(info.temporal)
            stream.maxTemporalSeenNanos = nowNanos
        }
        for consumer in consumers {
            consumer.forward(raw, header: header, stream: stream, info: info, nowNanos: nowNanos)
        }
        if !muted, !taps.isEmpty {
            if simulcast, !retransmission {
                followForTaps(stream, keyframe: info.keyframe, nowNanos: nowNanos)
                for sized in sizedTaps.values { follow(sized, stream, keyframe: info.keyframe, nowNanos: nowNanos) }
            }
            if sizedTaps.isEmpty {
                if stream.spatial == tapStream {
                    for tap in taps { tap.producer(self, didReceive: raw, header: header, nowNanos: nowNanos) }
                }
            } else {
                for tap in taps where stream.spatial == (sizedTaps[ObjectIdentifier(tap)]?.stream ?? tapStream) {
                    tap.producer(self, didReceive: raw, header: header, nowNanos: nowNanos)
                }
            }
        }
    }

    /// Tells the producer that `tap` draws this track at most `width` x `height` pixels (0 x 0: not
    /// shown): with simulcast it then sees the smallest stream at least that size on one side (the
    /// picture is letterboxed into the rectangle, so one side reaching it means no upscaling), or
    /// the highest that sends when none is. The change is made at a keyframe of the new stream,
    /// which is asked for, so the tap's decoder never gets one stream's frames after the other's
    /// without a keyframe between; when the tap's stream stops it moves at once (its frame
    /// assembler waits for a keyframe). Without simulcast nothing changes.
    package func setTapSize(_ tap: ProducerTap, width: Int, height: Int, nowNanos: Int64) {
        guard simulcast else { return }
        let key = ObjectIdentifier(tap)
        if let sized = sizedTaps[key] {
            guard sized.width != width || sized.height != height else { return }
            sized.width = width
            sized.height = height
        } else {
            sizedTaps[key] = SizedTap(width: width, height: height, stream: tapStream)
        }
        if let sized = sizedTaps[key] {
            let want = fittingStream(sized, nowNanos: nowNanos)
            if want != sized.stream { requestKeyframe(stream: streams[want], nowNanos: nowNanos) }
        }
    }

    /// Stops `tap` (and forgets its size).
    package func removeTap(_ tap: ProducerTap) {
        taps.removeAll { $0 === tap }
        sizedTaps[ObjectIdentifier(tap)] = nil
    }

    /// The stream `tap` sees now (its RTP clock and sender reports).
    package func stream(for tap: ProducerTap) -> ProducerStream {
        streams[sizedTaps[ObjectIdentifier(tap)]?.stream ?? tapStream]
    }

    /// Asks for a keyframe of the stream `tap` sees (paced like ``requestKeyframe(nowNanos:)``).
    package func requestKeyframe(for tap: ProducerTap, nowNanos: Int64) {
        requestKeyframe(stream: stream(for: tap), nowNanos: nowNanos)
    }

    /// A stream that started sending again less than this ago is not yet one a sized tap moves to
    /// (its own stream excepted): a publisher short of CPU or uplink drops a layer and brings it back
    /// within seconds, and each move costs the tap's decoder a keyframe.
    static let tapSettleNanos: Int64 = 2_000_000_000
    /// The tap's own stream still fits while it is this much of the tile on one side: a publisher's
    /// CPU adaptation scales a layer by 3/4 for a while, which is not worth two switches.
    static let tapKeepFraction = 0.75

    /// The smallest active stream at least the tap's size on one side, else the highest active one
    /// (streams are lowest first; a stream whose size no keyframe told yet does not count as fitting).
    /// Streams that resumed within ``tapSettleNanos`` count only when no other stream has been
    /// sending longer (at start-up every stream is new).
    private func fittingStream(_ sized: SizedTap, nowNanos: Int64) -> Int {
        let active = streams.filter { $0.isActive(nowNanos: nowNanos) }
        let settled = { (s: ProducerStream) in s.activeSinceNanos.map { nowNanos - $0 >= Self.tapSettleNanos } ?? false }
        let candidates = active.contains(where: settled) ? active.filter { $0.spatial == sized.stream || settled($0) } : active
        var highest: Int?
        for s in candidates {
            let keep = s.spatial == sized.stream ? Self.tapKeepFraction : 1
            if let r = s.resolution, Double(r.width) >= keep * Double(sized.width) || Double(r.height) >= keep * Double(sized.height) {
                return s.spatial
            }
            highest = s.spatial
        }
        return highest ?? sized.stream
    }

    /// One packet of `stream` (not a retransmission) for a sized tap: move when its stream stopped,
    /// or at the wanted stream's keyframe (asked for meanwhile).
    private func follow(_ sized: SizedTap, _ stream: ProducerStream, keyframe: Bool, nowNanos: Int64) {
        let want = fittingStream(sized, nowNanos: nowNanos)
        guard want != sized.stream else { return }
        if !streams[sized.stream].isActive(nowNanos: nowNanos) {
            sized.stream = want
            requestKeyframe(stream: streams[want], nowNanos: nowNanos)
        } else if stream.spatial == want {
            if keyframe {
                sized.stream = want
            } else {
                requestKeyframe(stream: stream, nowNanos: nowNanos)
            }
        }
    }

    /// The taps (the recorder) see the highest stream that sends. When theirs stops, the highest
    /// still sending at once (the recorder's frame assembler waits for its keyframe); when a higher
    /// one sends (again), that one from its next keyframe, which is asked for.
    private func followForTaps(_ stream: ProducerStream, keyframe: Bool, nowNanos: Int64) {
        if tapStream != stream.spatial, !streams[tapStream].isActive(nowNanos: nowNanos) {
            tapStream = streams.lastIndex { $0.isActive(nowNanos: nowNanos) } ?? stream.spatial
        } else if stream.spatial > tapStream, stream.spatial == streams.lastIndex(where: { $0.isActive(nowNanos: nowNanos) }) {
            if keyframe {
                tapStream = stream.spatial
            } else {
                requestKeyframe(stream: stream, nowNanos: nowNanos)
            }
        }
    }

    /// Asks the publisher for a keyframe of the stream the taps see (the recorder), paced to one
    /// request per second.
    package func requestKeyframe(nowNanos: Int64) {
        requestKeyframe(stream: streams[tapStream], nowNanos: nowNanos)
        // Sized taps (the composite) on another stream need theirs too (the pacing sends it later).
        for sized in sizedTaps.values where sized.stream != tapStream { requestKeyframe(stream: streams[sized.stream], nowNanos: nowNanos) }
    }

    /// Asks the publisher for a keyframe on `stream`, paced to one request per second per stream.
    func requestKeyframe(stream: ProducerStream, nowNanos: Int64) {
        guard kind == .video else { return }
        guard keyframeRequestAllowed(stream, nowNanos: nowNanos) else {
            if !stream.keyframeWanted { keyframeRequestsThrottled += 1 }
            stream.keyframeWanted = true
            return
        }
        stream.lastKeyframeRequestNanos = nowNanos
        lastKeyframeRequestNanos = nowNanos
        stream.keyframeWanted = false
        keyframeRequestsSent += 1
        sendKeyframeRequest?(stream, nowNanos)
    }

    func keyframeRequestAllowed(_ stream: ProducerStream, nowNanos: Int64) -> Bool {
        if let last = stream.lastKeyframeRequestNanos, nowNanos - last < Self.keyframeRequestIntervalNanos { return false }
        if let last = lastKeyframeRequestNanos, nowNanos - last < Self.keyframeRequestSpacingNanos { return false }
        return true
    }

    /// A consumer still waiting for the keyframe it asked for this long asks again: the request or
    /// the keyframe was lost (the publisher's path moving, an ICE restart, loss).
    static let keyframeRetryNanos: Int64 = 1_500_000_000

    /// Timer work: keyframe requests that waited for the pacing interval, and again for consumers
    /// whose keyframe did not come; layer activity.
    func tick(nowNanos: Int64) {
        for stream in streams {
            stream.roll(nowNanos: nowNanos)
            if stream.keyframeWanted || stream.nack?.needsKeyframe == true {
                guard keyframeRequestAllowed(stream, nowNanos: nowNanos) else { continue }
                stream.keyframeWanted = true
                requestKeyframe(stream: stream, nowNanos: nowNanos)
            }
        }
        guard kind == .video else { return }
        for c in consumers where c.forwarding && (c.waitingForKeyframe || c.currentSpatial != c.targetSpatial) {
            let stream = streams[min(c.targetSpatial, streams.count - 1)]
            guard let last = stream.lastKeyframeRequestNanos, nowNanos - last >= Self.keyframeRetryNanos,
                  stream.lastKeyframeNanos.map({ $0 < last }) ?? true else { continue }
            requestKeyframe(stream: stream, nowNanos: nowNanos)
        }
    }

    /// RFC 6464's level of silence, -127 dBov: the extension carries 0 (loudest) to 127.
    static let silentLevel: UInt8 = 127
    /// Each packet's weight in the smoothed loudness: about 20 packets (400 ms of 20 ms frames).
    static let loudnessSmoothing = 0.05

    /// One packet's audio level (RFC 6464), smoothed: ``loudness`` is how far above silence it is.
    func noteAudioLevel(_ level: UInt8, nowNanos: Int64) {
        let aboveSilence = Double(Self.silentLevel - min(level, Self.silentLevel))
        loudness += (aboveSilence - loudness) * Self.loudnessSmoothing
        loudnessNanos = nowNanos
    }

    /// All the streams' bitrate, bits/s over the last second.
    var bitsPerSecond: Int64 { streams.reduce(0) { $0 + $1.rate.bitsPerSecond } }

    /// This track's RTP time at `nowNanos` in the publisher's timeline of the tap stream (from its SR).
    func rtpTime(atNanos nowNanos: Int64) -> (rtp: UInt32, ntp: UInt64?)? {
        streams[tapStream].rtpTime(atNanos: nowNanos, clockRate: clockRate).map { ($0.rtp, $0.ntp) }
    }
}
