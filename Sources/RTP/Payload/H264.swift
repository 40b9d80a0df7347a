/// H.264 RTP payload (RFC 6184) helpers: keyframes for passthrough forwarding, and the
/// depacketization and parameter sets the recorder needs to store H.264 in Matroska.
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

// MARK: depacketization (RFC 6184, packetization-mode 0 and 1)

/// Rebuilds the NAL units of one access unit from its RTP payloads, in sequence order: single NAL
/// unit packets (types 1-23), STAP-A aggregates (24) and FU-A fragments (28). The interleaved
/// mode's types (STAP-B, MTAP, FU-B) are refused: WebRTC negotiates packetization-mode 0 or 1.
public struct H264Depacketizer: Sendable {
    public enum Failure: Error, Sendable, Equatable {
        case empty
        /// A STAP-A whose unit sizes run past the packet, or a zero-size unit.
        case badAggregate
        /// An FU-A middle or end fragment without its start (a packet before it was lost).
        case fragmentWithoutStart
        /// An FU-A start while another fragmented unit was still open, or one left open at the end.
        case unfinishedFragment
        case unsupportedType(UInt8)
    }

    public private(set) var nalUnits: [[UInt8]] = []
    private var fragment: [UInt8]?

    public init() {}

    /// Adds one packet's payload.
    public mutating func push(_ payload: UnsafeRawBufferPointer) throws(Failure) {
        guard let first = payload.first else { throw .empty }
        let type = first & 0x1f
        switch type {
        case 1...23:
            guard fragment == nil else { throw .unfinishedFragment }
            nalUnits.append(Array(payload))
        case H264.stapA:
            guard fragment == nil else { throw .unfinishedFragment }
            var offset = 1
            var units: [[UInt8]] = []
            while offset < payload.count {
                guard offset + 2 <= payload.count else { throw .badAggregate }
                let size = Int(payload[offset]) << 8 | Int(payload[offset + 1])
                offset += 2
                guard size > 0, offset + size <= payload.count else { throw .badAggregate }
                units.append(Array(payload[offset..<(offset + size)]))
                offset += size
            }
            guard !units.isEmpty else { throw .badAggregate }
            nalUnits += units
        case H264.fuA:
            guard payload.count >= 3 else { throw .badAggregate }
            let header = payload[1]
            let start = header & 0x80 != 0, end = header & 0x40 != 0
            if start {
                guard fragment == nil else { throw .unfinishedFragment }
                // The unit's own header: F and NRI from the indicator, the type from the FU header.
                fragment = [(first & 0xE0) | (header & 0x1f)]
            }
            guard fragment != nil else { throw .fragmentWithoutStart }
            fragment?.append(contentsOf: payload[2...])
            if end, let unit = fragment {
                nalUnits.append(unit)
                fragment = nil
            }
        default:
            throw .unsupportedType(type)
        }
    }

    /// The access unit's NAL units. - Throws: ``Failure/unfinishedFragment`` when a fragmented unit
    /// never got its end.
    public func finish() throws(Failure) -> [[UInt8]] {
        guard fragment == nil else { throw .unfinishedFragment }
        return nalUnits
    }
}

extension H264 {
    public static let nalAUD: UInt8 = 9

    /// Whether the packet payload can begin an access unit: a whole NAL unit, an aggregate, or the
    /// first fragment of an FU-A (never an FU-A middle or end).
    public static func canStartAccessUnit(payload: UnsafeRawBufferPointer) -> Bool {
        guard let first = payload.first else { return false }
        switch first & 0x1f {
        case 1...23, stapA: return true
        case fuA: return payload.count >= 2 && payload[1] & 0x80 != 0
        default: return false
        }
    }

    /// An access unit in the AVC (ISO 14496-15) form Matroska and MP4 store: each NAL unit after
    /// its 4-byte big-endian length.
    public static func avcFrame(_ units: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(units.reduce(0) { $0 + $1.count + 4 })
        for u in units {
            let n = UInt32(u.count)
            out += [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)]
            out += u
        }
        return out
    }

    /// The NAL units of an AVC-form access unit (nil when the lengths do not add up).
    public static func nalUnits(avcFrame bytes: [UInt8]) -> [[UInt8]]? {
        var units: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            guard offset + 4 <= bytes.count else { return nil }
            let size = Int(bytes[offset]) << 24 | Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            offset += 4
            guard size > 0, offset + size <= bytes.count else { return nil }
            units.append(Array(bytes[offset..<(offset + size)]))
            offset += size
        }
        return units
    }

    /// The AVCDecoderConfigurationRecord (ISO 14496-15 5.2.4.1, "avcC") for one SPS and one PPS,
    /// with 4-byte NAL unit lengths: Matroska's CodecPrivate for `V_MPEG4/ISO/AVC`.
    public static func avcDecoderConfiguration(sps: [UInt8], pps: [UInt8]) -> [UInt8]? {
        guard sps.count >= 4, !pps.isEmpty, sps.count <= 0xFFFF, pps.count <= 0xFFFF else { return nil }
        var out: [UInt8] = [1, sps[1], sps[2], sps[3], 0xFC | 3, 0xE0 | 1]
        out += [UInt8(sps.count >> 8), UInt8(truncatingIfNeeded: sps.count)] + sps
        out += [1, UInt8(pps.count >> 8), UInt8(truncatingIfNeeded: pps.count)] + pps
        return out
    }
}

