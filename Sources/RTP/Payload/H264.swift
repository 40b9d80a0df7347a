/// H.264 RTP payload (RFC 6184) helpers: enough to find keyframes for passthrough forwarding.
public enum H264 {
    public static let nalIDR: UInt8 = 5
    public static let nalSPS: UInt8 = 7
    public static let nalPPS: UInt8 = 8
    public static let stapA: UInt8 = 24
    public static let fuA: UInt8 = 28

    /// Whether the packet starts or carries a keyframe: an IDR slice or an SPS, as a single NAL
    /// unit, inside a STAP-A aggregate, or as the first fragment of an FU-A.
    public static func isKeyframe(payload: UnsafeRawBufferPointer) -> Bool {
        guard let first = payload.first else { return false }
        let type = first & 0x1f
        switch type {
        case nalIDR, nalSPS:
            return true
        case stapA:
            var offset = 1
            while offset + 2 < payload.count {
                let size = Int(payload.u16(offset))
                offset += 2
                guard size > 0, offset + size <= payload.count else { return false }
                let t = payload[offset] & 0x1f
                if t == nalIDR || t == nalSPS { return true }
                offset += size
            }
            return false
        case fuA:
            guard payload.count >= 2 else { return false }
            let fu = payload[1]
            let t = fu & 0x1f
            return fu & 0x80 != 0 && (t == nalIDR || t == nalSPS)
        default:
            return false
        }
    }
}
