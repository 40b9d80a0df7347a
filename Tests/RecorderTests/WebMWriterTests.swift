import COpus
import CSFUShim
import CVPX
import Foundation
import RTP
import Testing
@testable import Recorder

/// Runs a tool, returns its exit status and combined output (posix_spawn + waitpid: Foundation's
/// Process is unreliable inside swift-testing here).
func runTool(_ arguments: [String]) -> (status: Int32, output: String) {
    let outPath = NSTemporaryDirectory() + "tool-\(UUID().uuidString).txt"
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, outPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    guard posix_spawnp(&pid, arguments[0], &actions, nil, argv, environ) == 0 else { return (-1, "spawn failed") }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    let output = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
    unlink(outPath)
    return ((status >> 8) & 0xFF, output)
}

/// Real VP8 and Opus frames from libvpx and libopus, for muxing tests.
enum TestMedia {
    /// `count` VP8 frames of a moving gradient, a keyframe every `keyframeEvery`.
    static func vp8Frames(count: Int, width: Int = 160, height: Int = 120, keyframeEvery: Int = 30) throws -> [(keyframe: Bool, data: [UInt8])] {
        let iface = try #require(vpx_codec_vp8_cx())
        var cfg = vpx_codec_enc_cfg_t()
        try #require(vpx_codec_enc_config_default(iface, &cfg, 0) == VPX_CODEC_OK)
        cfg.g_w = UInt32(width)
        cfg.g_h = UInt32(height)
        cfg.rc_target_bitrate = 300
        cfg.g_timebase = vpx_rational(num: 1, den: 30)
        cfg.kf_max_dist = UInt32(keyframeEvery)
        cfg.g_lag_in_frames = 0
        var codec = vpx_codec_ctx_t()
        try #require(sfu_vpx_codec_enc_init(&codec, iface, &cfg, 0) == VPX_CODEC_OK)
        defer { vpx_codec_destroy(&codec) }
        _ = sfu_vpx_codec_control_int(&codec, Int32(VP8E_SET_CPUUSED.rawValue), 8)
        var image = vpx_image_t()
        let allocated = try #require(vpx_img_alloc(&image, VPX_IMG_FMT_I420, UInt32(width), UInt32(height), 16))
        defer { vpx_img_free(allocated) }
        var frames: [(Bool, [UInt8])] = []
        for i in 0..<count {
            let stride = Int(image.stride.0)
            for y in 0..<height {
                for x in 0..<width { image.planes.0?[y * stride + x] = UInt8(truncatingIfNeeded: x + y + i * 4) }
            }
            for p in [image.planes.1, image.planes.2] { p?.initialize(repeating: UInt8(truncatingIfNeeded: 100 + i), count: Int(image.stride.1) * height / 2) }
            let flags: vpx_enc_frame_flags_t = i % keyframeEvery == 0 ? vpx_enc_frame_flags_t(VPX_EFLAG_FORCE_KF) : 0
            try #require(vpx_codec_encode(&codec, &image, vpx_codec_pts_t(i), 1, flags, UInt(VPX_DL_REALTIME)) == VPX_CODEC_OK)
            var iterator: vpx_codec_iter_t? = nil
            while let pkt = vpx_codec_get_cx_data(&codec, &iterator) {
                guard pkt.pointee.kind == VPX_CODEC_CX_FRAME_PKT else { continue }
                let f = pkt.pointee.data.frame
                let bytes = Array(UnsafeRawBufferPointer(start: f.buf, count: f.sz))
                frames.append(((f.flags & UInt32(VPX_FRAME_IS_KEY)) != 0, bytes))
            }
        }
        return frames
    }

    /// `count` Opus packets of 20 ms (a 440 Hz tone).
    static func opusPackets(count: Int) throws -> [[UInt8]] {
        var error: Int32 = 0
        let encoder = try #require(opus_encoder_create(48000, 2, OPUS_APPLICATION_VOIP, &error))
        defer { opus_encoder_destroy(encoder) }
        var out: [[UInt8]] = []
        var n = 0
        for _ in 0..<count {
            var pcm = [Int16](repeating: 0, count: 960 * 2)
            for i in 0..<960 {
                let s = Int16(6000 * sin(2 * Double.pi * 440 * Double(n) / 48000))
                pcm[2 * i] = s
                pcm[2 * i + 1] = s
                n += 1
            }
            var packet = [UInt8](repeating: 0, count: 1500)
            let size = opus_encode(encoder, pcm, 960, &packet, 1500)
            try #require(size > 0)
            out.append(Array(packet.prefix(Int(size))))
        }
        return out
    }
}