/// What the recorder needs from a sequence parameter set (ITU-T H.264 7.3.2.1.1): the profile and
/// the picture size after cropping.
public struct H264SPS: Sendable, Equatable {
    public var profileIDC: UInt8
    public var levelIDC: UInt8
    public var width: Int
    public var height: Int

    /// Parses an SPS NAL unit (with its 1-byte header). nil when it is not one or is cut short.
    public init?(nal: [UInt8]) {
        guard nal.count >= 4, nal[0] & 0x1f == H264.nalSPS else { return nil }
        var r = BitReader(rbsp: H264SPS.unescape(nal.dropFirst()))
        guard let profile = r.bits(8), r.bits(8) != nil, let level = r.bits(8), r.ue() != nil else { return nil }
        profileIDC = UInt8(profile)
        levelIDC = UInt8(level)
        var chromaFormat = 1
        var separateColourPlanes = false
        if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(profile) {
            guard let cf = r.ue() else { return nil }
            chromaFormat = cf
            if cf == 3 {
                guard let s = r.bits(1) else { return nil }
                separateColourPlanes = s == 1
            }
            guard r.ue() != nil, r.ue() != nil, r.bits(1) != nil, let scaling = r.bits(1) else { return nil }
            if scaling == 1 {
                for i in 0..<(chromaFormat != 3 ? 8 : 12) {
                    guard let present = r.bits(1) else { return nil }
                    if present == 1 {
                        var last = 8, next = 8
                        for _ in 0..<(i < 6 ? 16 : 64) {
                            if next != 0 {
                                guard let delta = r.se() else { return nil }
                                next = (last + delta + 256) % 256
                            }
                            last = next == 0 ? last : next
                        }
                    }
                }
            }
        }
        guard r.ue() != nil, let pocType = r.ue() else { return nil }  // log2_max_frame_num_minus4, pic_order_cnt_type
        if pocType == 0 {
            guard r.ue() != nil else { return nil }
        } else if pocType == 1 {
            guard r.bits(1) != nil, r.se() != nil, r.se() != nil, let cycle = r.ue(), cycle < 256 else { return nil }
            for _ in 0..<cycle { guard r.se() != nil else { return nil } }
        }
        guard r.ue() != nil, r.bits(1) != nil, let widthMbs = r.ue(), let heightUnits = r.ue(), let frameMbsOnly = r.bits(1) else { return nil }
        if frameMbsOnly == 0 { guard r.bits(1) != nil else { return nil } }
        guard r.bits(1) != nil, let cropping = r.bits(1) else { return nil }
        var crop = (left: 0, right: 0, top: 0, bottom: 0)
        if cropping == 1 {
            guard let l = r.ue(), let rt = r.ue(), let t = r.ue(), let b = r.ue() else { return nil }
            crop = (l, rt, t, b)
        }
        let fieldFactor = 2 - frameMbsOnly
        let (subWidth, subHeight) = chromaFormat == 0 || separateColourPlanes ? (1, 1) : (chromaFormat == 3 ? (1, 1) : (2, chromaFormat == 1 ? 2 : 1))
        width = (widthMbs + 1) * 16 - subWidth * (crop.left + crop.right)
        height = fieldFactor * (heightUnits + 1) * 16 - subHeight * fieldFactor * (crop.top + crop.bottom)
        guard width > 0, height > 0 else { return nil }
    }

    /// The RBSP: emulation prevention bytes (0x03 after two zero bytes) removed.
    static func unescape(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var zeros = 0
        for b in bytes {
            if zeros >= 2 && b == 3 {
                zeros = 0
                continue
            }
            zeros = b == 0 ? zeros + 1 : 0
            out.append(b)
        }
        return out
    }

    /// Reads bits MSB first, with Exp-Golomb codes; nil past the end.
    struct BitReader {
        let bytes: [UInt8]
        var position = 0
        init(rbsp: [UInt8]) { bytes = rbsp }

        mutating func bits(_ n: Int) -> Int? {
            var v = 0
            for _ in 0..<n {
                guard position < bytes.count * 8 else { return nil }
                v = v << 1 | Int(bytes[position >> 3] >> (7 - UInt8(position & 7)) & 1)
                position += 1
            }
            return v
        }

        mutating func ue() -> Int? {
            var zeros = 0
            while true {
                guard let b = bits(1) else { return nil }
                if b == 1 { break }
                zeros += 1
                guard zeros < 32 else { return nil }
            }
            guard let rest = bits(zeros) else { return nil }
            return (1 << zeros) - 1 + rest
        }

        mutating func se() -> Int? {
            guard let k = ue() else { return nil }
            return k % 2 == 1 ? (k + 1) / 2 : -(k / 2)
        }
    }
}
