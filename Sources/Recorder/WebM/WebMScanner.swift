import Foundation

/// Reads back what a WebMWriter wrote, however far it got: the tracks, the frames of every complete
/// cluster and where the last complete top-level element ends. Used to finalize recordings after a
/// crash (the file may end in the middle of a cluster).
public struct WebMScan: Sendable, Equatable {
    public var videoFrames = 0
    public var audioFrames = 0
    public var width: Int?
    public var height: Int?
    public var lastTimestampMs: Int64 = 0
    /// Bytes up to the end of the last complete element (the rest is a cut-off cluster).
    public var validLength = 0
    public var hasVideoTrack = false
    public var hasAudioTrack = false

    public var durationMs: Int64 { videoFrames + audioFrames == 0 ? 0 : lastTimestampMs + (hasVideoTrack ? 33 : 20) }

    /// Scans `bytes`; nil when it does not start like a WebM file.
    public init?(bytes: [UInt8]) {
        var r = Reader(bytes: bytes)
        guard let (id, size) = r.header(), id == MKV.ebml, let s = size, r.skip(s) else { return nil }
        guard let (segment, segmentSize) = r.header(), segment == MKV.segment else { return nil }
        let segmentEnd = segmentSize.map { min(bytes.count, r.offset + $0) } ?? bytes.count
        validLength = r.offset
        var videoNumber: UInt64?, audioNumber: UInt64?
        while r.offset < segmentEnd {
            let start = r.offset
            guard let (id, size) = r.header(), let size, r.offset + size <= segmentEnd else { break }
            let body = Array(bytes[r.offset..<(r.offset + size)])
            r.offset += size
            switch id {
            case MKV.tracks:
                for (entryID, entry) in Reader.children(body) where entryID == MKV.trackEntry {
                    var number: UInt64?, type: UInt64?
                    for (fid, field) in Reader.children(entry) {
                        switch fid {
                        case MKV.trackNumber: number = Reader.uint(field)
                        case MKV.trackType: type = Reader.uint(field)
                        case MKV.video:
                            for (vid, v) in Reader.children(field) {
                                if vid == MKV.pixelWidth { width = Reader.uint(v).map(Int.init) }
                                if vid == MKV.pixelHeight { height = Reader.uint(v).map(Int.init) }
                            }
                        default: break
                        }
                    }
                    if type == 1 { videoNumber = number; hasVideoTrack = true }
                    if type == 2 { audioNumber = number; hasAudioTrack = true }
                }
            case MKV.cluster:
                var timecode: Int64 = 0
                for (cid, field) in Reader.children(body) {
                    if cid == MKV.timecode { timecode = Int64(Reader.uint(field) ?? 0) }
                    guard cid == MKV.simpleBlock, field.count >= 4, field[0] & 0x80 != 0 else { continue }
                    let track = UInt64(field[0] & 0x7F)
                    let relative = Int16(bitPattern: UInt16(field[1]) << 8 | UInt16(field[2]))
                    lastTimestampMs = max(lastTimestampMs, timecode + Int64(relative))
                    if track == videoNumber { videoFrames += 1 } else if track == audioNumber { audioFrames += 1 }
                }
            default:
                break
            }
            _ = start
            validLength = r.offset
        }
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        /// An element id and size (nil size: unknown).
        mutating func header() -> (UInt32, Int?)? {
            guard let id = vint(keepMarker: true), let size = vint(keepMarker: false) else { return nil }
            return (UInt32(truncatingIfNeeded: id.value), id.length > 4 ? nil : (size.unknown ? nil : Int(size.value)))
        }

        mutating func skip(_ n: Int) -> Bool {
            guard offset + n <= bytes.count else { return false }
            offset += n
            return true
        }

        mutating func vint(keepMarker: Bool) -> (value: UInt64, length: Int, unknown: Bool)? {
            guard offset < bytes.count else { return nil }
            let first = bytes[offset]
            guard first != 0 else { return nil }
            let length = first.leadingZeroBitCount + 1
            guard offset + length <= bytes.count else { return nil }
            var value = UInt64(keepMarker ? first : first & (0xFF >> UInt8(length)))
            for i in 1..<length { value = value << 8 | UInt64(bytes[offset + i]) }
            let allOnes = (UInt64(1) << (7 * UInt64(length))) - 1
            offset += length
            return (value, length, !keepMarker && value == allOnes)
        }

        static func children(_ body: [UInt8]) -> [(UInt32, [UInt8])] {
            var r = Reader(bytes: body)
            var out: [(UInt32, [UInt8])] = []
            while r.offset < body.count {
                guard let (id, size) = r.header(), let size, r.offset + size <= body.count else { break }
                out.append((id, Array(body[r.offset..<(r.offset + size)])))
                r.offset += size
            }
            return out
        }

        static func uint(_ b: [UInt8]) -> UInt64? {
            guard !b.isEmpty, b.count <= 8 else { return nil }
            return b.reduce(0) { $0 << 8 | UInt64($1) }
        }
    }
}
