import RTP
import SFU

/// A frame out of the jitter buffer: a whole VP8 frame (payload descriptors stripped, partitions
/// joined, RFC 7741), an H.264 access unit in AVC form (NAL units after 4-byte lengths, RFC 6184
/// depacketized), or one Opus packet.
package struct AssembledFrame: Sendable, Equatable {
    package var rtpTimestamp: UInt32
    package var keyframe: Bool
    package var data: [UInt8]
    /// From a VP8 keyframe's header, or an H.264 keyframe's SPS.
    package var size: (width: Int, height: Int)?
    /// When the frame's first packet arrived (the caller's clock).
    package var arrivalNanos: Int64

    package static func == (a: AssembledFrame, b: AssembledFrame) -> Bool {
        a.rtpTimestamp == b.rtpTimestamp && a.keyframe == b.keyframe && a.data == b.data
            && a.size?.width == b.size?.width && a.size?.height == b.size?.height && a.arrivalNanos == b.arrivalNanos
    }
}

/// Per-track jitter buffer and frame assembly for the recorder, sans-IO: packets go in by sequence
/// number (reordered, duplicated, missing), frames come out in order. A missing packet is waited
/// for up to `maxWaitNanos` (NACK has time to repair it); after that the frame is given up and,
/// for video, everything is dropped until the next keyframe (`wantsKeyframe` tells the caller to
/// ask for one), so the file never holds a frame the decoder cannot decode. An H.264 keyframe is an
/// access unit with an IDR slice and its SPS and PPS (what a decoder starting there needs).
package struct FrameAssembler: Sendable {
    package enum Codec: Sendable {
        case vp8, h264, opus

        /// What a producer forwarding `codec` sends.
        package init(_ codec: ForwardedCodec) {
            switch codec {
            case .vp8: self = .vp8
            case .h264: self = .h264
            case .opus: self = .opus
            }
        }
    }

    struct Packet {
        var timestamp: UInt32
        var marker: Bool
        var payload: [UInt8]
        var arrivalNanos: Int64
    }

    package let codec: Codec
    package let maxWaitNanos: Int64
    package let capacity: Int
    private var packets: [Int64: Packet] = [:]
    private var unwrapper = SequenceUnwrapper()
    private var next: Int64?
    private var needKeyframe: Bool
    /// The RTP timestamp of the last packet consumed (emitted or given up): an H.264 packet of the
    /// same timestamp continues an access unit whose start is gone.
    private var lastConsumedTimestamp: UInt32?
    /// Set when a gap made video undecodable; cleared by ``keyframeRequested()``.
    package private(set) var wantsKeyframe = false
    package private(set) var framesOut = 0
    package private(set) var framesDropped = 0
    package private(set) var packetsLost = 0

    package init(codec: Codec, maxWaitNanos: Int64? = nil, capacity: Int = 2048) {
        self.codec = codec
        self.maxWaitNanos = maxWaitNanos ?? (codec == .opus ? 120_000_000 : 400_000_000)
        self.capacity = capacity
        needKeyframe = codec != .opus
    }

    package mutating func keyframeRequested() { wantsKeyframe = false }

    /// Adds one RTP packet (`payload` is the RTP payload, padding excluded) and returns the frames it completes.
    package mutating func push(sequenceNumber: UInt16, timestamp: UInt32, marker: Bool, payload: UnsafeRawBufferPointer, nowNanos: Int64) -> [AssembledFrame] {
        let seq = unwrapper.unwrap(sequenceNumber)
        if let next, seq < next { return [] }  // late or duplicate of something emitted or given up
        guard packets[seq] == nil, !payload.isEmpty else { return [] }
        if next == nil { next = seq }
        packets[seq] = Packet(timestamp: timestamp, marker: marker, payload: Array(payload), arrivalNanos: nowNanos)
        if packets.count > capacity, let oldest = packets.keys.min() { skip(to: oldest + 1) }
        return drain(nowNanos: nowNanos)
    }

    /// Timer work: gives up on packets waited for too long. Returns frames that follow.
    package mutating func poll(nowNanos: Int64) -> [AssembledFrame] { drain(nowNanos: nowNanos) }

    /// Emits everything still buffered that forms whole frames (end of the recording).
    package mutating func flush() -> [AssembledFrame] { drain(nowNanos: .max) }

    private mutating func skip(to seq: Int64) {
        guard let n = next, seq > n else { return }
        if seq - n > Int64(packets.count) {
            // A jump (up to 32k numbers from one packet): walk what is buffered, not the gap.
            let given = packets.keys.filter { $0 < seq }
            for k in given { packets.removeValue(forKey: k) }
            packetsLost += Int(seq - n) - given.count
        } else {
            for s in n..<seq where packets.removeValue(forKey: s) == nil { packetsLost += 1 }
        }
        next = seq
    }

    private mutating func drain(nowNanos: Int64) -> [AssembledFrame] {
        var out: [AssembledFrame] = []
        while let n = next {
            if packets[n] == nil {
                // A hole at the head: wait for it, unless the oldest buffered packet waited too long.
                guard let (_, oldest) = packets.min(by: { $0.key < $1.key }).map({ ($0.key, $0.value) }),
                      nowNanos == .max || nowNanos - oldest.arrivalNanos >= maxWaitNanos else { break }
                let firstBuffered = packets.keys.min() ?? n
                skip(to: firstBuffered)
                if codec != .opus {
                    if !needKeyframe { wantsKeyframe = true }
                    needKeyframe = true
                }
                continue
            }
            switch codec {
            case .opus:
                guard let p = packets.removeValue(forKey: n) else { break }
                next = n + 1
                framesOut += 1
                out.append(AssembledFrame(rtpTimestamp: p.timestamp, keyframe: true, data: p.payload, size: nil, arrivalNanos: p.arrivalNanos))
            case .vp8, .h264:
                guard let frame = takeVideoFrame(at: n, nowNanos: nowNanos) else {
                    // The head frame misses a packet: give it up once it has waited too long.
                    guard let head = packets[n], nowNanos == .max || nowNanos - head.arrivalNanos >= maxWaitNanos else { return out }
                    var hole = n
                    while let p = packets[hole] {
                        lastConsumedTimestamp = p.timestamp
                        packets[hole] = nil
                        hole += 1
                    }
                    next = hole
                    framesDropped += 1
                    if !needKeyframe { wantsKeyframe = true }
                    needKeyframe = true
                    if packets.isEmpty { return out }
                    continue
                }
                if let frame { out.append(frame) }
            }
        }
        return out
    }

    /// Whether the packet at the head can begin a frame.
    private func startsFrame(_ p: Packet) -> Bool {
        p.payload.withUnsafeBytes { raw in
            switch codec {
            case .vp8:
                return (try? VP8Descriptor(parsing: raw)).map { $0.startOfPartition && $0.partitionIndex == 0 } ?? false
            case .h264:
                return H264.canStartAccessUnit(payload: raw) && lastConsumedTimestamp != p.timestamp
            case .opus:
                return true
            }
        }
    }

    /// The video frame starting at `n`: nil when it is not complete yet, `.some(nil)` when packets
    /// were consumed without a usable frame.
    private mutating func takeVideoFrame(at n: Int64, nowNanos: Int64) -> AssembledFrame?? {
        guard let first = packets[n] else { return nil }
        if !startsFrame(first) {
            // Not the beginning of a frame (its start was lost or came before we did): drop up to the next start.
            packets[n] = nil
            lastConsumedTimestamp = first.timestamp
            next = n + 1
            if !needKeyframe { wantsKeyframe = true }
            needKeyframe = true
            framesDropped += 1
            return .some(nil)
        }
        // Collect to the marker (or to the last packet of this timestamp when the next one starts a new frame).
        var end = n
        while true {
            guard let p = packets[end] else { return nil }  // incomplete: wait (drain handles the timeout at the head only)
            if p.marker { break }
            if let following = packets[end + 1], following.timestamp != first.timestamp { break }
            if packets[end + 1] == nil { return nil }
            end += 1
        }
        let taken = (n...end).compactMap { packets.removeValue(forKey: $0) }
        next = end + 1
        lastConsumedTimestamp = first.timestamp
        let assembled = codec == .h264 ? Self.h264Frame(taken) : Self.vp8Frame(taken)
        guard let (data, keyframe, size) = assembled else {
            // Malformed (an H.264 fragment without its start): undecodable until the next keyframe.
            if !needKeyframe { wantsKeyframe = true }
            needKeyframe = true
            framesDropped += 1
            return .some(nil)
        }
        if needKeyframe && !keyframe {
            // Still no keyframe (at the start, or since a gap): keep asking (the producer paces it).
            wantsKeyframe = true
            framesDropped += 1
            return .some(nil)
        }
        needKeyframe = false
        framesOut += 1
        return .some(AssembledFrame(rtpTimestamp: first.timestamp, keyframe: keyframe, data: data, size: size, arrivalNanos: first.arrivalNanos))
    }

    private static func vp8Frame(_ packets: [Packet]) -> (data: [UInt8], keyframe: Bool, size: (width: Int, height: Int)?)? {
        var data: [UInt8] = []
        var keyframe = false
        var size: (width: Int, height: Int)?
        for (i, p) in packets.enumerated() {
            p.payload.withUnsafeBytes { raw in
                guard let d = try? VP8Descriptor(parsing: raw) else { return }
                if i == 0 {
                    keyframe = d.isKeyframeStart(payload: raw)
                    size = d.keyframeSize(payload: raw)
                }
                data.append(contentsOf: raw[d.length...])
            }
        }
        return (data, keyframe, size)
    }

    /// An access unit in AVC form; a keyframe when it holds an IDR slice, an SPS and a PPS.
    private static func h264Frame(_ packets: [Packet]) -> (data: [UInt8], keyframe: Bool, size: (width: Int, height: Int)?)? {
        var depacketizer = H264Depacketizer()
        for p in packets {
            let ok: Bool = p.payload.withUnsafeBytes { raw in
                do throws(H264Depacketizer.Failure) {
                    try depacketizer.push(raw)
                    return true
                } catch {
                    return false
                }
            }
            guard ok else { return nil }
        }
        guard let units = try? depacketizer.finish(), !units.isEmpty else { return nil }
        let types = Set(units.compactMap { $0.first.map { $0 & 0x1f } })
        let keyframe = types.contains(H264.nalIDR) && types.contains(H264.nalSPS) && types.contains(H264.nalPPS)
        let size = keyframe ? units.first { $0.first.map { $0 & 0x1f } == H264.nalSPS }.flatMap { H264SPS(nal: $0) }.map { ($0.width, $0.height) } : nil
        return (H264.avcFrame(units), keyframe, size)
    }
}
