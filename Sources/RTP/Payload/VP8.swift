/// The VP8 RTP payload descriptor (RFC 7741 section 4.2), parsed without copying.
public struct VP8Descriptor: Sendable, Equatable {
    /// N: the frame is not a reference for other frames.
    public var nonReference: Bool
    /// S: the packet starts a VP8 partition.
    public var startOfPartition: Bool
    /// PID: partition index (0-7).
    public var partitionIndex: UInt8
    /// 7- or 15-bit picture id, when present.
    public var pictureID: UInt16?
    /// Whether the picture id is the 15-bit form (M bit).
    public var pictureIDIs15Bit: Bool
    public var tl0PicIdx: UInt8?
    /// Temporal layer index (TID), when the T bit is set.
    public var temporalLayer: UInt8?
    /// Y: layer sync; the frame depends only on the base temporal layer.
    public var layerSync: Bool
    public var keyIndex: UInt8?
    /// Length of the descriptor; the VP8 payload starts here (relative to the RTP payload).
    public var length: Int
    /// Offset of the picture id within the descriptor, for in-place rewriting (0 = absent).
    public var pictureIDOffset: Int
    /// Offset of TL0PICIDX within the descriptor (0 = absent).
    public var tl0PicIdxOffset: Int

    /// Parses the descriptor at the start of `payload` (the RTP payload).
    /// - Throws: ``RTPParseError/truncated(needed:available:)`` when the descriptor runs past the payload.
    @inlinable
    public init(parsing payload: UnsafeRawBufferPointer) throws(RTPParseError) {
        guard payload.count >= 1 else { throw .truncated(needed: 1, available: 0) }
        let b0 = payload[0]
        nonReference = b0 & 0x20 != 0
        startOfPartition = b0 & 0x10 != 0
        partitionIndex = b0 & 0x07
        pictureID = nil
        pictureIDIs15Bit = false
        tl0PicIdx = nil
        temporalLayer = nil
        layerSync = false
        keyIndex = nil
        pictureIDOffset = 0
        tl0PicIdxOffset = 0
        var offset = 1
        if b0 & 0x80 != 0 {
            guard payload.count > offset else { throw .truncated(needed: offset + 1, available: payload.count) }
            let x = payload[offset]
            offset += 1
            if x & 0x80 != 0 {  // I
                guard payload.count > offset else { throw .truncated(needed: offset + 1, available: payload.count) }
                pictureIDOffset = offset
                if payload[offset] & 0x80 != 0 {
                    guard payload.count > offset + 1 else { throw .truncated(needed: offset + 2, available: payload.count) }
                    pictureIDIs15Bit = true
                    pictureID = UInt16(payload[offset] & 0x7f) << 8 | UInt16(payload[offset + 1])
                    offset += 2
                } else {
                    pictureID = UInt16(payload[offset] & 0x7f)
                    offset += 1
                }
            }
            if x & 0x40 != 0 {  // L
                guard payload.count > offset else { throw .truncated(needed: offset + 1, available: payload.count) }
                tl0PicIdxOffset = offset
                tl0PicIdx = payload[offset]
                offset += 1
            }
            if x & 0x30 != 0 {  // T or K
                guard payload.count > offset else { throw .truncated(needed: offset + 1, available: payload.count) }
                let tk = payload[offset]
                if x & 0x20 != 0 {
                    temporalLayer = tk >> 6
                    layerSync = tk & 0x20 != 0
                }
                if x & 0x10 != 0 { keyIndex = tk & 0x1f }
                offset += 1
            }
        }
        length = offset
    }

    /// Whether the packet starts a keyframe: first packet of partition 0 and the VP8 payload
    /// header's P bit is 0 (RFC 7741 4.3, RFC 6386 9.1).
    @inlinable
    public func isKeyframeStart(payload: UnsafeRawBufferPointer) -> Bool {
        guard startOfPartition, partitionIndex == 0, payload.count > length else { return false }
        return payload[length] & 0x01 == 0
    }

    /// Width and height from a keyframe's uncompressed data chunk (RFC 6386 9.1), or nil when the
    /// packet is not the start of a keyframe or is too short.
    public func keyframeSize(payload: UnsafeRawBufferPointer) -> (width: Int, height: Int)? {
        guard isKeyframeStart(payload: payload), payload.count >= length + 10 else { return nil }
        let p = length
        guard payload[p + 3] == 0x9d, payload[p + 4] == 0x01, payload[p + 5] == 0x2a else { return nil }
        let width = Int(UInt16(payload[p + 7]) << 8 | UInt16(payload[p + 6])) & 0x3fff
        let height = Int(UInt16(payload[p + 9]) << 8 | UInt16(payload[p + 8])) & 0x3fff
        return (width, height)
    }

    /// Rewrites the picture id and TL0PICIDX in place, keeping the descriptor's layout (a 7-bit
    /// picture id stays 7-bit: the value is taken modulo 128). Fields the descriptor lacks are left alone.
    @inlinable
    public func rewrite(pictureID newPictureID: UInt16?, tl0PicIdx newTL0: UInt8?, in payload: UnsafeMutableRawBufferPointer) {
        if let newPictureID, pictureIDOffset != 0 {
            if pictureIDIs15Bit {
                payload[pictureIDOffset] = 0x80 | UInt8(truncatingIfNeeded: newPictureID >> 8) & 0x7f
                payload[pictureIDOffset + 1] = UInt8(truncatingIfNeeded: newPictureID)
            } else {
                payload[pictureIDOffset] = UInt8(truncatingIfNeeded: newPictureID) & 0x7f
            }
        }
        if let newTL0, tl0PicIdxOffset != 0 {
            payload[tl0PicIdxOffset] = newTL0
        }
    }
}
