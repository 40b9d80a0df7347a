import DTLS
import Foundation
import RTP
import SFU
import Testing
import TestSupport
@testable import Recorder
import WebRTCClient

/// H.264 recorded without transcoding: RTP (STAP-A, FU-A, single NAL units) from an x264 stream
/// made by ffmpeg, through a real in-memory room, into Matroska that ffmpeg decodes.
@Suite("H.264 recording, in memory", .serialized)
struct H264RecordingTests {
    static let audioSSRC: UInt32 = 0xA2A2_A2A2
    static let videoSSRC: UInt32 = 0xB2B2_B2B2

    /// Access units (NAL units without start codes, AUDs dropped) of `frames` frames of x264
    /// baseline, an IDR with SPS and PPS every 30.
    /// `source`: an ffmpeg lavfi source (default its test pattern); `pixelFormat` yuvj420p makes a
    /// full-range stream.
    static func accessUnits(frames: Int, width: Int, height: Int, source: String = "testsrc", pixelFormat: String = "yuv420p") throws -> [[[UInt8]]] {
        let path = NSTemporaryDirectory() + "h264-\(UUID().uuidString).h264"
        defer { unlink(path) }
        let made = runTool(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "\(source)\(source.contains("=") ? ":" : "=")size=\(width)x\(height):rate=30",
                            "-frames:v", "\(frames)", "-pix_fmt", pixelFormat, "-c:v", "libx264", "-profile:v", "baseline",
                            "-x264-params", "keyint=30:min-keyint=30:scenecut=0:aud=1:repeat-headers=1:bframes=0", "-f", "h264", path])
        try #require(made.status == 0, "\(made.output)")
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        // Annex B: units after 00 00 01 (or 00 00 00 01).
        var starts: [Int] = []
        var i = 0
        while i + 3 <= bytes.count {
            if bytes[i] == 0, bytes[i + 1] == 0, bytes[i + 2] == 1 {
                starts.append(i + 3)
                i += 3
            } else {
                i += 1
            }
        }
        var units: [[UInt8]] = []
        for (k, s) in starts.enumerated() {
            var end = k + 1 < starts.count ? starts[k + 1] - 3 : bytes.count
            while end > s, bytes[end - 1] == 0 { end -= 1 }
            units.append(Array(bytes[s..<end]))
        }
        var out: [[[UInt8]]] = []
        for u in units {
            if u[0] & 0x1F == H264.nalAUD { out.append([]) } else if !out.isEmpty { out[out.count - 1].append(u) }
        }
        return out
    }

    /// RTP payloads of one access unit: parameter sets and SEI in one STAP-A, slices as single NAL
    /// units or FU-A fragments of at most 800 bytes.
    static func payloads(_ au: [[UInt8]]) -> [[UInt8]] {
        let small = au.filter { [6, 7, 8].contains($0[0] & 0x1F) }
        var out: [[UInt8]] = []
        if !small.isEmpty { out.append([0x78] + small.flatMap { [UInt8($0.count >> 8), UInt8($0.count & 0xFF)] + $0 }) }
        for u in au where !small.contains(u) {
            guard u.count > 800 else {
                out.append(u)
                continue
            }
            let body = Array(u.dropFirst())
            var offset = 0
            while offset < body.count {
                let end = min(body.count, offset + 800)
                out.append([(u[0] & 0xE0) | 28, (offset == 0 ? 0x80 : 0) | (end == body.count ? 0x40 : 0) | (u[0] & 0x1F)] + body[offset..<end])
                offset = end
            }
        }
        return out
    }

    @Test func anH264CameraIsRecordedInMatroska() async throws {
        let aus = try Self.accessUnits(frames: 60, width: 320, height: 180)
        try #require(aus.count == 60)
        let h = try RoomHarness()
        let pub = try h.join("h264")
        h.publish(pub, streams: [.init(kind: .audio, ssrc: Self.audioSSRC), .init(kind: .video, ssrc: Self.videoSSRC, codec: ClientSDP.h264)])
        try #require(h.connectAll(), "transports did not connect")
        let ntp: UInt64 = 8000 << 32
        pub.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: Self.audioSSRC, ntpTime: ntp, rtpTime: 0, packetCount: 0, octetCount: 0)),
                                 .senderReport(SenderReport(ssrc: Self.videoSSRC, ntpTime: ntp, rtpTime: 0, packetCount: 0, octetCount: 0))])
        h.run(steps: 3)
        let dir = NSTemporaryDirectory() + "rec-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recording = RoomRecording(id: "rec_h264", directory: dir)
        recording.start(in: h.room)
        let audio = try TestMedia.opusPackets(count: 100)
        var seq: UInt16 = 40_000
        var next = 0
        var fragmented = 0, aggregated = 0
        for step in 0..<200 {
            let ms = step * 10
            if ms % 20 == 0 {
                let i = ms / 20
                h.sendRTP(pub, RTPPacket(payloadType: 111, sequenceNumber: UInt16(i), timestamp: UInt32(i) * 960, ssrc: Self.audioSSRC, payload: audio[i]))
            }
            while next < aus.count, next * 100 / 3 <= ms {
                let packets = Self.payloads(aus[next])
                for (k, p) in packets.enumerated() {
                    if p[0] & 0x1F == 28 { fragmented += 1 }
                    if p[0] & 0x1F == 24 { aggregated += 1 }
                    // Frame 10's last packet is lost: frames up to the next IDR (30) cannot be decoded.
                    if !(next == 10 && k == packets.count - 1) {
                        h.sendRTP(pub, RTPPacket(payloadType: 102, sequenceNumber: seq, timestamp: 50_000 + UInt32(next) * 3000, ssrc: Self.videoSSRC,
                                                 marker: k == packets.count - 1, payload: p))
                    }
                    seq &+= 1
                }
                next += 1
            }
            h.run()
        }
        #expect(fragmented > 0 && aggregated >= 2, "the stream exercises FU-A (\(fragmented)) and STAP-A (\(aggregated))")
        let plis = pub.publisherRTCP.filter { if case .pli(let r) = $0 { r.mediaSSRC == Self.videoSSRC } else { false } }
        #expect(!plis.isEmpty, "the recorder asked for a keyframe after the loss")
        let pending = recording.stop(in: h.room)
        try #require(pending.count == 1)
        let (file, error) = await pending[0].finalize()
        #expect(error == nil)
        #expect(file.format == "mkv" && file.videoCodec == "h264" && file.audioCodec == "opus" && file.fileName == "h264-pe_h264.mkv", "\(file)")
        #expect(file.width == 320 && file.height == 180 && file.videoFrames == 40 && file.audioFrames == 100, "\(file)")
        let decode = runTool(["ffmpeg", "-nostdin", "-v", "error", "-i", file.path, "-f", "null", "-"])
        #expect(decode.status == 0 && decode.output.isEmpty, "\(decode.output)")
        let streams = runTool(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", file.path]).output
        #expect(streams.split(separator: "\n").map(String.init) == ["h264,320,180", "opus"], "\(streams)")
        let format = runTool(["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "default=nw=1:nk=1", file.path]).output
        #expect(format.trimmingCharacters(in: .whitespacesAndNewlines) == "matroska,webm", "\(format)")
        let frames = runTool(["ffprobe", "-v", "error", "-select_streams", "v", "-count_frames", "-show_entries", "stream=nb_read_frames",
                              "-of", "csv=p=0", file.path]).output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(frames == "40", "decoded \(frames) frames")
    }

    @Test func theReservedCodecPrivateIsPatchedOnce() throws {
        let writer = WebMWriter(configuration: .init(video: (320, 180), audio: nil, videoCodec: .h264))
        let header = writer.start()
        #expect(String(decoding: header, as: UTF8.self).contains("matroska") && String(decoding: header, as: UTF8.self).contains("V_MPEG4/ISO/AVC"))
        #expect(writer.setCodecPrivate([UInt8](repeating: 1, count: 600)) == nil, "larger than the room reserved")
        let avcC: [UInt8] = [1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1, 0, 2, 0x67, 0x42, 1, 0, 1, 0x68]
        let patch = try #require(writer.setCodecPrivate(avcC))
        #expect(patch.bytes.count == WebMWriter.reservedCodecPrivate)
        #expect(Array(header[patch.offset..<(patch.offset + 2)]) == [0xEC, 0x01], "the patch goes over the reserved Void")
        #expect(Array(patch.bytes[10..<(10 + avcC.count)]) == avcC && Array(patch.bytes.prefix(2)) == [0x63, 0xA2])
        #expect(writer.setCodecPrivate(avcC) == nil, "once only")
    }
}

/// Snapshots of H.264 video: a keyframe decoded with libavcodec (H264Decoder).
@Suite("H.264 snapshot decoding")
struct H264SnapshotDecodingTests {
    /// The mean of a plane's samples.
    static func mean(_ plane: [UInt8]) -> Double { Double(plane.reduce(0) { $0 + Int($1) }) / Double(max(1, plane.count)) }

    /// A solid (240, 200, 20) picture in limited range and in full range (yuvj420p, the VUI's full
    /// range flag set) decodes to the same limited-range colour. (Read as limited, the full-range
    /// one would be ~10 off in Y and ~12 in U.)
    @Test(arguments: ["yuv420p", "yuvj420p"])
    func aKeyframeDecodesToItsSizeAndColour(pixelFormat: String) throws {
        let units = try H264RecordingTests.accessUnits(frames: 1, width: 320, height: 240, source: "color=c=0xF0C814", pixelFormat: pixelFormat)
        let keyframe = try #require(units.first { au in au.contains { $0[0] & 0x1F == H264.nalIDR } })
        let image = try H264Decoder.decodeKeyframe(H264.avcFrame(keyframe))
        #expect((image.width, image.height) == (320, 240))
        let want = YUV(r: 240, g: 200, b: 20)
        #expect(abs(Self.mean(image.y) - Double(want.y)) < 4, "Y \(Self.mean(image.y)), want \(want.y)")
        #expect(abs(Self.mean(image.u) - Double(want.u)) < 4, "U \(Self.mean(image.u)), want \(want.u)")
        #expect(abs(Self.mean(image.v) - Double(want.v)) < 4, "V \(Self.mean(image.v)), want \(want.v)")
    }

    /// The snapshot's path: RTP payloads (STAP-A, FU-A) through the frame assembler, its keyframe decoded.
    @Test func aKeyframeFromRTPPayloadsDecodes() throws {
        let units = try H264RecordingTests.accessUnits(frames: 1, width: 160, height: 120)
        let au = try #require(units.first { au in au.contains { $0[0] & 0x1F == H264.nalIDR } })
        let payloads = H264RecordingTests.payloads(au)
        #expect(payloads.count > 2, "the keyframe was not fragmented")
        var assembler = FrameAssembler(codec: .h264)
        var frames: [AssembledFrame] = []
        for (k, p) in payloads.enumerated() {
            frames += p.withUnsafeBytes {
                assembler.push(sequenceNumber: UInt16(100 + k), timestamp: 3000, marker: k == payloads.count - 1, payload: $0, nowNanos: Int64(k))
            }
        }
        let keyframe = try #require(frames.first { $0.keyframe })
        let image = try H264Decoder.decodeKeyframe(keyframe.data)
        #expect((image.width, image.height) == (160, 120))
    }

    @Test func whatIsNotAKeyframeIsAnErrorNotACrash() throws {
        let units = try H264RecordingTests.accessUnits(frames: 2, width: 160, height: 120)
        // The second access unit alone: a P slice without its reference or parameter sets.
        let delta = try #require(units.dropFirst().first { au in !au.contains { $0[0] & 0x1F == H264.nalIDR } && !au.isEmpty })
        #expect(throws: H264Decoder.DecodeError.self) { try H264Decoder.decodeKeyframe(H264.avcFrame(delta)) }
        #expect(throws: H264Decoder.DecodeError.self) { try H264Decoder.decodeKeyframe([0, 0, 0, 9, 1, 2]) }
        #expect(throws: H264Decoder.DecodeError.self) { try H264Decoder.decodeKeyframe([]) }
        var garbage = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let body = (0..<Int.random(in: 1...400, using: &garbage)).map { _ in UInt8.random(in: 0...255, using: &garbage) }
            let unit = [UInt8(0x65)] + body
            _ = try? H264Decoder.decodeKeyframe(H264.avcFrame([unit]))
        }
    }
}
