// Big-endian reads and writes on raw buffers, shared with the other modules of the package
// (`package` access). Callers check bounds first; these helpers do not.

extension UnsafeRawBufferPointer {
    @inlinable @inline(__always)
    package func u8(_ offset: Int) -> UInt8 { self[offset] }

    @inlinable @inline(__always)
    package func u16(_ offset: Int) -> UInt16 {
        UInt16(self[offset]) << 8 | UInt16(self[offset + 1])
    }

    @inlinable @inline(__always)
    package func u24(_ offset: Int) -> UInt32 {
        UInt32(self[offset]) << 16 | UInt32(self[offset + 1]) << 8 | UInt32(self[offset + 2])
    }

    @inlinable @inline(__always)
    package func u32(_ offset: Int) -> UInt32 {
        UInt32(self[offset]) << 24 | UInt32(self[offset + 1]) << 16 | UInt32(self[offset + 2]) << 8 | UInt32(self[offset + 3])
    }

    @inlinable @inline(__always)
    package func u64(_ offset: Int) -> UInt64 { UInt64(u32(offset)) << 32 | UInt64(u32(offset + 4)) }
}

extension UnsafeMutableRawBufferPointer {
    @inlinable @inline(__always)
    package func put16(_ value: UInt16, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value >> 8)
        self[offset + 1] = UInt8(truncatingIfNeeded: value)
    }

    @inlinable @inline(__always)
    package func put32(_ value: UInt32, at offset: Int) {
        self[offset] = UInt8(truncatingIfNeeded: value >> 24)
        self[offset + 1] = UInt8(truncatingIfNeeded: value >> 16)
        self[offset + 2] = UInt8(truncatingIfNeeded: value >> 8)
        self[offset + 3] = UInt8(truncatingIfNeeded: value)
    }
}

extension Array where Element == UInt8 {
    @inlinable @inline(__always)
    package mutating func append16(_ value: UInt16) {
        append(UInt8(truncatingIfNeeded: value >> 8))
        append(UInt8(truncatingIfNeeded: value))
    }

    @inlinable @inline(__always)
    package mutating func append24(_ value: UInt32) {
        append(UInt8(truncatingIfNeeded: value >> 16))
        append(UInt8(truncatingIfNeeded: value >> 8))
        append(UInt8(truncatingIfNeeded: value))
    }

    @inlinable @inline(__always)
    package mutating func append32(_ value: UInt32) {
        append(UInt8(truncatingIfNeeded: value >> 24))
        append(UInt8(truncatingIfNeeded: value >> 16))
        append(UInt8(truncatingIfNeeded: value >> 8))
        append(UInt8(truncatingIfNeeded: value))
    }

    @inlinable @inline(__always)
    package mutating func append64(_ value: UInt64) {
        append32(UInt32(truncatingIfNeeded: value >> 32))
        append32(UInt32(truncatingIfNeeded: value))
    }

    /// Appends zero bytes until the count is a multiple of 4.
    @inlinable
    package mutating func padTo4() {
        while count % 4 != 0 { append(0) }
    }
}

/// Lowercase hex of some bytes, e.g. for logs and `sfu inspect`.
public func hexString<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
    let digits: [Character] = Array("0123456789abcdef")
    var out = ""
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0x0f)])
    }
    return out
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for parsers with typed throws (the standard one rethrows untyped errors).
    @inlinable
    func withParsedBytes<R>(_ body: (UnsafeRawBufferPointer) throws(RTPParseError) -> R) throws(RTPParseError) -> R {
        let result: Result<R, RTPParseError> = withUnsafeBytes { raw in
            Result { () throws(RTPParseError) -> R in try body(raw) }
        }
        return try result.get()
    }
}
