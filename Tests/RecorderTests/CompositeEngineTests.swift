import Foundation
import Testing
@testable import Recorder

@Suite("Composite engine: frames in, one composed WebM out")
struct CompositeEngineTests {
    /// The SimpleBlocks of a WebM file: track number, time (ms) and frame.
    static func blocks(_ bytes: [UInt8]) -> [(track: Int, ms: Int64, data: [UInt8])] {
        var r = WebMScan.Reader(bytes: bytes)
        guard let (_, size) = r.header(), let s = size, r.skip(s), r.header() != nil else { return [] }
        var out: [(Int, Int64, [UInt8])] = []
        while let (id, size) = r.header(), let size, r.offset + size <= bytes.count {
            let body = Array(bytes[r.offset..<(r.offset + size)])
            r.offset += size
            guard id == MKV.cluster else { continue }
            var timecode: Int64 = 0
            for (cid, field) in WebMScan.Reader.children(body) {
                if cid == MKV.timecode { timecode = Int64(WebMScan.Reader.uint(field) ?? 0) }
                guard cid == MKV.simpleBlock, field.count > 4 else { continue }
                let relative = Int16(bitPattern: UInt16(field[1]) << 8 | UInt16(field[2]))
                out.append((Int(field[0] & 0x7F), timecode + Int64(relative), Array(field[4...])))
            }
        }
        return out
    }

    static func applying(_ patches: [(offset: Int, bytes: [UInt8])], to bytes: [UInt8]) -> [UInt8] {
        var b = bytes
        for p in patches { b.replaceSubrange(p.offset..<(p.offset + p.bytes.count), with: p.bytes) }
        return b
    }

    /// A 160x90, 10 fps engine at time 0 whose roster is participant "a" with camera `camera`, and
    /// the file's first bytes.
    static func oneParticipantEngine(camera: String? = "cam") throws -> (engine: CompositeEngine, file: [UInt8]) {
        var options = CompositeEngine.Options()
        options.width = 160
        options.height = 90
        options.fps = 10
        let engine = try CompositeEngine(options: options, originNanos: 0)
        let file = engine.start()
        engine.roster([.init(peerID: "a", name: "A", camera: camera, screen: nil)], atNanos: 0)
        return (engine, file)
    }

    static func close(_ a: YUV, _ b: YUV, tolerance: Int = 14) -> Bool {
        abs(Int(a.y) - Int(b.y)) <= tolerance && abs(Int(a.u) - Int(b.u)) <= tolerance && abs(Int(a.v) - Int(b.v)) <= tolerance
    }

