import Foundation
import Recorder

// The composite recorder's processing cost per second of recording (docs/BENCHMARKS.md): run with a
// release build, `swift build -c release --product composite-bench && .build/release/composite-bench`.
// Arguments: [participants] [source WxH] [seconds] [output WxH] [fps] [cpu-used].
let args = CommandLine.arguments
let participants = args.count > 1 ? Int(args[1]) ?? 4 : 4
func size(_ s: String?, _ d: (Int, Int)) -> (Int, Int) {
    guard let parts = s?.split(separator: "x"), parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]) else { return d }
    return (w, h)
}
let source = size(args.count > 2 ? args[2] : nil, (1280, 720))
let seconds = args.count > 3 ? Int(args[3]) ?? 10 : 10
let output = size(args.count > 4 ? args[4] : nil, (1280, 720))
let fps = args.count > 5 ? Int(args[5]) ?? 30 : 30
let cpuUsed = args.count > 6 ? Int(args[6]) ?? 12 : 12
do {
    let r = try CompositeBenchmark.run(participants: participants, sourceWidth: source.0, sourceHeight: source.1,
                                       sourceBitrateBps: source.0 >= 1280 ? 1_500_000 : 500_000, seconds: seconds,
                                       width: output.0, height: output.1, fps: fps, layout: .grid, cpuUsed: cpuUsed)
    let per = { (x: Double) in String(format: "%.3f", x / r.mediaSeconds) }
    print("composite: \(participants) x \(source.0)x\(source.1)@30 VP8 + Opus -> \(output.0)x\(output.1)@\(fps) VP8 (cpu-used \(cpuUsed)) + Opus, \(seconds) s")
    print("cpu core-seconds per second of recording: total \(per(r.cpuSeconds)) = decode \(per(r.decodeSeconds)) + compose \(per(r.composeSeconds)) + encode \(per(r.encodeSeconds)) + mix \(per(r.mixSeconds))")
    print("output: \(r.outputVideoFrames) video frames, \(r.outputBytes / 1024) KiB; max RSS \(String(format: "%.0f", r.maxResidentMiB)) MiB (inputs held in memory included)")
} catch {
    FileHandle.standardError.write(Data("composite-bench: \(error)\n".utf8))
    exit(1)
}
