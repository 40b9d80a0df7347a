import RTP

/// Bits per second over the last whole second.
struct RateMeter {
    var bytes = 0
    var windowStart: Int64 = 0
    private(set) var bitsPerSecond: Int64 = 0

    mutating func add(_ count: Int, nowNanos: Int64) {
        roll(nowNanos: nowNanos)
        bytes += count
    }

    mutating func roll(nowNanos: Int64) {
        let elapsed = nowNanos - windowStart
        guard elapsed >= 1_000_000_000 else { return }
        bitsPerSecond = Int64(bytes) * 8 * 1_000_000_000 / elapsed
        bytes = 0
        windowStart = nowNanos
    }
}

/// Something that sees a producer's packets besides its consumers (the recorder).
/// Called on the room's loop with the decrypted packet, valid during the call only.
public protocol ProducerTap: AnyObject {
    func producer(_ producer: Producer, didReceive packet: UnsafeRawBufferPointer, header: RTPHeader, nowNanos: Int64)
}

/// An incoming track of a publisher (mediasoup's Producer): its receive statistics, the NACK
/// register for what we lost, the publisher's sender-report mapping, keyframe-request pacing and the
/// consumers it fans out to. Confined to the room's event loop.
public final class Producer {
    public let trackID: String
    public let peerID: String
    public let kind: MediaKind
    public let codec: ForwardedCodec
    public internal(set) var source: TrackSource
    public internal(set) var muted = false
    public let mid: String
    var ssrc: UInt32?
    var rtxSSRC: UInt32?
    let payloadType: UInt8
    let rtxPayloadType: UInt8?
    public let clockRate: Int
    var stats: ReceiveStatistics
    var nack: NACKRegister?
    var consumers: [Consumer] = []
    /// Observers of the packets (not called while muted: a muted track is not recorded either).
    public var taps: [ProducerTap] = []
    /// The publisher's last SR: its NTP time and RTP time, and when it arrived (our clock).
    public internal(set) var senderReport: (ntp: UInt64, rtp: UInt32, arrivalNanos: Int64)?
    var lastArrival: (rtp: UInt32, nanos: Int64)?
    var rate = RateMeter()
    /// Our last receiver report for this track (uplink loss and jitter for the quality figures).
    var lastReport: ReceptionReport?
    /// Keyframe requests: at most one per `keyframeInterval`; one asked for meanwhile waits.
    static let keyframeRequestIntervalNanos: Int64 = 1_000_000_000
    var lastKeyframeRequestNanos: Int64?
    var keyframeWanted = false
    public private(set) var keyframeRequestsSent = 0
    public private(set) var keyframeRequestsThrottled = 0
    /// Sends a PLI for this producer to its publisher.
    var sendKeyframeRequest: ((Producer) -> Void)?

    init(trackID: String, peerID: String, section: PublishedSection, source: TrackSource) {
        self.trackID = trackID
        self.peerID = peerID
        self.kind = section.kind
        self.codec = section.codec
        self.source = source
        self.mid = section.mid
        self.ssrc = section.ssrc
        self.rtxSSRC = section.rtxSSRC
        self.payloadType = section.payloadType
        self.rtxPayloadType = section.rtxPayloadType
        self.clockRate = section.clockRate
        self.stats = ReceiveStatistics(clockRate: section.clockRate)
        self.nack = section.kind == .video ? NACKRegister() : nil
    }

    public var info: TrackInfo {
        TrackInfo(trackID: trackID, kind: kind, source: source, muted: muted, simulcast: false)
    }

    /// One decrypted packet of this track: statistics, then fan-out to every consumer.
    func receive(_ packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64, retransmission: Bool) {
        stats.record(sequenceNumber: header.sequenceNumber, rtpTimestamp: header.timestamp, arrivalNanos: nowNanos,
                     payloadBytes: header.payloadLength, retransmission: retransmission)
        nack?.received(sequenceNumber: header.sequenceNumber, nowNanos: nowNanos)
        rate.add(packet.count, nowNanos: nowNanos)
        if !retransmission { lastArrival = (header.timestamp, nowNanos) }
        let raw = UnsafeRawBufferPointer(packet)
        var keyframe = false
        if kind == .video, header.payloadLength > 0 {
            let payload = UnsafeRawBufferPointer(rebasing: raw[header.payloadRange])
            switch codec {
            case .vp8: keyframe = (try? VP8Descriptor(parsing: payload))?.isKeyframeStart(payload: payload) ?? false
            case .h264: keyframe = H264.isKeyframe(payload: payload)
            case .opus: break
            }
            if keyframe {
                keyframeWanted = false
                if nack?.needsKeyframe == true { nack?.keyframeHandled() }
            }
        }
        for consumer in consumers {
            consumer.forward(raw, header: header, keyframe: keyframe, nowNanos: nowNanos)
        }
        if !muted {
            for tap in taps { tap.producer(self, didReceive: raw, header: header, nowNanos: nowNanos) }
        }
    }

    /// Asks the publisher for a keyframe, paced to one request per second.
    public func requestKeyframe(nowNanos: Int64) {
        guard kind == .video else { return }
        if let last = lastKeyframeRequestNanos, nowNanos - last < Self.keyframeRequestIntervalNanos {
            if !keyframeWanted { keyframeRequestsThrottled += 1 }
            keyframeWanted = true
            return
        }
        lastKeyframeRequestNanos = nowNanos
        keyframeWanted = false
        keyframeRequestsSent += 1
        sendKeyframeRequest?(self)
    }

    /// Timer work: a keyframe request that waited for the pacing interval.
    func tick(nowNanos: Int64) {
        rate.roll(nowNanos: nowNanos)
        if keyframeWanted || nack?.needsKeyframe == true {
            if let last = lastKeyframeRequestNanos, nowNanos - last < Self.keyframeRequestIntervalNanos { return }
            keyframeWanted = true
            requestKeyframe(nowNanos: nowNanos)
        }
    }

    /// This track's RTP time at `nowNanos` in the publisher's timeline (from its SR, else from the last packet).
    func rtpTime(atNanos nowNanos: Int64) -> (rtp: UInt32, ntp: UInt64?)? {
        if let sr = senderReport {
            let elapsed = nowNanos - sr.arrivalNanos
            let ticks = UInt32(truncatingIfNeeded: elapsed * Int64(clockRate) / 1_000_000_000)
            let ntpElapsed = (UInt64(max(0, elapsed)) << 32) / 1_000_000_000
            return (sr.rtp &+ ticks, sr.ntp &+ ntpElapsed)
        }
        return nil
    }
}
