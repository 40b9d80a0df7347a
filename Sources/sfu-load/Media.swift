import RTP
import SFU
import WebRTCClient

/// What a publisher stamps at the end of every RTP payload, so that a subscriber can tell which
/// stream and which packet it got, and when it was sent (one host, one clock): 24 bytes,
/// "SFLD", stream id, packet counter, flags, send time (CLOCK_REALTIME nanoseconds), big-endian.
/// The SFU rewrites headers, not payloads, so the stamp survives forwarding (and RTX, which only
/// prefixes the original sequence number).
enum Stamp {
    static let size = 24
    static let magic: UInt32 = 0x5346_4C44
    static let keyframeFlag: UInt32 = 1

    struct Value: Equatable {
        var stream: UInt32
        var counter: UInt32
        var flags: UInt32
        var sendNanos: Int64
    }

    /// Writes the stamp into the last ``size`` bytes of `payload`.
    static func write(_ v: Value, atEndOf payload: UnsafeMutableRawBufferPointer) {
        guard payload.count >= size, let base = payload.baseAddress else { return }
        let p = base + payload.count - size
        p.storeBytes(of: magic.bigEndian, as: UInt32.self)
        (p + 4).storeBytes(of: v.stream.bigEndian, as: UInt32.self)
        (p + 8).storeBytes(of: v.counter.bigEndian, as: UInt32.self)
        (p + 12).storeBytes(of: v.flags.bigEndian, as: UInt32.self)
        (p + 16).storeBytes(of: v.sendNanos.bigEndian, as: Int64.self)
    }

    /// Reads the stamp at the end of `payload`, or nil when there is none.
    static func read(_ payload: UnsafeRawBufferPointer) -> Value? {
        guard payload.count >= size, let base = payload.baseAddress else { return nil }
        let p = base + payload.count - size
        guard UInt32(bigEndian: p.loadUnaligned(as: UInt32.self)) == magic else { return nil }
        return Value(stream: UInt32(bigEndian: (p + 4).loadUnaligned(as: UInt32.self)),
                     counter: UInt32(bigEndian: (p + 8).loadUnaligned(as: UInt32.self)),
                     flags: UInt32(bigEndian: (p + 12).loadUnaligned(as: UInt32.self)),
                     sendNanos: Int64(bigEndian: (p + 16).loadUnaligned(as: Int64.self)))
    }
}

/// A small deterministic generator (SplitMix64) for frame-size jitter: runs are repeatable.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The RTP header a publisher writes: the fixed header and one one-byte-header extension block
/// (RFC 8285) with the MID, the transport-wide sequence number and, for simulcast, the RID (or the
/// repaired RID on RTX), like Chromium.
struct HeaderWriter {
    var midID: UInt8 = ClientSDP.midExtensionID
    var transportCCID: UInt8 = ClientSDP.transportCCExtensionID
    var ridID: UInt8 = ClientSDP.ridExtensionID
    var repairedRIDID: UInt8 = ClientSDP.repairedRIDExtensionID

    /// Writes the header at the start of `b`. - Returns: its length.
    func write(_ b: UnsafeMutableRawBufferPointer, marker: Bool, payloadType: UInt8, sequence: UInt16, timestamp: UInt32, ssrc: UInt32,
               transportSequence: UInt16, mid: [UInt8], rid: [UInt8]?, repaired: Bool = false) -> Int {
        b[0] = 0x90
        b[1] = (marker ? 0x80 : 0) | payloadType & 0x7f
        b[2] = UInt8(sequence >> 8)
        b[3] = UInt8(truncatingIfNeeded: sequence)
        b.storeBytes(of: timestamp.bigEndian, toByteOffset: 4, as: UInt32.self)
        b.storeBytes(of: ssrc.bigEndian, toByteOffset: 8, as: UInt32.self)
        b[12] = 0xBE
        b[13] = 0xDE
        var o = 16
        func element(_ id: UInt8, _ value: [UInt8]) {
            b[o] = id << 4 | UInt8(value.count - 1)
            o += 1
            for v in value {
                b[o] = v
                o += 1
            }
        }
        element(midID, mid)
        element(transportCCID, [UInt8(transportSequence >> 8), UInt8(truncatingIfNeeded: transportSequence)])
        if let rid { element(repaired ? repairedRIDID : ridID, rid) }
        while (o - 16) % 4 != 0 {
            b[o] = 0
            o += 1
        }
        let words = (o - 16) / 4
        b[14] = UInt8(words >> 8)
        b[15] = UInt8(truncatingIfNeeded: words)
        return o
    }
}

