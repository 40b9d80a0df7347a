import Foundation
import Recorder
import Testing

@Suite("Recorder codecs: VP8 and Opus through libvpx and libopus")
struct CodecTests {
    static let quadrants: [YUV] = [YUV(r: 230, g: 30, b: 30), YUV(r: 30, g: 200, b: 40), YUV(r: 30, g: 40, b: 220), YUV(r: 240, g: 230, b: 40)]

    /// Four coloured quadrants.
    static func pattern(width: Int, height: Int, shift: Int = 0) -> I420Image {
        var img = I420Image(width: width, height: height)
        let hw = width / 2, hh = height / 2
        for (i, c) in quadrants.enumerated() {
            let q = (i + shift) % 4
            img.fill(Rect(x: (q % 2) * hw, y: (q / 2) * hh, width: hw, height: hh), with: c)
        }
        return img
    }

    static func close(_ a: YUV, _ b: YUV, tolerance: Int = 10) -> Bool {
        abs(Int(a.y) - Int(b.y)) <= tolerance && abs(Int(a.u) - Int(b.u)) <= tolerance && abs(Int(a.v) - Int(b.v)) <= tolerance
    }

    @Test func vp8RoundTripKeepsSizeAndColours() throws {
        let encoder = try VP8Encoder(.init(width: 320, height: 240, fps: 30, bitrateBps: 800_000))
        let decoder = try VP8Decoder()
        var decoded: [I420Image] = []
        var keyframes = 0
        for n in 0..<10 {
            for f in try encoder.encode(Self.pattern(width: 320, height: 240, shift: n / 5), pts: Int64(n)) {
                if f.keyframe { keyframes += 1 }
                #expect(VP8Decoder.isKeyframe(f.data) == f.keyframe)
                if case .picture(let p) = decoder.decode(f.data) { decoded.append(p) }
            }
        }
        #expect(keyframes >= 1)
        #expect(decoded.count == 10)
        let last = try #require(decoded.last)
        #expect(last.width == 320 && last.height == 240)
        // Frames 5...9 are the pattern shifted by one quadrant.
        for (i, c) in Self.quadrants.enumerated() {
            let q = (i + 1) % 4
            let px = last.pixel(x: (q % 2) * 160 + 80, y: (q / 2) * 120 + 60)
            #expect(Self.close(px, c), "quadrant \(q): \(px) vs \(c)")
        }
    }

    @Test func vp8ForcedKeyframeAndDecoderWaitsForKeyframe() throws {
        let encoder = try VP8Encoder(.init(width: 160, height: 120, fps: 30, bitrateBps: 300_000, keyframeInterval: 1000))
        var frames: [VP8Encoder.Frame] = []
        for n in 0..<6 { frames += try encoder.encode(Self.pattern(width: 160, height: 120), pts: Int64(n), forceKeyframe: n == 4) }
        #expect(frames.map(\.keyframe) == [true, false, false, false, true, false])
        let decoder = try VP8Decoder()
        // Joining mid-stream: inter frames are refused until the keyframe.
        #expect(decoder.decode(frames[1].data) == .needsKeyframe)
        #expect(decoder.needsKeyframe)
        if case .picture = decoder.decode(frames[4].data) {} else { Issue.record("keyframe not decoded") }
        if case .picture = decoder.decode(frames[5].data) {} else { Issue.record("inter frame after keyframe not decoded") }
        #expect(!decoder.needsKeyframe)
        // Garbage is reported, and the decoder then waits for a keyframe again.
        var broken = frames[5].data
        broken.replaceSubrange(3..<min(broken.count, 40), with: [UInt8](repeating: 0xFF, count: min(broken.count, 40) - 3))
        let outcome = decoder.decode(Array(broken.prefix(12)))
        #expect(outcome == .needsKeyframe)
        #expect(decoder.decode(frames[5].data) == .needsKeyframe)
        #expect(decoder.framesRejected >= 3)
    }

    /// A picture that changes every frame: diagonal bands moving `n` pixels right.
    static func moving(width: Int, height: Int, frame n: Int) -> I420Image {
        var img = I420Image(width: width, height: height)
        for y in 0..<height {
            for x in 0..<width { img.y[y * width + x] = UInt8(truncatingIfNeeded: ((x + y + 3 * n) / 4) * 37) }
        }
        return img
    }