    @Test func composesVideoAndNameTileAndMixesBothVoices() throws {
        var options = CompositeEngine.Options()
        options.width = 320
        options.height = 180
        options.fps = 10
        options.videoBitrateBps = 400_000
        let origin: Int64 = 5_000_000_000
        let engine = try CompositeEngine(options: options, originNanos: origin)
        var file = engine.start()
        engine.roster([.init(peerID: "a", name: "Alice", camera: "camA", screen: nil), .init(peerID: "b", name: "Bob", camera: nil, screen: nil)],
                      atNanos: origin)
        let red = YUV(r: 220, g: 30, b: 30)
        let camera = try VP8Encoder(.init(width: 160, height: 120, fps: 10, bitrateBps: 300_000))
        let voiceA = try OpusEncoder(channels: 2), voiceB = try OpusEncoder(channels: 2)
        let toneA = CodecTests.tone(440, frames: 100, channels: 2), toneB = CodecTests.tone(1000, frames: 100, channels: 2)
        for k in 0..<100 {  // 2 s of audio, 20 ms steps; video every 100 ms
            let nanos = origin + Int64(k) * 20_000_000
            if k % 5 == 0 {
                for f in try camera.encode(I420Image(width: 160, height: 120, fill: red), pts: Int64(k / 5)) {
                    engine.video(source: "camA", nanos: nanos, frame: AssembledFrame(rtpTimestamp: UInt32(k * 1800), keyframe: f.keyframe, data: f.data, size: nil, arrivalNanos: nanos))
                }
            }
            engine.audio(peerID: "a", nanos: nanos, frame: AssembledFrame(rtpTimestamp: UInt32(k * 960), keyframe: true, data: try voiceA.encode(toneA[k]), size: nil, arrivalNanos: nanos))
            // b loses packet 50: concealed, not a gap.
            if k != 50 {
                engine.audio(peerID: "b", nanos: nanos, frame: AssembledFrame(rtpTimestamp: UInt32(k * 960), keyframe: true, data: try voiceB.encode(toneB[k]), size: nil, arrivalNanos: nanos))
            }
            file += engine.advance(toNanos: nanos - 300_000_000)
        }
        let (tail, patches) = engine.finish(endNanos: origin + 2_000_000_000)
        file = Self.applying(patches, to: file + tail)
        let scan = try #require(WebMScan(bytes: file))
        #expect(scan.width == 320 && scan.height == 180)
        #expect(scan.videoFrames == 20)  // 2 s at 10 fps: the output rate does not depend on the input's
        #expect(scan.audioFrames == 100)
        #expect(engine.stats.audioFramesConcealed == 1)
        let blocks = Self.blocks(file)
        let videoTimes = blocks.filter { $0.track == 1 }.map(\.ms)
        #expect(videoTimes == (0..<20).map { Int64($0) * 100 })

        let decoder = try VP8Decoder()
        var last: I420Image?
        for b in blocks where b.track == 1 {
            if case .picture(let p) = decoder.decode(b.data) { last = p }
        }
        let picture = try #require(last)
        // Grid of two: Alice's camera on the left (aspect-fit, 4:3 in a 156x176 cell), Bob's name tile on the right.
        #expect(Self.close(picture.pixel(x: 80, y: 90), red), "\(picture.pixel(x: 80, y: 90))")
        #expect(Self.close(picture.pixel(x: 80, y: 10), .black), "letterbox \(picture.pixel(x: 80, y: 10))")
        #expect(Self.close(picture.pixel(x: 250, y: 20), NameTileRenderer.background))
        let rightHalf = (0..<180).flatMap { y in (162..<318).map { x in picture.y[y * 320 + x] } }
        #expect(rightHalf.filter { $0 > 180 }.count > 30, "the name's glyphs")

        let opus = try OpusDecoder(channels: 2)
        var pcm: [Float] = []
        for b in blocks where b.track == 2 {
            let s = try opus.decode(b.data)
            pcm += stride(from: 0, to: s.count, by: 2).map { Float(s[$0]) }
        }
        let steady = Array(pcm[24000..<72000])
        let at440 = CodecTests.power(steady, frequency: 440), at1000 = CodecTests.power(steady, frequency: 1000), at700 = CodecTests.power(steady, frequency: 700)
        #expect(at440 > 50 * at700 && at1000 > 50 * at700)
        #expect(abs(log10(at440 / at1000)) < 0.5, "both voices at about the same level")
        #expect(pcm.map(abs).max() ?? 0 < 32767)
    }

    @Test func screenShareTakesTheMainAreaAndLeavingRelaysTheCanvas() throws {
        var options = CompositeEngine.Options()
        options.width = 320
        options.height = 180
        options.fps = 10
        let engine = try CompositeEngine(options: options, originNanos: 0)
        var file = engine.start()
        let green = YUV(r: 30, g: 200, b: 40), blue = YUV(r: 30, g: 40, b: 220)
        let cam = try VP8Encoder(.init(width: 160, height: 90, fps: 10, bitrateBps: 200_000))
        let screen = try VP8Encoder(.init(width: 320, height: 180, fps: 10, bitrateBps: 200_000))
        engine.roster([.init(peerID: "a", name: "A", camera: "cam", screen: "scr"), .init(peerID: "b", name: "B", camera: nil, screen: nil)], atNanos: 0)
        // b leaves at 1.5 s.
        engine.roster([.init(peerID: "a", name: "A", camera: "cam", screen: "scr")], atNanos: 1_500_000_000)
        for k in 0..<30 {
            let nanos = Int64(k) * 100_000_000
            for f in try cam.encode(I420Image(width: 160, height: 90, fill: green), pts: Int64(k)) {
                engine.video(source: "cam", nanos: nanos, frame: AssembledFrame(rtpTimestamp: 0, keyframe: f.keyframe, data: f.data, size: nil, arrivalNanos: nanos))
            }
            if k < 10 {  // the screen shares for the first second only
                for f in try screen.encode(I420Image(width: 320, height: 180, fill: blue), pts: Int64(k)) {
                    engine.video(source: "scr", nanos: nanos, frame: AssembledFrame(rtpTimestamp: 0, keyframe: f.keyframe, data: f.data, size: nil, arrivalNanos: nanos))
                }
            }
        }
        var frames: [I420Image] = []
        file += engine.advance(toNanos: 3_000_000_000)
        let (tail, patches) = engine.finish(endNanos: 3_000_000_000)
        file = Self.applying(patches, to: file + tail)
        let decoder = try VP8Decoder()
        for b in Self.blocks(file) where b.track == 1 {
            if case .picture(let p) = decoder.decode(b.data) { frames.append(p) }
        }
        #expect(frames.count == 30)
        // 0.5 s: the screen on top, both cameras in the strip.
        #expect(Self.close(frames[5].pixel(x: 160, y: 60), blue))
        #expect(Self.close(frames[5].pixel(x: 120, y: 158), green), "\(frames[5].pixel(x: 120, y: 158))")
        // 2 s: the share went stale and b left: a alone in the grid.
        #expect(Self.close(frames[25].pixel(x: 160, y: 90), green))
        #expect(Self.close(frames[25].pixel(x: 20, y: 20), green))
        #expect(Self.close(frames[25].pixel(x: 0, y: 90), .black))  // the gap around the tile
    }
}

