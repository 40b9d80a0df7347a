import Foundation

/// Reads back what a WebMWriter wrote, however far it got: the tracks, the frames of every complete
/// cluster and where the last complete top-level element ends. Used to finalize recordings after a
/// crash (the file may end in the middle of a cluster).
package struct WebMScan: Sendable, Equatable {
    package var videoFrames = 0
    package var audioFrames = 0
    package var width: Int?
    package var height: Int?
    package var lastTimestampMs: Int64 = 0
    /// Bytes up to the end of the last complete element (the rest is a cut-off cluster).
    package var validLength = 0
    package var hasVideoTrack = false
    package var hasAudioTrack = false

    package var durationMs: Int64 { videoFrames + audioFrames == 0 ? 0 : lastTimestampMs + (hasVideoTrack ? 33 : 20) }

    /// Bytes of the file scanned (where `validLength` falls short of it, the file is to be cut).
    package var scannedLength = 0
    /// Top-level elements larger than this end the scan (a corrupt size): the scan holds one
    /// element in memory at a time, never the file.
    package static let maxElementBytes = 256 << 20

    /// Scans `bytes`; nil when it does not start like a WebM file.
    package init?(bytes: [UInt8]) {
        self.init(length: bytes.count) { offset, count in
            offset >= bytes.count ? [] : Array(bytes[offset..<min(bytes.count, offset + count)])
        }
    }

    /// Scans the file at `path` element by element (a multi-gigabyte recording is never read whole:
    /// headers, the tracks and one cluster at a time); nil when it cannot be read or does not start
    /// like a WebM file.
    package init?(path: String) {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let end = try? handle.seekToEnd(), let length = Int(exactly: end) else { return nil }
        self.init(length: length) { offset, count in
            guard (try? handle.seek(toOffset: UInt64(offset))) != nil, let data = try? handle.read(upToCount: count) else { return [] }
            return [UInt8](data)
        }
    }

    /// The scan over a random-access source of `length` bytes: `read(offset, count)` returns up to
    /// `count` bytes at `offset` (fewer at the end).
    init?(length: Int, read: (Int, Int) -> [UInt8]) {
        scannedLength = length
        /// The element header at `offset`: (id, size or nil when unknown, header length).
        func header(at offset: Int) -> (UInt32, Int?, Int)? {
            var r = Reader(bytes: read(offset, 16))
            guard let (id, size) = r.header() else { return nil }
            return (id, size, r.offset)
        }
        guard let (id, size, used) = header(at: 0), id == MKV.ebml, let s = size, s <= length - used else { return nil }
        guard let (segment, segmentSize, segmentUsed) = header(at: used + s), segment == MKV.segment else { return nil }
        var offset = used + s + segmentUsed
        let segmentEnd = segmentSize.map { $0 <= length - offset ? offset + $0 : length } ?? length
        validLength = offset
        var videoNumber: UInt64?, audioNumber: UInt64?
        scan: while offset < segmentEnd {
            guard let (id, size, used) = header(at: offset), let size, size <= segmentEnd - offset - used,
                  size <= Self.maxElementBytes else { break }
            let bodyStart = offset + used
            // Only the tracks and the clusters are read; anything else is skipped over.
            let body = id == MKV.tracks || id == MKV.cluster ? read(bodyStart, size) : []
            if id == MKV.tracks || id == MKV.cluster, body.count != size { break }
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
                                if vid == MKV.pixelWidth { width = Reader.uint(v).flatMap { Int(exactly: $0) } }
                                if vid == MKV.pixelHeight { height = Reader.uint(v).flatMap { Int(exactly: $0) } }
                            }
                        default: break
                        }
                    }
                    if type == 1 { videoNumber = number; hasVideoTrack = true }
                    if type == 2 { audioNumber = number; hasAudioTrack = true }
                }
            case MKV.cluster:
                // A cluster whose timecode cannot be a recording's (beyond ~292 million years in
                // milliseconds) is corrupt: the scan ends before it.
                var timecode: Int64 = 0
                var cluster = (video: 0, audio: 0, last: lastTimestampMs)
                var corrupt = false
                for (cid, field) in Reader.children(body) {
                    if cid == MKV.timecode {
                        guard let t = Reader.uint(field).flatMap({ Int64(exactly: $0) }), t <= Self.maxTimecode else {
                            corrupt = true
                            break
                        }
                        timecode = t
                    }
                    guard cid == MKV.simpleBlock, field.count >= 4, field[0] & 0x80 != 0 else { continue }
                    let track = UInt64(field[0] & 0x7F)
                    let relative = Int16(bitPattern: UInt16(field[1]) << 8 | UInt16(field[2]))
                    cluster.last = max(cluster.last, timecode + Int64(relative))
                    if track == videoNumber { cluster.video += 1 } else if track == audioNumber { cluster.audio += 1 }
                }
                if corrupt { break scan }
                videoFrames += cluster.video
                audioFrames += cluster.audio
                lastTimestampMs = cluster.last
            default:
                break
            }
            offset = bodyStart + size
            validLength = offset
        }
    }

    /// The largest cluster timecode taken (milliseconds at the writer's 1 ms scale): 2^53, far
    /// beyond any recording and far from overflowing when durations are added to it.
    static let maxTimecode: Int64 = 1 << 53

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
