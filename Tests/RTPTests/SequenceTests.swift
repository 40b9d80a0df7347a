import Testing
import TestSupport
@testable import RTP

@Suite("Sequence numbers: unwrapping and rewriting")
struct SequenceTests {
    @Test func unwrapsAcrossWrapAndReorder() {
        var u = SequenceUnwrapper()
        #expect(u.unwrap(65534) == 65534)
        #expect(u.unwrap(65535) == 65535)
        #expect(u.unwrap(0) == 65536)
        #expect(u.unwrap(65533) == 65533)  // late packet from before the wrap
        #expect(u.unwrap(2) == 65538)
        #expect(u.highest == 65538)
        #expect(u.peek(1) == 65537)
        // Backwards wrap from the start.
        var v = SequenceUnwrapper()
        #expect(v.unwrap(1) == 1)
        #expect(v.unwrap(65535) == -1)
        #expect(v.highest == 1)
    }

    @Test func serialNumberComparison() {
        #expect(SerialNumber.isNewer(UInt16(1), than: 65535, bits: 16))
        #expect(!SerialNumber.isNewer(UInt16(65535), than: 1, bits: 16))
        #expect(!SerialNumber.isNewer(UInt16(5), than: 5, bits: 16))
        #expect(SerialNumber.isNewer(UInt16(0), than: 0x7FFF, bits: 15))
        #expect(SerialNumber.isNewer(UInt8(3), than: 250, bits: 8))
    }

    struct Step {
        enum Op { case input, drop }
        var op: Op
        var value: UInt16
        var expected: UInt16?
    }

    static func run(_ steps: [Step], _ r: inout SeqRewriter<UInt16>) {
        for (i, s) in steps.enumerated() {
            switch s.op {
            case .input: #expect(r.input(s.value) == s.expected, "step \(i): input \(s.value)")
            case .drop: r.drop(s.value)
            }
        }
    }

    @Test func dropsCloseTheGapIncludingAcrossWrap() {
        var r = SeqRewriter<UInt16>(bits: 16)
        Self.run([
            Step(op: .input, value: 65532, expected: 65532),
            Step(op: .drop, value: 65533),
            Step(op: .input, value: 65534, expected: 65533),
            Step(op: .drop, value: 65535),
            Step(op: .input, value: 0, expected: 65534),
            Step(op: .input, value: 1, expected: 65535),
            Step(op: .input, value: 2, expected: 0),
            Step(op: .input, value: 65533, expected: nil),  // was dropped
            Step(op: .input, value: 65534, expected: 65533),  // a duplicate maps the same way
        ], &r)
        #expect(r.maxOutput == 0)
    }

    @Test func lateArrivalsBetweenDropsAreSlottedIn() {
        var r = SeqRewriter<UInt16>(bits: 16)
        Self.run([
            Step(op: .input, value: 10, expected: 10),
            Step(op: .drop, value: 12),
            Step(op: .input, value: 13, expected: 12),
            Step(op: .input, value: 11, expected: 11),  // arrives late, before the dropped one
            Step(op: .drop, value: 14),
            Step(op: .drop, value: 15),
            Step(op: .input, value: 16, expected: 13),
        ], &r)
    }

    @Test func syncSplicesANewStream() {
        var r = SeqRewriter<UInt16>(bits: 16)
        _ = r.input(100)
        _ = r.input(101)
        r.sync(nextInput: 20000)  // layer switch: the new stream continues at 102
        #expect(r.input(20000) == 102)
        #expect(r.input(20001) == 103)
        #expect(r.input(100) == nil)  // the old stream is far outside the window now
        r.sync(nextInput: 7, gap: 2)  // skip one (incomplete frame)
        #expect(r.input(7) == 105)
        r.sync(input: 1, output: 65535)
        #expect(r.input(2) == 0)
    }

    @Test func tooOldInputsAreRefused() {
        var r = SeqRewriter<UInt16>(bits: 16, window: 100)
        #expect(r.input(1000) == 1000)
        #expect(r.input(950) == 950)
        #expect(r.input(899) == nil)
    }

    @Test func otherWidths() {
        var pid = SeqRewriter<UInt16>(bits: 15)
        pid.sync(input: 32766, output: 32766)
        #expect(pid.input(32767) == 32767)
        #expect(pid.input(0) == 0)
        pid.drop(1)
        #expect(pid.input(2) == 1)
        var tl0 = SeqRewriter<UInt8>(bits: 8)
        tl0.sync(input: 250, output: 3)
        #expect(tl0.input(255) == 8)
        #expect(tl0.input(4) == 13)
        var ts = SeqRewriter<UInt32>(bits: 32)
        #expect(ts.input(4_294_960_000) == 4_294_960_000)
        ts.sync(nextInput: 90_000, gap: 3000)
        #expect(ts.input(90_000) == 4_294_963_000)
        #expect(ts.input(96_000) == 1_704)  // wrapped
    }

    /// Property: against a plain model on unwrapped numbers (output = input - dropped inputs below
    /// it), with random drops and local reordering over several wraps.
    @Test func matchesModelUnderRandomDropsAndReordering() {
        var rng = SeededGenerator(seed: 42)
        var r = SeqRewriter<UInt16>(bits: 16)
        let start = 65000
        var order = Array(start..<(start + 200_000))
        // Local reordering: swap neighbours within 5 positions.
        for i in stride(from: 0, to: order.count - 5, by: 3) where Int.random(in: 0..<4, using: &rng) == 0 {
            order.swapAt(i, i + Int.random(in: 1...4, using: &rng))
        }
        var dropped = Set<Int>()
        var droppedSorted: [Int] = []
        var highest = Int.min
        var checked = 0
        for x in order {
            let wire = UInt16(truncatingIfNeeded: x)
            if x > highest, highest != Int.min, Int.random(in: 0..<10, using: &rng) == 0 {
                r.drop(wire)
                dropped.insert(x)
                droppedSorted.append(x)
                highest = x
                continue
            }
            highest = max(highest, x)
            let out = r.input(wire)
            if dropped.contains(x) {
                #expect(out == nil)
                continue
            }
            // Model: count dropped values below x (droppedSorted is increasing).
            var lo = 0, hi = droppedSorted.count
            while lo < hi { let m = (lo + hi) / 2; if droppedSorted[m] < x { lo = m + 1 } else { hi = m } }
            let expected = UInt16(truncatingIfNeeded: x - lo)
            if out != expected {
                Issue.record("input \(x): got \(String(describing: out)), model \(expected)")
                return
            }
            checked += 1
        }
        #expect(checked > 150_000)
    }
}