@Suite("Composite inbox: bounded hand-off between the room's loop and the processing queue")
struct CompositeInboxTests {
    static func frame(_ n: Int) -> AssembledFrame {
        AssembledFrame(rtpTimestamp: UInt32(n), keyframe: n == 0, data: [UInt8(n & 0xFF)], size: nil, arrivalNanos: Int64(n))
    }

    @Test func refusesVideoBeyondTheBacklogButNeverAudio() {
        let inbox = CompositeInbox(maxVideoBacklog: 3)
        #expect((0..<3).allSatisfy { inbox.push(.video(source: "cam", nanos: Int64($0), frame: Self.frame($0))) })
        #expect(!inbox.push(.video(source: "cam", nanos: 3, frame: Self.frame(3))))
        #expect(!inbox.hasRoom("cam"))
        // Another source has its own budget; audio is never refused.
        #expect(inbox.push(.video(source: "screen", nanos: 0, frame: Self.frame(0))))
        #expect((0..<100).allSatisfy { inbox.push(.audio(peerID: "p", nanos: Int64($0), frame: Self.frame($0))) })
        #expect(inbox.droppedVideo == 1)
        #expect(inbox.take().count == 104)
        // Frames the engine still has queued count against the budget.
        inbox.report(backlog: ["cam": 2], keyframes: ["cam"])
        #expect(inbox.push(.video(source: "cam", nanos: 4, frame: Self.frame(4))))
        #expect(!inbox.push(.video(source: "cam", nanos: 5, frame: Self.frame(5))))
        #expect(inbox.takeKeyframeRequest("cam"))
        #expect(!inbox.takeKeyframeRequest("cam"))
    }

    @Test func engineReportsItsBacklogAndKeyframeNeeds() throws {
        let (engine, _) = try CompositeEngineTests.oneParticipantEngine()
        let encoder = try VP8Encoder(.init(width: 160, height: 90, fps: 10))
        var frames: [VP8Encoder.Frame] = []
        for n in 0..<4 { frames += try encoder.encode(I420Image(width: 160, height: 90), pts: Int64(n)) }
        // Joined after the keyframe: the decoder cannot start, and says so.
        for (i, f) in frames.enumerated().dropFirst() {
            engine.video(source: "cam", nanos: Int64(i) * 100_000_000, frame: AssembledFrame(rtpTimestamp: 0, keyframe: f.keyframe, data: f.data, size: nil, arrivalNanos: 0))
        }
        #expect(engine.backlog["cam"] == 3)
        _ = engine.advance(toNanos: 1_000_000_000)
        #expect(engine.backlog["cam"] == 0)
        #expect(engine.takeKeyframeRequests() == ["cam"])
        #expect(engine.stats.videoFramesUndecodable == 3)
        #expect(engine.stats.outputVideoFrames == 10)  // the output keeps its rate meanwhile (a name tile)
    }

