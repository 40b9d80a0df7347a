/// Rewrites a modular counter (RTP sequence numbers, timestamps, VP8 picture ids, TL0PICIDX) from
/// an input space to an output space that stays continuous for the receiver: inputs the consumer
/// drops leave no gap, and a switch to another input stream (simulcast layer, new publisher) can
/// be spliced on with ``sync(input:output:)``. The model is mediasoup's `SeqManager<T, N>`.
///
/// `output = input + base - (dropped inputs older than input)` modulo 2^bits.
package struct SeqRewriter<T: FixedWidthInteger & UnsignedInteger & Sendable>: Sendable {
    package let bits: Int
    @usableFromInline let mask: T
    @usableFromInline let window: T
    /// Half the range: `a` is newer than `b` when `(a - b) mod 2^bits` is in 1..<half.
    @usableFromInline let half: T
    @usableFromInline var base: T = 0
    @usableFromInline var maxInput: T = 0
    @usableFromInline var maxOutputValue: T = 0
    @usableFromInline var started = false
    /// Dropped inputs, oldest first, all within `window` of `maxInput`.
    @usableFromInline var dropped: [T] = []
    @usableFromInline var droppedStart = 0

    /// - Parameters:
    ///   - bits: width of the counter: 16 for sequence numbers, 32 for timestamps, 15 for VP8
    ///     picture ids, 8 for TL0PICIDX.
    ///   - window: how far behind the newest input an input may be and still be placed; older
    ///     inputs are refused. Defaults to (and is at most) 1/4 of the range.
    package init(bits: Int, window: Int? = nil) {
        precondition(bits >= 2 && bits <= T.bitWidth)
        self.bits = bits
        mask = bits == T.bitWidth ? T.max : (T(1) << T(bits)) &- 1
        half = T(1) << T(bits - 1)
        let quarter = bits == T.bitWidth ? T.max / 4 : T(1) << T(bits - 2)
        self.window = window.map { min(T(clamping: max($0, 1)), quarter) } ?? quarter
        dropped.reserveCapacity(64)
    }

    /// The highest output produced so far (meaningful once ``hasStarted``).
    package var maxOutput: T { maxOutputValue }
    package var hasStarted: Bool { started }

    @inlinable @inline(__always)
    func newer(_ a: T, _ b: T) -> Bool {
        let diff = (a &- b) & mask
        return diff != 0 && diff < half
    }

    /// Maps `input` to `output` from now on: the next inputs continue from there.
    package mutating func sync(input: T, output: T) {
        base = (output &- input) & mask
        maxInput = input
        maxOutputValue = output & mask
        dropped.removeAll(keepingCapacity: true)
        droppedStart = 0
        started = true
    }

    /// Splices a new input stream on so that `input` comes out as the last output + `gap`
    /// (1 for sequence numbers; for timestamps, the elapsed time in clock units).
    package mutating func sync(nextInput input: T, gap: T = 1) {
        sync(input: input, output: started ? (maxOutputValue &+ gap) & mask : input)
    }

    /// Marks `input` as dropped: it produces no output and later inputs close the gap.
    /// Only an input newer than every input so far can be dropped (older ones were already placed).
    package mutating func drop(_ input: T) {
        guard started, newer(input, maxInput) else { return }
        maxInput = input
        dropped.append(input)
        fold()
    }

    /// The output for `input`, or nil when it was dropped or is too old to place.
    @inlinable
    package mutating func input(_ input: T) -> T? {
        if !started { sync(input: input, output: input) }
        if newer(input, maxInput) {
            maxInput = input
            fold()
        } else if input != maxInput, ((maxInput &- input) & mask) > window {
            return nil
        }
        if droppedStart == dropped.count {
            // Nothing dropped within the window (the common case): a plain offset.
            let output = (input &+ base) & mask
            if newer(output, maxOutputValue) { maxOutputValue = output }
            return output
        }
        // Dropped entries are in increasing (modular) order: binary-search the first one not older than input.
        var low = droppedStart
        var high = dropped.count
        while low < high {
            let mid = (low + high) / 2
            if newer(input, dropped[mid]) { low = mid + 1 } else { high = mid }
        }
        if low < dropped.count && dropped[low] == input { return nil }
        let offset = T(truncatingIfNeeded: low - droppedStart)
        let output = (input &+ base &- offset) & mask
        if newer(output, maxOutputValue) { maxOutputValue = output }
        return output
    }

    /// Folds dropped entries that fell out of the window into `base`: every input that can still be
    /// placed is newer than them.
    @inlinable
    mutating func fold() {
        if dropped.isEmpty { return }
        while droppedStart < dropped.count, ((maxInput &- dropped[droppedStart]) & mask) > window {
            base = (base &- 1) & mask
            droppedStart += 1
        }
        if droppedStart > 0 && (droppedStart >= 32 || droppedStart == dropped.count) {
            dropped.removeFirst(droppedStart)
            droppedStart = 0
        }
    }
}