/// One outgoing RTP stream of a publisher (an audio track, a video track or one simulcast layer).
final class OutgoingStream {
    enum Kind { case audio, video }
    let id: UInt32
    let kind: Kind
    let ssrc: UInt32
    let rtxSSRC: UInt32?
    let mid: [UInt8]
    let rid: [UInt8]?
    let payloadType: UInt8
    let rtxPayloadType: UInt8
    /// Bits per second of payload (video), frames per second, keyframe period.
    let bitrate: Int
    let fps: Int
    let gop: Int
    let width: Int
    let height: Int
    /// Temporal layers (1 or 3, as Chromium's VP8 simulcast).
    let temporalLayers: Int

    var sequence = UInt16.random(in: 0...0x7FFF)
    var timestamp = UInt32.random(in: 0...UInt32.max)
    var pictureID = UInt16.random(in: 0...0x7FFF)
    var tl0PicIdx = UInt8.random(in: 0...255)
    var rtxSequence = UInt16.random(in: 0...0x7FFF)
    var frameIndex = 0
    var nextDueNanos: Int64 = 0
    var keyframeWanted = true
    /// When the pacer let the current frame's first packet leave.
    var frameLeftNanos: Int64 = 0
    /// The next packet's stamp counter, and one past the last packet actually sent (the pacer
    /// holds the ones in between).
    var counter: UInt32 = 0
    var sentThrough: UInt32 = 0
    var packetsSent: UInt32 = 0
    var octetsSent: UInt32 = 0
    var bytesSent = 0
    var keyframes = 0
    var retransmitted = 0
    var history: RetransmissionBuffer?
    var rng: SplitMix
    /// Real VP8 to send in a loop (`--encoded-video`); nil: a frame tag and filler.
    var clip: VP8Clip?
    /// With a clip only a frame's last packet carries the stamp: when each packet left, for the others.
    var sendTimes: SendTimes?

    init(id: UInt32, kind: Kind, ssrc: UInt32, rtxSSRC: UInt32?, mid: String, rid: String?, bitrate: Int, fps: Int,
         keyframeIntervalSeconds: Double, width: Int, height: Int, temporalLayers: Int) {
        self.id = id
        self.kind = kind
        self.ssrc = ssrc
        self.rtxSSRC = rtxSSRC
        self.mid = Array(mid.utf8)
        self.rid = rid.map { Array($0.utf8) }
        payloadType = kind == .audio ? 111 : 96
        rtxPayloadType = 97
        self.bitrate = bitrate
        self.fps = kind == .audio ? 50 : fps
        gop = max(1, Int((keyframeIntervalSeconds * Double(fps)).rounded()))
        self.width = width
        self.height = height
        self.temporalLayers = temporalLayers
        history = kind == .video ? RetransmissionBuffer(capacity: 512, slotSize: 1232) : nil
        rng = SplitMix(state: UInt64(id) &* 0x2545_F491_4F6C_DD1D)
    }

    var periodNanos: Int64 { 1_000_000_000 / Int64(fps) }
    var clockRate: Int { kind == .audio ? 48000 : 90000 }

    /// Payload bytes of the next video frame: keyframes weigh 5 delta frames, deltas vary by +-20%.
    func nextFrameSize(keyframe: Bool) -> Int {
        let average = Double(bitrate) / 8 / Double(fps)
        let delta = average * Double(gop) / Double(gop - 1 + 5)
        if keyframe { return Int(delta * 5) }
        return max(200, Int(delta * Double.random(in: 0.8...1.2, using: &rng)))
    }