@Suite("WebM writer", .serialized)
struct WebMWriterTests {
    /// Muxes 3 s of VP8 + Opus; returns the file path and the byte counts of each append (cluster boundaries).
    static func mux(seconds: Int = 3) throws -> (path: String, chunks: [Int], writer: WebMWriter) {
        let video = try TestMedia.vp8Frames(count: seconds * 30)
        let audio = try TestMedia.opusPackets(count: seconds * 50)
        let writer = WebMWriter(configuration: .init(video: (160, 120), audio: (2, 48000)))
        var file = writer.start()
        var chunks = [file.count]
        // Interleave by time: video every 33.3 ms, audio every 20 ms.
        var v = 0, a = 0
        while v < video.count || a < audio.count {
            let vt = v < video.count ? Int64(v) * 1000 / 30 : .max
            let at = a < audio.count ? Int64(a) * 20 : .max
            let bytes: [UInt8]
            if vt <= at {
                bytes = video[v].data.withUnsafeBytes { writer.add(.video, timestampMs: vt, keyframe: video[v].keyframe, data: $0) }
                v += 1
            } else {
                bytes = audio[a].withUnsafeBytes { writer.add(.audio, timestampMs: at, keyframe: true, data: $0) }
                a += 1
            }
            if !bytes.isEmpty {
                file += bytes
                chunks.append(bytes.count)
            }
        }
        let (tail, patches) = writer.finish()
        file += tail
        for (offset, bytes) in patches { file.replaceSubrange(offset..<(offset + bytes.count), with: bytes) }
        #expect(writer.size == file.count, "chunks \(chunks) tail \(tail.count) frames \(video.count) \(audio.count)")
        let path = NSTemporaryDirectory() + "webm-\(UUID().uuidString).webm"
        try Data(file).write(to: URL(fileURLWithPath: path))
        return (path, chunks, writer)
    }