    /// With the temporal-layer flags a receiver that gets layer 0 only, or layers 0 and 1, decodes the
    /// same pictures for those frames as one that gets everything (without them frame 4 would predict
    /// from frame 3, which the layer-0 receiver never saw, and differ).
    @Test func vp8TemporalLayersDecodeWithoutTheHigherLayers() throws {
        let encoder = try VP8Encoder(.init(width: 160, height: 96, fps: 30, bitrateBps: 400_000, keyframeInterval: 1000))
        let layers: [UInt8] = [0, 2, 1, 2]
        var frames: [(layer: UInt8, data: [UInt8])] = []
        for n in 0..<12 {
            for f in try encoder.encode(Self.moving(width: 160, height: 96, frame: n), pts: Int64(n), forceKeyframe: n == 0,
                                        temporalLayer: layers[n % 4]) {
                frames.append((layers[n % 4], f.data))
            }
        }
        #expect(frames.count == 12)
        func decode(upTo maxLayer: UInt8) throws -> [Int: I420Image] {
            let decoder = try VP8Decoder()
            var out: [Int: I420Image] = [:]
            for (n, f) in frames.enumerated() where f.layer <= maxLayer {
                guard case .picture(let p) = decoder.decode(f.data) else {
                    Issue.record("frame \(n) (layer \(f.layer)) not decoded with layers up to \(maxLayer)")
                    continue
                }
                out[n] = p
            }
            return out
        }
        let all = try decode(upTo: 2)
        #expect(all.count == 12)
        for maxLayer: UInt8 in [0, 1] {
            let some = try decode(upTo: maxLayer)
            #expect(some.count == (maxLayer == 0 ? 3 : 6))
            for (n, picture) in some {
                let same = picture == all[n]  // (not inside #expect: a failure would print both pictures)
                #expect(same, "frame \(n) differs with layers up to \(maxLayer)")
            }
        }
        // The layers share the content: frame 4 is not a copy of frame 0.
        let moved = all[4] != all[0]
        #expect(moved)
    }

    @Test func vp8EncoderRejectsAWrongSize() throws {
        let encoder = try VP8Encoder(.init(width: 160, height: 120))
        #expect(throws: VP8Encoder.EncoderError.self) { try encoder.encode(I420Image(width: 320, height: 240), pts: 0) }
        #expect(throws: VP8Encoder.EncoderError.self) { try VP8Encoder(.init(width: 161, height: 120)) }
    }

    /// Power of `frequency` in `samples` (Goertzel), normalised by length.
    static func power(_ samples: [Float], frequency: Double, rate: Double = 48000) -> Double {
        let k = 2 * cos(2 * Double.pi * frequency / rate)
        var s1 = 0.0, s2 = 0.0
        for x in samples {
            let s = Double(x) + k * s1 - s2
            s2 = s1
            s1 = s
        }
        return (s1 * s1 + s2 * s2 - k * s1 * s2) / Double(samples.count * samples.count)
    }

    static func tone(_ frequency: Double, frames: Int, channels: Int, amplitude: Double = 8000) -> [[Int16]] {
        (0..<frames).map { f in
            var pcm = [Int16](repeating: 0, count: 960 * channels)
            for i in 0..<960 {
                let s = Int16(amplitude * sin(2 * Double.pi * frequency * Double(f * 960 + i) / 48000))
                for c in 0..<channels { pcm[i * channels + c] = s }
            }
            return pcm
        }
    }

    @Test(arguments: [1, 2]) func opusRoundTripKeepsTheTone(channels: Int) throws {
        let encoder = try OpusEncoder(channels: channels, bitrateBps: 64000)
        #expect(encoder.lookahead > 0 && encoder.lookahead < 1000)
        let decoder = try OpusDecoder(channels: channels)
        var out: [Float] = []
        for frame in Self.tone(1000, frames: 25, channels: channels) {
            let packet = try encoder.encode(frame)
            let pcm = try decoder.decode(packet)
            #expect(pcm.count == 960 * channels)
            // Left channel only.
            out += stride(from: 0, to: pcm.count, by: channels).map { Float(pcm[$0]) }
        }
        let steady = Array(out.suffix(48000 / 4))
        let at1k = Self.power(steady, frequency: 1000), at2k = Self.power(steady, frequency: 2500), at300 = Self.power(steady, frequency: 300)
        #expect(at1k > 100 * at2k && at1k > 100 * at300)
        let rms = sqrt(steady.reduce(0) { $0 + Double($1) * Double($1) } / Double(steady.count))
        #expect(rms > 8000 * 0.707 * 0.7 && rms < 8000 * 0.707 * 1.3, "rms \(rms)")
    }

    @Test func opusConcealsALostPacket() throws {
        let encoder = try OpusEncoder(channels: 1)
        let decoder = try OpusDecoder(channels: 1)
        let frames = Self.tone(600, frames: 10, channels: 1)
        for f in frames.prefix(8) { _ = try decoder.decode(try encoder.encode(f)) }
        let plc = decoder.conceal()
        #expect(plc.count == 960)
        // PLC continues the tone rather than going silent.
        let energy = plc.prefix(480).reduce(0.0) { $0 + Double($1) * Double($1) } / 480
        #expect(energy > 1000)
        #expect(throws: OpusDecoder.CodecError.self) { try encoder.encode([Int16](repeating: 0, count: 100)) }
    }
}
