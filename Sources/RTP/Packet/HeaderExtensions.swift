/// Decoders and encoders for the values of the header extensions WebRTC uses. The ids come from
/// the SDP's `a=extmap` lines; these functions only know the value formats.
public enum RTPExtensionURI {
    public static let absSendTime = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
    public static let transportWideCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
    public static let sdesMid = "urn:ietf:params:rtp-hdrext:sdes:mid"
    public static let rtpStreamID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
    public static let repairedRTPStreamID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
    public static let audioLevel = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    public static let videoOrientation = "urn:3gpp:video-orientation"
}

/// abs-send-time: a 24-bit 6.18 fixed-point number of seconds (wraps every 64 s).
public enum AbsSendTime {
    /// The raw 24-bit value, or nil if `value` is not 3 bytes.
    public static func decode(_ value: UnsafeRawBufferPointer) -> UInt32? {
        value.count == 3 ? value.u24(0) : nil
    }

    /// The 24-bit value for a time in nanoseconds.
    public static func encode(nanoseconds: UInt64) -> [UInt8] {
        // seconds * 2^18, keeping 24 bits.
        let v = UInt32(truncatingIfNeeded: (nanoseconds << 18) / 1_000_000_000) & 0xFF_FFFF
        return [UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)]
    }

    /// The value in nanoseconds modulo 64 s.
    public static func nanoseconds(_ raw: UInt32) -> UInt64 {
        (UInt64(raw & 0xFF_FFFF) * 1_000_000_000) >> 18
    }
}

/// transport-wide-cc: a 16-bit transport-wide sequence number.
public enum TransportWideSequence {
    public static func decode(_ value: UnsafeRawBufferPointer) -> UInt16? {
        value.count == 2 ? value.u16(0) : nil
    }

    public static func encode(_ seq: UInt16) -> [UInt8] { [UInt8(seq >> 8), UInt8(truncatingIfNeeded: seq)] }
}

/// sdes:mid, rtp-stream-id, repaired-rtp-stream-id: short identifiers as bytes (RFC 8852: 1-16
/// alphanumeric characters for rid; mid is an SDP token).
public enum SDESItemExtension {
    /// The value as a string, or nil if it is empty or not ASCII.
    public static func decode(_ value: UnsafeRawBufferPointer) -> String? {
        guard !value.isEmpty, value.allSatisfy({ $0 >= 0x20 && $0 < 0x7f }) else { return nil }
        return String(decoding: value, as: UTF8.self)
    }

    public static func encode(_ value: String) -> [UInt8] { Array(value.utf8) }
}

/// ssrc-audio-level (RFC 6464): voice activity flag and the level in -dBov (0 loudest, 127 silence).
public struct AudioLevel: Sendable, Equatable {
    public var voiceActivity: Bool
    public var level: UInt8

    public init(voiceActivity: Bool, level: UInt8) {
        self.voiceActivity = voiceActivity
        self.level = min(level, 127)
    }

    public init?(decoding value: UnsafeRawBufferPointer) {
        guard value.count >= 1 else { return nil }  // 1 byte; some senders pad the element to 2-4
        voiceActivity = value[0] & 0x80 != 0
        level = value[0] & 0x7f
    }

    public var encoded: [UInt8] { [(voiceActivity ? 0x80 : 0) | (level & 0x7f)] }
}

/// urn:3gpp:video-orientation (3GPP TS 26.114): camera, flip and rotation.
public struct VideoOrientation: Sendable, Equatable {
    /// false = front-facing camera, true = back-facing.
    public var backCamera: Bool
    public var horizontalFlip: Bool
    /// 0, 90, 180 or 270.
    public var rotationDegrees: Int

    public init(backCamera: Bool = false, horizontalFlip: Bool = false, rotationDegrees: Int) {
        self.backCamera = backCamera
        self.horizontalFlip = horizontalFlip
        self.rotationDegrees = ((rotationDegrees % 360 + 360) % 360) / 90 * 90
    }

    public init?(decoding value: UnsafeRawBufferPointer) {
        guard value.count >= 1 else { return nil }
        let b = value[0]
        backCamera = b & 0x08 != 0
        horizontalFlip = b & 0x04 != 0
        rotationDegrees = Int(b & 0x03) * 90
    }

    public var encoded: [UInt8] {
        [(backCamera ? 0x08 : 0) | (horizontalFlip ? 0x04 : 0) | UInt8(rotationDegrees / 90 & 0x03)]
    }
}
