/// Modular comparisons for sequence numbers of `bits` width (RFC 1982 serial number arithmetic).
package enum SerialNumber {
    /// Whether `a` is newer than `b` on a circle of 2^bits values.
    @inlinable @inline(__always)
    package static func isNewer<T: FixedWidthInteger & UnsignedInteger>(_ a: T, than b: T, bits: Int) -> Bool {
        let mask: T = bits >= T.bitWidth ? T.max : (T(1) << T(bits)) &- 1
        let diff = (a &- b) & mask
        return diff != 0 && diff < (T(1) << T(bits - 1))
    }
}

/// Turns 16-bit sequence numbers into a monotonic 64-bit count (wrap-around included), choosing
/// for each input the value closest to the last one.
package struct SequenceUnwrapper: Sendable {
    @usableFromInline var last: Int64?

    package init() {}

    /// The unwrapped value of `seq`. The first input maps to itself (0...65535).
    @inlinable
    package mutating func unwrap(_ seq: UInt16) -> Int64 {
        guard let last else {
            self.last = Int64(seq)
            return Int64(seq)
        }
        let delta = Int64(Int16(bitPattern: seq &- UInt16(truncatingIfNeeded: last)))
        let value = last + delta
        if value > last { self.last = value }
        return value
    }

    /// The unwrapped value `seq` would get, without moving the state.
    @inlinable
    package func peek(_ seq: UInt16) -> Int64 {
        guard let last else { return Int64(seq) }
        return last + Int64(Int16(bitPattern: seq &- UInt16(truncatingIfNeeded: last)))
    }

    /// The highest value seen so far.
    package var highest: Int64? { last }
}

extension Int {
    /// The smallest power of two not below this (1 at least): the size of a ring indexed by a
    /// sequence number masked with `size - 1`.
    package var roundedUpToPowerOfTwo: Int {
        var c = 1
        while c < self { c <<= 1 }
        return c
    }
}