    @Test func aMuxedFileDecodesCleanlyWithEveryFrame() throws {
        let (path, _, writer) = try Self.mux()
        defer { unlink(path) }
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        let probe = runTool(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=codec_name,width,height,nb_read_frames:format=duration",
                             "-of", "compact=p=0:nk=1", path])
        #expect(probe.status == 0)
        let lines = probe.output.split(separator: "\n").map(String.init)
        #expect(lines.contains("vp8|160|120|90"), "\(lines)")
        #expect(lines.contains("opus|150"), "\(lines)")
        let duration = Double(lines.last ?? "") ?? 0
        #expect(abs(duration - 3.0) < 0.1, "duration \(duration)")
        #expect(writer.videoFrames == 90 && writer.audioFrames == 150)
    }

    /// One track far behind the other (audio 40 s older than the open cluster): the frame keeps its
    /// own time in a cluster of its own instead of a clamped relative timecode (32.8 s off).
    @Test func aFrameFarOlderThanItsClusterKeepsItsTime() throws {
        let writer = WebMWriter(configuration: .init(video: (160, 120), audio: (2, 48000)))
        var file = writer.start()
        let video = try TestMedia.vp8Frames(count: 2, keyframeEvery: 1)
        video[0].data.withUnsafeBytes { file += writer.add(.video, timestampMs: 40_000, keyframe: true, data: $0) }
        [UInt8](repeating: 0xF8, count: 3).withUnsafeBytes { file += writer.add(.audio, timestampMs: 1_000, keyframe: true, data: $0) }
        video[1].data.withUnsafeBytes { file += writer.add(.video, timestampMs: 40_033, keyframe: true, data: $0) }
        let (tail, patches) = writer.finish()
        file = CompositeEngineTests.applying(patches, to: file + tail)
        let blocks = CompositeEngineTests.blocks(file).map { [$0.track, Int($0.ms)] }
        #expect(blocks == [[1, 40_000], [2, 1_000], [1, 40_033]], "\(blocks)")
    }

    /// A file cut at a cluster boundary (the server died after an append) is a valid WebM up to there.
    @Test func aFileCutAfterAnyClusterIsPlayable() throws {
        let (path, chunks, _) = try Self.mux(seconds: 6)
        defer { unlink(path) }
        let full = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(chunks.count >= 4, "several clusters: \(chunks)")
        var cut = 0
        for (i, c) in chunks.enumerated() where i < 3 { cut += c }
        let partial = NSTemporaryDirectory() + "webm-cut-\(UUID().uuidString).webm"
        defer { unlink(partial) }
        // The unpatched header (unknown segment size), as on disk before finish().
        var bytes = [UInt8](full.prefix(cut))
        let writer = WebMWriter(configuration: .init(video: (160, 120), audio: (2, 48000)))
        let header = writer.start()
        bytes.replaceSubrange(0..<header.count, with: header)
        try Data(bytes).write(to: URL(fileURLWithPath: partial))
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", partial, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        let probe = runTool(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries", "stream=nb_read_frames",
                             "-of", "csv=p=0", partial])
        #expect((Int(probe.output.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 0, "\(probe.output)")
    }

    /// What a crash leaves (cut in the middle of a cluster): the scan finds the frames of the complete
    /// clusters and where to cut, and the file cut there decodes cleanly.
    @Test func scanningACutFileFindsItsCompleteClusters() throws {
        let (path, chunks, writer) = try Self.mux(seconds: 6)
        defer { unlink(path) }
        let full = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let whole = try #require(WebMScan(bytes: full))
        #expect(whole.videoFrames == writer.videoFrames && whole.audioFrames == writer.audioFrames)
        #expect(whole.width == 160 && whole.height == 120 && whole.hasVideoTrack && whole.hasAudioTrack)
        #expect(abs(whole.durationMs - writer.durationMs) <= 1)
        // Unpatched header + 3 clusters + half of the 4th.
        var bytes = full
        let header = WebMWriter(configuration: .init(video: (160, 120), audio: (2, 48000))).start()
        bytes.replaceSubrange(0..<header.count, with: header)
        let three = chunks.prefix(4).reduce(0, +)
        bytes = Array(bytes.prefix(three + chunks[4] / 2))
        let scan = try #require(WebMScan(bytes: bytes))
        #expect(scan.validLength == three)
        #expect(scan.videoFrames == 90 && scan.durationMs > 2900 && scan.durationMs < 3100, "\(scan)")
        let cut = NSTemporaryDirectory() + "webm-scan-\(UUID().uuidString).webm"
        defer { unlink(cut) }
        try Data(bytes.prefix(scan.validLength)).write(to: URL(fileURLWithPath: cut))
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", cut, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        #expect(WebMScan(bytes: Array("not a webm file".utf8)) == nil)
    }

    /// A keyframe of another size in the middle (a camera switch): players follow it.
    @Test func aResolutionChangeDecodes() throws {
        let small = try TestMedia.vp8Frames(count: 30, width: 160, height: 120)
        let large = try TestMedia.vp8Frames(count: 30, width: 320, height: 240)
        let writer = WebMWriter(configuration: .init(video: (160, 120), audio: nil))
        var file = writer.start()
        for (i, f) in (small + large).enumerated() {
            file += f.data.withUnsafeBytes { writer.add(.video, timestampMs: Int64(i) * 33, keyframe: f.keyframe, data: $0) }
        }
        let (tail, patches) = writer.finish()
        file += tail
        for (offset, bytes) in patches { file.replaceSubrange(offset..<(offset + bytes.count), with: bytes) }
        let path = NSTemporaryDirectory() + "webm-res-\(UUID().uuidString).webm"
        defer { unlink(path) }
        try Data(file).write(to: URL(fileURLWithPath: path))
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        let probe = runTool(["ffprobe", "-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path])
        #expect(probe.output.trimmingCharacters(in: .whitespacesAndNewlines) == "60")
    }

    @Test func elementSizesUseTheShortestVint() {
        var out: [UInt8] = []
        EBML.appendSize(0, to: &out)
        EBML.appendSize(126, to: &out)
        EBML.appendSize(127, to: &out)  // 0x7F is reserved (unknown) in one byte
        EBML.appendSize(5, to: &out, width: 8)
        #expect(out == [0x80, 0xFE, 0x40, 0x7F, 0x01, 0, 0, 0, 0, 0, 0, 5])
    }
}