    /// An output that lags (its queue was starved) catches up: video output frames ending before
    /// `skipVideoBefore` are skipped, every source frame is still decoded (the references stay whole,
    /// the first encoded frame shows the latest picture), and every audio frame is written.
    @Test func aLaggingOutputSkipsVideoFramesButDecodesEverySourceFrameAndWritesAllAudio() throws {
        var (engine, file) = try CompositeEngineTests.oneParticipantEngine()
        let encoder = try VP8Encoder(.init(width: 160, height: 90, fps: 10, keyframeInterval: 1000))
        // 3 s of camera: one keyframe, then deltas; the picture brightens frame by frame.
        for n in 0..<30 {
            for f in try encoder.encode(I420Image(width: 160, height: 90, fill: YUV(y: UInt8(40 + n * 6), u: 128, v: 128)), pts: Int64(n)) {
                let nanos = Int64(n) * 100_000_000
                engine.video(source: "cam", nanos: nanos, frame: AssembledFrame(rtpTimestamp: UInt32(n * 9000), keyframe: f.keyframe, data: f.data, size: nil, arrivalNanos: nanos))
            }
        }
        file += engine.advance(toNanos: 3_000_000_000, skipVideoBefore: 2_700_000_000)
        #expect(engine.stats.videoFramesDecoded == 30)
        #expect(engine.stats.videoFramesUndecodable == 0)
        #expect(engine.stats.outputVideoFramesSkipped == 27)
        #expect(engine.stats.outputVideoFrames == 3)
        #expect(engine.stats.outputAudioFrames == 150)
        // Without skipping (the same call as before) every frame is written.
        file += engine.advance(toNanos: 4_000_000_000)
        #expect(engine.stats.outputVideoFramesSkipped == 27)
        #expect(engine.stats.outputVideoFrames == 13)
        let video = CompositeEngineTests.blocks(file).filter { $0.track == 1 }
        #expect(video.map(\.ms).first == 2700, "\(video.map(\.ms))")
        // The first frame written (the encoder's first, a keyframe) shows the latest source picture.
        let decoder = try VP8Decoder()
        guard case .picture(let p) = decoder.decode(video[0].data) else {
            Issue.record("the first written frame does not decode on its own")
            return
        }
        #expect(abs(Int(p.pixel(x: 80, y: 45).y) - (40 + 27 * 6)) <= 12, "\(p.pixel(x: 80, y: 45))")
    }

    /// Catching up past a source's keyframe: the frames before it are not decoded at all.
    @Test func catchingUpPastAKeyframeSkipsDecodingTheFramesBeforeIt() throws {
        var (engine, file) = try CompositeEngineTests.oneParticipantEngine()
        let encoder = try VP8Encoder(.init(width: 160, height: 90, fps: 10, keyframeInterval: 1000))
        for n in 0..<30 {  // keyframes at 0 and 2.0 s (a keyframe request answered)
            for f in try encoder.encode(I420Image(width: 160, height: 90, fill: YUV(y: UInt8(40 + n * 6), u: 128, v: 128)), pts: Int64(n), forceKeyframe: n == 20) {
                let nanos = Int64(n) * 100_000_000
                engine.video(source: "cam", nanos: nanos, frame: AssembledFrame(rtpTimestamp: UInt32(n * 9000), keyframe: f.keyframe, data: f.data, size: nil, arrivalNanos: nanos))
            }
        }
        file += engine.advance(toNanos: 3_000_000_000, skipVideoBefore: 2_700_000_000)
        #expect(engine.stats.videoFramesSkipped == 20)
        #expect(engine.stats.videoFramesDecoded == 10)
        #expect(engine.stats.videoFramesUndecodable == 0)
        #expect(engine.stats.outputVideoFrames == 3)
        let (tail, patches) = engine.finish(endNanos: 3_000_000_000)
        file = CompositeEngineTests.applying(patches, to: file + tail)
        let video = CompositeEngineTests.blocks(file).filter { $0.track == 1 }
        let decoder = try VP8Decoder()
        guard let first = video.first, case .picture(let p) = decoder.decode(first.data) else {
            Issue.record("no picture written")
            return
        }
        #expect(abs(Int(p.pixel(x: 80, y: 45).y) - (40 + 27 * 6)) <= 12, "\(p.pixel(x: 80, y: 45))")
    }

