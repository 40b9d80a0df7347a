import Foundation
import RTP
import Testing
import TestSupport
@testable import Recorder

@Suite("Frame assembler (jitter buffer)")
struct FrameAssemblerTests {
    /// RTP packets of VP8 frames: each frame split in `parts` packets with VP8 descriptors (S bit on the first).
    static func packetize(_ frames: [(keyframe: Bool, data: [UInt8])], parts: Int = 3, firstSeq: UInt16 = 65530)
        -> [(seq: UInt16, ts: UInt32, marker: Bool, payload: [UInt8])] {
        var out: [(UInt16, UInt32, Bool, [UInt8])] = []
        var seq = firstSeq
        for (i, f) in frames.enumerated() {
            let chunk = (f.data.count + parts - 1) / parts
            for p in 0..<parts {
                let piece = Array(f.data[min(f.data.count, p * chunk)..<min(f.data.count, (p + 1) * chunk)])
                out.append((seq, UInt32(i) * 3000, p == parts - 1, [p == 0 ? 0x10 : 0x00] + piece))
                seq &+= 1
            }
        }
        return out
    }

    /// Frame bodies whose first byte carries the VP8 keyframe bit (P = 0 for keyframes).
    static func frames(_ n: Int, keyframes: Set<Int>) -> [(keyframe: Bool, data: [UInt8])] {
        (0..<n).map { i in (keyframes.contains(i), [keyframes.contains(i) ? 0x10 : 0x11] + [UInt8](repeating: UInt8(i), count: 30)) }
    }

    static func push(_ a: inout FrameAssembler, _ p: (seq: UInt16, ts: UInt32, marker: Bool, payload: [UInt8]), now: Int64) -> [AssembledFrame] {
        p.payload.withUnsafeBytes { a.push(sequenceNumber: p.seq, timestamp: p.ts, marker: p.marker, payload: $0, nowNanos: now) }
    }

    @Test func reorderedAndDuplicatedPacketsGiveEveryFrameInOrder() {
        let input = Self.frames(20, keyframes: [0])
        var packets = Self.packetize(input)
        var rng = SeededGenerator(seed: 7)
        // Local reordering (swap neighbours) and duplicates.
        for i in stride(from: 0, to: packets.count - 1, by: 2) where rng.next() % 2 == 0 { packets.swapAt(i, i + 1) }
        packets += packets.prefix(5)
        var a = FrameAssembler(codec: .vp8)
        var out: [AssembledFrame] = []
        for (i, p) in packets.enumerated() { out += Self.push(&a, p, now: Int64(i) * 1_000_000) }
        #expect(out.map(\.data) == input.map(\.data))
        #expect(out.map(\.rtpTimestamp) == (0..<20).map { UInt32($0) * 3000 })
        #expect(out.first?.keyframe == true && out.dropFirst().allSatisfy { !$0.keyframe })
        #expect(!a.wantsKeyframe && a.framesDropped == 0)
    }

    @Test func aLostPacketDropsFramesUntilTheNextKeyframeAndAsksForOne() {
        let input = Self.frames(12, keyframes: [0, 8])
        var packets = Self.packetize(input)
        packets.remove(at: 3 * 3 + 1)  // the middle packet of frame 3
        var a = FrameAssembler(codec: .vp8, maxWaitNanos: 100_000_000)
        var out: [AssembledFrame] = []
        var now: Int64 = 0
        for p in packets {
            out += Self.push(&a, p, now: now)
            now += 33_000_000
            out += a.poll(nowNanos: now)
        }
        out += a.poll(nowNanos: now + 1_000_000_000)
        // Frames 0-2, then nothing until the keyframe 8, then 8-11: never a frame that depends on the lost one.
        #expect(out.map(\.data) == (Array(input[0...2]) + Array(input[8...])).map(\.data))
        #expect(a.wantsKeyframe)
        #expect(a.framesDropped >= 1)
        a.keyframeRequested()
        #expect(!a.wantsKeyframe)
    }

    @Test func aMissingPacketIsWaitedForThenRepaired() {
        let input = Self.frames(4, keyframes: [0])
        var packets = Self.packetize(input)
        let late = packets.remove(at: 4)
        var a = FrameAssembler(codec: .vp8, maxWaitNanos: 200_000_000)
        var out: [AssembledFrame] = []
        for p in packets { out += Self.push(&a, p, now: 0) }
        out += a.poll(nowNanos: 150_000_000)  // still waiting
        #expect(out.count == 1)
        out += Self.push(&a, late, now: 160_000_000)  // the retransmission
        #expect(out.map(\.data) == input.map(\.data))
    }

    @Test func videoStartsAtAKeyframeAndOpusSkipsGaps() {
        var a = FrameAssembler(codec: .vp8)
        var out: [AssembledFrame] = []
        for p in Self.packetize(Self.frames(6, keyframes: [3])) { out += Self.push(&a, p, now: 0) }
        #expect(out.count == 3 && out.first?.keyframe == true)
        #expect(a.wantsKeyframe, "frames were dropped waiting for a keyframe: ask for one")
        var opus = FrameAssembler(codec: .opus, maxWaitNanos: 50_000_000)
        var audio: [AssembledFrame] = []
        for i in 0..<10 where i != 4 {
            audio += [UInt8(i), 1, 2].withUnsafeBytes { opus.push(sequenceNumber: UInt16(i), timestamp: UInt32(i) * 960, marker: false, payload: $0, nowNanos: Int64(i) * 20_000_000) }
        }
        audio += opus.poll(nowNanos: 1_000_000_000)
        #expect(audio.map { $0.data[0] } == [0, 1, 2, 3, 5, 6, 7, 8, 9])
        #expect(opus.packetsLost == 1)
    }

    /// Random loss, reordering and duplication: whatever comes out is in order, starts at a keyframe
    /// and, after any gap, restarts at a keyframe.
    @Test func propertyFramesAreAlwaysDecodableSequences() {
        var rng = SeededGenerator(seed: 42)
        for _ in 0..<50 {
            let keyframes = Set((0..<60).filter { $0 % 15 == 0 })
            let input = Self.frames(60, keyframes: keyframes)
            var packets = Self.packetize(input, parts: Int(rng.next() % 3) + 1, firstSeq: UInt16(truncatingIfNeeded: rng.next()))
            packets = packets.filter { _ in rng.next() % 100 >= 5 }
            for i in 0..<(packets.count - 1) where rng.next() % 10 == 0 { packets.swapAt(i, i + 1) }
            var a = FrameAssembler(codec: .vp8, maxWaitNanos: 50_000_000)
            var out: [AssembledFrame] = []
            var now: Int64 = 0
            for p in packets {
                out += Self.push(&a, p, now: now)
                now += 10_000_000
                out += a.poll(nowNanos: now)
            }
            out += a.flush()
            let indices = out.map { Int($0.rtpTimestamp / 3000) }
            #expect(indices == indices.sorted() && Set(indices).count == indices.count)
            #expect(out.first.map(\.keyframe) ?? true)
            for (x, y) in zip(out, out.dropFirst()) where Int(y.rtpTimestamp / 3000) != Int(x.rtpTimestamp / 3000) + 1 {
                #expect(y.keyframe, "a frame after a gap must be a keyframe")
            }
            for f in out { #expect(f.data == input[Int(f.rtpTimestamp / 3000)].data) }
        }
    }
}
