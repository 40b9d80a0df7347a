// Helpers shared by the test targets (fakes and generators for tests only).

/// SplitMix64: a small seeded generator so randomized tests replay exactly.
package struct SeededGenerator: RandomNumberGenerator, Sendable {
    package var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Array where Element == UInt8 {
    /// Bytes from hex digits; whitespace and other non-hex characters are skipped.
    package init(hex: String) {
        var out: [UInt8] = []
        var it = hex.filter { $0.isHexDigit }.makeIterator()
        while let a = it.next(), let b = it.next() {
            out.append((UInt8(String(a), radix: 16) ?? 0) << 4 | (UInt8(String(b), radix: 16) ?? 0))
        }
        self = out
    }
}

package func randomBytes(_ count: Int, using rng: inout SeededGenerator) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
}