    /// Temporal layer of the frame `frameIndex` frames after a keyframe (0, 2, 1, 2 with three layers).
    func temporalLayer(_ index: Int) -> UInt8 {
        guard temporalLayers == 3 else { return 0 }
        return [0, 2, 1, 2][index % 4]
    }
}

/// Largest plaintext RTP packet a publisher sends (the browsers' ~1200-byte budget).
let maxPacketSize = 1200

/// Writes the VP8 payload descriptor (RFC 7741: X, S on a frame's first packet, PID 0, 15-bit
/// picture id, and with temporal layers TL0PICIDX and TID, Y on keyframes). - Returns: its length.
func writeVP8Descriptor(_ p: UnsafeMutableRawBufferPointer, first: Bool, keyframe: Bool, pictureID: UInt16, tl0PicIdx: UInt8?,
                        temporalLayer: UInt8?) -> Int {
    p[0] = 0x80 | (first ? 0x10 : 0)
    p[1] = 0x80 | (tl0PicIdx != nil ? 0x40 : 0) | (temporalLayer != nil ? 0x20 : 0)
    p[2] = 0x80 | UInt8(pictureID >> 8 & 0x7f)
    p[3] = UInt8(truncatingIfNeeded: pictureID)
    var o = 4
    if let tl0PicIdx {
        p[o] = tl0PicIdx
        o += 1
    }
    if let temporalLayer {
        p[o] = temporalLayer << 6 | (keyframe ? 0x20 : 0)
        o += 1
    }
    return o
}

/// Writes a synthetic VP8 RTP payload: the descriptor, on a frame's first packet the VP8 frame tag
/// (P bit 0 on keyframes, with the start code and the size), filler, and the stamp at the end.
/// - Returns: the payload length.
func writeVP8Payload(_ p: UnsafeMutableRawBufferPointer, dataSize: Int, first: Bool, keyframe: Bool, pictureID: UInt16,
                     tl0PicIdx: UInt8?, temporalLayer: UInt8?, width: Int, height: Int, stamp: Stamp.Value) -> Int {
    let o = writeVP8Descriptor(p, first: first, keyframe: keyframe, pictureID: pictureID, tl0PicIdx: tl0PicIdx, temporalLayer: temporalLayer)
    let length = o + max(dataSize, Stamp.size + 10)
    if first {
        // Frame tag: P (bit 0), version 0, show_frame (bit 4), first partition size (19 bits).
        let partition = UInt32(min(dataSize, 0x7FFFF))
        let tag = (keyframe ? 0 : 1) | 0x10 | partition << 5
        p[o] = UInt8(truncatingIfNeeded: tag)
        p[o + 1] = UInt8(truncatingIfNeeded: tag >> 8)
        p[o + 2] = UInt8(truncatingIfNeeded: tag >> 16)
        if keyframe {
            p[o + 3] = 0x9d
            p[o + 4] = 0x01
            p[o + 5] = 0x2a
            p[o + 6] = UInt8(width & 0xff)
            p[o + 7] = UInt8(width >> 8 & 0x3f)
            p[o + 8] = UInt8(height & 0xff)
            p[o + 9] = UInt8(height >> 8 & 0x3f)
        }
    }
    Stamp.write(stamp, atEndOf: UnsafeMutableRawBufferPointer(rebasing: p[0..<length]))
    return length
}

/// NTP time (RFC 3550: seconds since 1900 in the upper 32 bits) for a CLOCK_REALTIME instant.
func ntpTime(realtimeNanos: Int64) -> UInt64 {
    let seconds = UInt64(realtimeNanos / 1_000_000_000) + 2_208_988_800
    let fraction = UInt64(realtimeNanos % 1_000_000_000) << 32 / 1_000_000_000
    return seconds << 32 | fraction
}