    /// A sender whose SRs move its audio 40 ms later against its RTP clock (its capture stalled for
    /// 40 ms; the RTP timestamps stay continuous): the mix follows, so a beep after the move is
    /// 40 ms later in the file, where the sender captured it. (Before: kept sample-continuous up to
    /// 60 ms, so the participant's lip sync was off by 40 ms for the rest of the recording.)
    @Test func audioFollowsItsSendersClockWhenItMovesMoreThan20ms() throws {
        func onset(shiftNanos: Int64, from shiftFrame: Int) throws -> Double? {
            var (engine, file) = try CompositeEngineTests.oneParticipantEngine(camera: nil)
            let voice = try OpusEncoder(channels: 2)
            let tone = CodecTests.tone(1000, frames: 100, channels: 2)
            let silence = [Int16](repeating: 0, count: 1920)
            for k in 0..<100 {  // 2 s, a beep in frames 60-64 (1.2 s on the RTP clock)
                let nanos = Int64(k) * 20_000_000 + (k >= shiftFrame ? shiftNanos : 0)
                let data = try voice.encode(k >= 60 && k < 65 ? tone[k] : silence)
                engine.audio(peerID: "a", nanos: nanos, frame: AssembledFrame(rtpTimestamp: UInt32(k * 960), keyframe: true, data: data, size: nil, arrivalNanos: nanos))
            }
            let (tail, patches) = engine.finish(endNanos: 2_200_000_000)
            file = CompositeEngineTests.applying(patches, to: file + tail)
            let opus = try OpusDecoder(channels: 2)
            var pcm: [Int16] = []
            for b in CompositeEngineTests.blocks(file) where b.track == 2 {
                let s = try opus.decode(b.data)
                pcm += stride(from: 0, to: s.count, by: 2).map { s[$0] }
            }
            // Opus' own delay (pre-skip 312 samples) is the same in both runs; compare the two.
            return pcm.firstIndex { abs(Int($0)) > 2000 }.map { Double($0) / 48 }
        }
        let steady = try #require(try onset(shiftNanos: 0, from: 0))
        let moved = try #require(try onset(shiftNanos: 40_000_000, from: 50))
        #expect(abs(moved - steady - 40) <= 3, "beep at \(steady) ms, \(moved) ms after the sender's 40 ms move")
        // A move under 20 ms (SR re-anchoring noise) keeps the stream sample-exact.
        let small = try #require(try onset(shiftNanos: 8_000_000, from: 50))
        #expect(abs(small - steady) <= 1, "beep at \(steady) ms, \(small) ms after an 8 ms move")
    }

    /// A source frame shows on the output frame nearest its time: at 10 fps, a frame captured at
    /// 140 ms is on the output frame of 100 ms (40 ms early at most half a period), not the one of
    /// 200 ms (60 ms late; on average half a period late against the audio).
    @Test func aSourceFrameGoesToTheNearestOutputFrame() throws {
        var (engine, file) = try CompositeEngineTests.oneParticipantEngine()
        let encoder = try VP8Encoder(.init(width: 160, height: 90, fps: 10, keyframeInterval: 1000))
        let dark = YUV(y: 40, u: 128, v: 128), light = YUV(y: 200, u: 128, v: 128)
        for (n, (nanos, colour)) in [(Int64(0), dark), (140_000_000, light), (300_000_000, light)].enumerated() {
            for f in try encoder.encode(I420Image(width: 160, height: 90, fill: colour), pts: Int64(n)) {
                engine.video(source: "cam", nanos: nanos, frame: AssembledFrame(rtpTimestamp: UInt32(nanos / 11_111), keyframe: f.keyframe, data: f.data, size: nil, arrivalNanos: nanos))
            }
        }
        file += engine.advance(toNanos: 400_000_000)
        let (tail, patches) = engine.finish(endNanos: 400_000_000)
        file = CompositeEngineTests.applying(patches, to: file + tail)
        let decoder = try VP8Decoder()
        var lumas: [Int64: Int] = [:]
        for b in CompositeEngineTests.blocks(file) where b.track == 1 {
            if case .picture(let p) = decoder.decode(b.data) { lumas[b.ms] = Int(p.pixel(x: 80, y: 45).y) }
        }
        #expect(abs((lumas[0] ?? 0) - 40) <= 12, "\(lumas)")
        #expect(abs((lumas[100] ?? 0) - 200) <= 12, "\(lumas)")
    }
}
