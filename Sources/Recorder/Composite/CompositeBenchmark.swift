import Foundation

/// The composite's processing cost without a network (the `composite-bench` tool): `participants`
/// cameras of `sourceWidth` x `sourceHeight` at 30 fps (moving content, VP8 at `sourceBitrateBps`)
/// and as many Opus microphones, encoded beforehand, then run through ``CompositeEngine`` into a
/// canvas as the processing queue would, in 20 ms steps. CPU time is the calling thread's.
package enum CompositeBenchmark {
    package struct Report: Sendable {
        package var mediaSeconds: Double
        package var cpuSeconds: Double
        package var decodeSeconds: Double
        package var composeSeconds: Double
        package var encodeSeconds: Double
        package var mixSeconds: Double
        package var outputVideoFrames: Int
        package var outputBytes: Int
        package var maxResidentMiB: Double
    }

    package static func run(participants: Int, sourceWidth: Int, sourceHeight: Int, sourceBitrateBps: Int, seconds: Int,
                            width: Int, height: Int, fps: Int, layout: CompositeLayout.Kind, cpuUsed: Int = 12) throws -> Report {
        let frames = seconds * 30
        var video: [[(nanos: Int64, frame: AssembledFrame)]] = []
        var audio: [[(nanos: Int64, frame: AssembledFrame)]] = []
        for p in 0..<participants {
            let encoder = try VP8Encoder(.init(width: sourceWidth, height: sourceHeight, fps: 30, bitrateBps: sourceBitrateBps, cpuUsed: 12))
            var track: [(Int64, AssembledFrame)] = []
            for n in 0..<frames {
                let img = movingPattern(width: sourceWidth, height: sourceHeight, frame: n, seed: p)
                for f in try encoder.encode(img, pts: Int64(n)) {
                    let nanos = Int64(n) * 1_000_000_000 / 30
                    track.append((nanos, AssembledFrame(rtpTimestamp: UInt32(n * 3000), keyframe: f.keyframe, data: f.data, size: nil, arrivalNanos: nanos)))
                }
            }
            video.append(track)
            let opus = try OpusEncoder(channels: 2)
            var mic: [(Int64, AssembledFrame)] = []
            let hz = 300.0 + 150.0 * Double(p)
            for k in 0..<(seconds * 50) {
                var pcm = [Int16](repeating: 0, count: 1920)
                for i in 0..<960 {
                    let s = Int16(6000 * sin(2 * Double.pi * hz * Double(k * 960 + i) / 48000))
                    pcm[2 * i] = s
                    pcm[2 * i + 1] = s
                }
                let nanos = Int64(k) * 20_000_000
                mic.append((nanos, AssembledFrame(rtpTimestamp: UInt32(k * 960), keyframe: true, data: try opus.encode(pcm), size: nil, arrivalNanos: nanos)))
            }
            audio.append(mic)
        }
        var options = CompositeEngine.Options()
        options.width = width
        options.height = height
        options.fps = fps
        options.layout = layout
        options.cpuUsed = cpuUsed
        let engine = try CompositeEngine(options: options, originNanos: 0)
        var bytes = engine.start().count
        engine.roster((0..<participants).map { .init(peerID: "p\($0)", name: "Participant \($0)", camera: "cam\($0)", screen: nil) }, atNanos: 0)
        let cpu0 = threadCPUNanos()
        var vi = [Int](repeating: 0, count: participants), ai = [Int](repeating: 0, count: participants)
        var now: Int64 = 0
        let end = Int64(seconds) * 1_000_000_000
        while now <= end {
            for p in 0..<participants {
                while vi[p] < video[p].count, video[p][vi[p]].nanos <= now {
                    engine.video(source: "cam\(p)", nanos: video[p][vi[p]].nanos, frame: video[p][vi[p]].frame)
                    vi[p] += 1
                }
                while ai[p] < audio[p].count, audio[p][ai[p]].nanos <= now {
                    engine.audio(peerID: "p\(p)", nanos: audio[p][ai[p]].nanos, frame: audio[p][ai[p]].frame)
                    ai[p] += 1
                }
            }
            bytes += engine.advance(toNanos: now - 200_000_000).count
            now += 20_000_000
        }
        bytes += engine.finish(endNanos: end).append.count
        let cpu = Double(threadCPUNanos() - cpu0) / 1e9
        let s = engine.stats
        var usage = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
        return Report(mediaSeconds: Double(seconds), cpuSeconds: cpu, decodeSeconds: Double(s.decodeNanos) / 1e9,
                      composeSeconds: Double(s.composeNanos) / 1e9, encodeSeconds: Double(s.encodeNanos) / 1e9,
                      mixSeconds: Double(s.mixNanos) / 1e9, outputVideoFrames: s.outputVideoFrames, outputBytes: bytes,
                      maxResidentMiB: Double(usage.ru_maxrss) / 1024)
    }

    static func threadCPUNanos() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// A gradient that scrolls and a bar that moves (so inter frames carry real work), tinted per participant.
    static func movingPattern(width: Int, height: Int, frame: Int, seed: Int) -> I420Image {
        var img = I420Image(width: width, height: height, fill: YUV(y: 100, u: UInt8(60 + 40 * seed % 160), v: UInt8(200 - 30 * seed % 160)))
        img.y.withUnsafeMutableBufferPointer { y in
            for row in 0..<height {
                for col in 0..<width { y[row * width + col] = UInt8(truncatingIfNeeded: (col + row / 2 + frame * 4) & 0xFF) }
            }
        }
        let bar = (frame * 8) % max(1, width - 32)
        img.fill(Rect(x: bar & ~1, y: 0, width: 32, height: height), with: YUV(y: 235, u: 128, v: 128))
        return img
    }
}
