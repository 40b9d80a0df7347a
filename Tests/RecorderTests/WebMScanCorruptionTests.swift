import Foundation
import Testing
@testable import Recorder

/// What the crash reconciler meets on disk besides a clean cut: sizes overwritten with garbage,
/// fields far too large for their type, and files too large to read whole.
@Suite("WebM scan of corrupt files")
struct WebMScanCorruptionTests {
    /// An element: id bytes, an 8-byte size, the body.
    static func element(_ id: [UInt8], _ body: [UInt8]) -> [UInt8] {
        var size: [UInt8] = [0x01]
        for shift in stride(from: 48, through: 0, by: -8) { size.append(UInt8(truncatingIfNeeded: body.count >> shift)) }
        return id + size + body
    }

    /// A minimal file: EBML header, a segment of unknown size, tracks (video 1 with `width` as the
    /// 8 raw bytes of PixelWidth), and clusters with the given 8-byte timecodes, one video block each.
    static func file(width: [UInt8], timecodes: [[UInt8]]) -> [UInt8] {
        let ebml = element([0x1A, 0x45, 0xDF, 0xA3], element([0x42, 0x82], Array("webm".utf8)))
        let video = element([0xE0], element([0xB0], width) + element([0xBA], [0x00, 0x78]))
        let entry = element([0xAE], element([0xD7], [1]) + element([0x83], [1]) + video)
        var segment = element([0x16, 0x54, 0xAE, 0x6B], entry)
        for t in timecodes {
            segment += element([0x1F, 0x43, 0xB6, 0x75], element([0xE7], t) + element([0xA3], [0x81, 0x00, 0x10, 0x80, 1, 2, 3]))
        }
        return ebml + [0x18, 0x53, 0x80, 0x67] + [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + segment
    }

    /// A PixelWidth of 2^64 - 1 used to trap (`Int(UInt64)`); it is now no width at all.
    @Test func aHugeWidthDoesNotTrap() throws {
        let bytes = Self.file(width: [UInt8](repeating: 0xFF, count: 8), timecodes: [[0, 0, 0, 0, 0, 0, 0, 0]])
        let scan = try #require(WebMScan(bytes: bytes))
        #expect(scan.width == nil && scan.height == 120)
        #expect(scan.videoFrames == 1 && scan.validLength == bytes.count)
    }

    /// A cluster timecode of 2^64 - 1 used to trap (`Int64(UInt64)`); one of 2^63 - 1 would overflow
    /// the duration. The scan ends before such a cluster: the clusters before it count.
    @Test func anAbsurdClusterTimecodeEndsTheScan() throws {
        let good: [UInt8] = [0, 0, 0, 0, 0, 0, 0x03, 0xE8]  // 1,000 ms
        for bad: [UInt8] in [[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], [0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]] {
            let bytes = Self.file(width: [0x00, 0xA0], timecodes: [good, bad, good])
            let scan = try #require(WebMScan(bytes: bytes))
            #expect(scan.videoFrames == 1 && scan.durationMs == 1_000 + 16 + 33, "\(scan)")
            #expect(scan.validLength < bytes.count)
        }
    }

    /// A cluster size overwritten with 0xFF bytes (unknown size, as a torn write can leave) or with
    /// a size larger than the file: the scan stops before that cluster, never reads beyond the file.
    @Test func garbageSizesStopTheScanAtTheLastGoodCluster() throws {
        let (path, chunks, _) = try WebMWriterTests.mux(seconds: 4)
        defer { unlink(path) }
        let full = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let third = chunks.prefix(3).reduce(0, +)  // the header chunk, then two clusters
        let idLength = 4
        for garbage: [UInt8] in [[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], [0x01, 0x00, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], [0xFF]] {
            var bytes = full
            #expect(Array(bytes[third..<(third + idLength)]) == [0x1F, 0x43, 0xB6, 0x75])
            bytes.replaceSubrange((third + idLength)..<(third + idLength + garbage.count), with: garbage)
            let scan = try #require(WebMScan(bytes: bytes))
            #expect(scan.validLength == third, "\(garbage): \(scan)")
        }
    }

    /// The scan from a path reads element by element and agrees with the in-memory scan, on a whole
    /// file and on one cut mid-cluster with a tail of garbage.
    @Test func scanningFromDiskAgreesWithScanningBytes() throws {
        let (path, chunks, writer) = try WebMWriterTests.mux(seconds: 4)
        defer { unlink(path) }
        let full = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let fromDisk = try #require(WebMScan(path: path))
        #expect(fromDisk == WebMScan(bytes: full))
        #expect(fromDisk.videoFrames == writer.videoFrames && fromDisk.scannedLength == full.count)
        let cut = Array(full.prefix(chunks.prefix(4).reduce(0, +) + 100)) + [UInt8](repeating: 0xA7, count: 5000)
        let cutPath = path + ".cut"
        defer { unlink(cutPath) }
        try Data(cut).write(to: URL(fileURLWithPath: cutPath))
        let scan = try #require(WebMScan(path: cutPath))
        #expect(scan == WebMScan(bytes: cut))
        #expect(scan.validLength == chunks.prefix(4).reduce(0, +) && scan.scannedLength == cut.count)
        #expect(WebMScan(path: cutPath + ".missing") == nil)
    }
}
