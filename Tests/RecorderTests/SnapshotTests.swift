import CTurboJPEG
import DTLS
import Foundation
import RTP
import SFU
import Testing
import TestSupport
@testable import Recorder

/// Snapshot images: JPEG (TurboJPEG) and PNG (libpng) of a known picture decode to its colours,
/// and the SnapshotTap catches a fresh keyframe in a real in-memory room.
@Suite("Snapshots", .serialized)
struct SnapshotTests {
    /// Four quadrants (red, green, blue, white) of a 96x64 picture, and their RGB.
    static let quadrants: [(r: Int, g: Int, b: Int)] = [(230, 20, 20), (20, 200, 30), (25, 30, 220), (240, 240, 240)]

    static func quadrantImage(width: Int = 96, height: Int = 64) -> I420Image {
        var image = I420Image(width: width, height: height)
        for row in 0..<height {
            for col in 0..<width {
                let q = quadrants[(row < height / 2 ? 0 : 2) + (col < width / 2 ? 0 : 1)]
                let c = YUV(r: q.r, g: q.g, b: q.b)
                image.y[row * width + col] = c.y
                if row % 2 == 0, col % 2 == 0 {
                    image.u[(row / 2) * image.chromaWidth + col / 2] = c.u
                    image.v[(row / 2) * image.chromaWidth + col / 2] = c.v
                }
            }
        }
        return image
    }

    /// The RGB at the centre of each quadrant of a packed RGB picture.
    static func quadrantCentres(_ rgb: [UInt8], width: Int, height: Int) -> [(Int, Int, Int)] {
        [(width / 4, height / 4), (3 * width / 4, height / 4), (width / 4, 3 * height / 4), (3 * width / 4, 3 * height / 4)].map { x, y in
            let o = (y * width + x) * 3
            return (Int(rgb[o]), Int(rgb[o + 1]), Int(rgb[o + 2]))
        }
    }

    static func close(_ a: (Int, Int, Int), _ b: (r: Int, g: Int, b: Int), tolerance: Int) -> Bool {
        abs(a.0 - b.r) <= tolerance && abs(a.1 - b.g) <= tolerance && abs(a.2 - b.b) <= tolerance
    }

    @Test func jpegDecodesToThePicturesColours() throws {
        let jpeg = try SnapshotImage.jpeg(Self.quadrantImage())
        #expect(Array(jpeg.prefix(3)) == [0xFF, 0xD8, 0xFF])
        let handle = try #require(tjInitDecompress())
        defer { tjDestroy(handle) }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        try #require(tjDecompressHeader3(handle, jpeg, UInt(jpeg.count), &width, &height, &subsampling, &colorspace) == 0)
        #expect(width == 96 && height == 64 && subsampling == Int32(TJSAMP_420.rawValue))
        var rgb = [UInt8](repeating: 0, count: Int(width * height) * 3)
        try #require(tjDecompress2(handle, jpeg, UInt(jpeg.count), &rgb, width, 0, height, Int32(TJPF_RGB.rawValue), 0) == 0)
        for (got, want) in zip(Self.quadrantCentres(rgb, width: 96, height: 64), Self.quadrants) {
            #expect(Self.close(got, want, tolerance: 12), "\(got) for \(want)")
        }
    }

    @Test func pngDecodesToThePicturesColours() throws {
        let image = Self.quadrantImage(width: 95, height: 63)  // odd sizes: chroma rounds up
        let png = try SnapshotImage.png(image)
        #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let path = NSTemporaryDirectory() + "snap-\(UUID().uuidString).png"
        defer { unlink(path) }
        try Data(png).write(to: URL(fileURLWithPath: path))
        let probe = runTool(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", path])
        #expect(probe.output.trimmingCharacters(in: .whitespacesAndNewlines) == "png,95,63", "\(probe.output)")
        let raw = NSTemporaryDirectory() + "snap-\(UUID().uuidString).rgb"
        defer { unlink(raw) }
        let decoded = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", raw])
        try #require(decoded.status == 0, "\(decoded.output)")
        let rgb = try [UInt8](Data(contentsOf: URL(fileURLWithPath: raw)))
        #expect(rgb == SnapshotImage.rgb(image), "PNG is lossless")
        for (got, want) in zip(Self.quadrantCentres(rgb, width: 95, height: 63), Self.quadrants) {
            #expect(Self.close(got, want, tolerance: 4), "\(got) for \(want)")
        }
    }

    /// A publisher mid-GOP: the tap asks for a keyframe, ignores the inter frames before it, and
    /// gives the keyframe, which decodes to the publisher's size; then it is detached.
    @Test func theTapCatchesTheNextKeyframe() async throws {
        let h = try RoomHarness()
        let pub = try h.join("pub")
        let ssrc: UInt32 = 0xD0D0_D0D0
        h.publish(pub, streams: [.init(kind: .video, ssrc: ssrc)])
        try #require(h.connectAll(), "transports did not connect")
        let frames = try TestMedia.vp8Frames(count: 40, width: 176, height: 144, keyframeEvery: 20)
        let producer = try #require(h.room.publishedTracks().first?.producer)
        var caught: [AssembledFrame] = []
        var tap: SnapshotTap?
        var seq: UInt16 = 7
        let plisBefore = pub.publisherRTCP.filter { if case .pli = $0 { true } else { false } }.count
        for i in 0..<40 {
            if i == 5 { tap = SnapshotTap(producer: producer, nowNanos: h.now) { caught.append($0) } }
            for p in ScreenRecordingTests.packetize(frames[i].data, ssrc: ssrc, seq: &seq, ts: UInt32(i) * 3000) { h.sendRTP(pub, p) }
            h.run(steps: 3)
        }
        let plis = pub.publisherRTCP.filter { if case .pli = $0 { true } else { false } }.count
        #expect(plis > plisBefore, "the tap asked for a keyframe")
        try #require(caught.count == 1, "one keyframe, then detached")
        #expect(caught[0].keyframe && caught[0].data == frames[20].data)
        #expect(tap?.isDone == true && producer.taps.isEmpty)
        guard case .picture(let picture) = try VP8Decoder().decode(caught[0].data) else {
            Issue.record("the keyframe did not decode")
            return
        }
        #expect(picture.width == 176 && picture.height == 144)
    }
}
