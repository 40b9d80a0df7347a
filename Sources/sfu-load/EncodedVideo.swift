import Foundation
import Recorder

/// Real VP8 for a publisher stream (`--encoded-video`): one keyframe interval of pictures encoded
/// with libvpx at start-up and sent in a loop, so that a server that decodes (a composite
/// recording, a snapshot) sees pictures, not filler.
///
/// The content is a slowly zooming pattern of smooth waves with a little noise, which libvpx's rate
/// control can bring to the stream's bitrate (measured: 88-97% of the target for 320x180 to 1280x720
/// at 150 kbit/s to 2.5 Mbit/s). Frame 0 is a keyframe, and with temporal layers frame n has layer
/// `[0, 2, 1, 2][n % 4]` with the references that make the lower layers decodable alone, as
/// ``OutgoingStream/temporalLayer(_:)`` labels them.
final class VP8Clip {
    struct Key: Hashable {
        var width: Int
        var height: Int
        var bitrate: Int
        var fps: Int
        var frames: Int
        var temporalLayers: Int
    }

    struct ClipError: Error, CustomStringConvertible {
        let description: String
    }

    let key: Key
    /// The encoded frames, the first a keyframe.
    let frames: [[UInt8]]

    var averageBitrate: Int {
        frames.isEmpty ? 0 : frames.reduce(0) { $0 + $1.count } * 8 * key.fps / frames.count
    }

    init(_ key: Key) throws {
        self.key = key
        let encoder = try VP8Encoder(.init(width: key.width, height: key.height, fps: key.fps, bitrateBps: key.bitrate,
                                           keyframeInterval: key.frames + 1))
        var out: [[UInt8]] = []
        out.reserveCapacity(key.frames)
        var picture = I420Image(width: key.width, height: key.height)
        for n in 0..<key.frames {
            Self.draw(&picture, frame: n)
            let layer: UInt8? = key.temporalLayers == 3 ? [0, 2, 1, 2][n % 4] : nil
            let encoded = try encoder.encode(picture, pts: Int64(n), forceKeyframe: n == 0, temporalLayer: layer)
            guard encoded.count == 1, let frame = encoded.first else {
                throw ClipError(description: "libvpx gave \(encoded.count) frames for picture \(n)")
            }
            out.append(frame.data)
        }
        frames = out
    }

    /// Draws picture `n`: waves zoomed by 0.4% a frame about the centre (motion that the encoder
    /// cannot predict exactly, so every frame costs bits), a little noise, chroma drifting.
    static func draw(_ picture: inout I420Image, frame n: Int) {
        let w = picture.width, h = picture.height
        let zoom = 1.0 + Double(n) * 0.004
        // The picture is a separable sum of waves over source coordinates (u, v): tables per column and row.
        let us = (0..<w).map { Int((Double($0 - w / 2) / zoom).rounded(.down)) + w / 2 + 4096 }
        let vs = (0..<h).map { Int((Double($0 - h / 2) / zoom).rounded(.down)) + h / 2 + 4096 }
        let span = 8192 + max(w, h) * 2
        let a = (0..<span).map { 50 * sin(Double($0) * 0.05) }
        let b = (0..<span).map { cos(Double($0) * 0.07) }
        let c = (0..<(2 * span)).map { 30 * sin(Double($0) * 0.13) }
        var seed = UInt32(truncatingIfNeeded: n &* 2_654_435_761)
        picture.y.withUnsafeMutableBufferPointer { y in
            for row in 0..<h {
                let v = vs[row]
                for col in 0..<w {
                    let u = us[col]
                    seed = seed &* 1_103_515_245 &+ 12345
                    let value = 120 + a[u] * b[v] + c[u + v] + Double(seed >> 16 & 7)
                    y[row * w + col] = UInt8(max(0, min(255, value)))
                }
            }
        }
        let cw = picture.chromaWidth, ch = picture.chromaHeight
        picture.u.withUnsafeMutableBufferPointer { p in
            for row in 0..<ch { for col in 0..<cw { p[row * cw + col] = UInt8(truncatingIfNeeded: 96 + (col + n) / 8) } }
        }
        picture.v.withUnsafeMutableBufferPointer { p in
            for row in 0..<ch { for col in 0..<cw { p[row * cw + col] = UInt8(truncatingIfNeeded: 160 - (row + 2 * n) / 8) } }
        }
    }
}

/// When each packet of a stream left the publisher (CLOCK_REALTIME), by stamp counter: the latency
/// of packets that carry no stamp (the inner packets of an encoded frame) is read from here. One
/// process, one thread, one clock: the publisher writes, the subscribers read.
final class SendTimes {
    static let capacity = 8192
    private var counters = [UInt32](repeating: .max, count: capacity)
    private var nanos = [Int64](repeating: 0, count: capacity)

    func record(counter: UInt32, realtimeNanos: Int64) {
        let i = Int(counter) & (Self.capacity - 1)
        counters[i] = counter
        nanos[i] = realtimeNanos
    }

    func sent(counter: UInt32) -> Int64? {
        let i = Int(counter) & (Self.capacity - 1)
        return counters[i] == counter ? nanos[i] : nil
    }
}
