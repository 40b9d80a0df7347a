/// A bounded store of recently sent packets, by sequence number, to answer NACKs.
///
/// All memory is allocated up front: `capacity` slots of `slotSize` bytes in one array. Storing
/// copies the packet into its slot (seq mod capacity), overwriting whatever was there; nothing
/// allocates per packet.
package struct RetransmissionBuffer: Sendable {
    package let capacity: Int
    package let slotSize: Int
    @usableFromInline var storage: [UInt8]
    @usableFromInline var lengths: [Int]
    @usableFromInline var sequences: [UInt16]
    @usableFromInline var times: [Int64]

    /// - Parameters:
    ///   - capacity: number of packets kept (rounded up to a power of two).
    ///   - slotSize: largest packet stored; larger ones are refused.
    package init(capacity: Int = 1024, slotSize: Int = 1500) {
        let c = capacity.roundedUpToPowerOfTwo
        self.capacity = c
        self.slotSize = slotSize
        storage = [UInt8](repeating: 0, count: c * slotSize)
        lengths = [Int](repeating: 0, count: c)
        sequences = [UInt16](repeating: 0, count: c)
        times = [Int64](repeating: 0, count: c)
    }

    /// Copies `packet` into the slot for `sequenceNumber`.
    /// - Returns: false when the packet is larger than `slotSize` (it is not stored).
    @inlinable
    @discardableResult
    package mutating func store(_ packet: UnsafeRawBufferPointer, sequenceNumber: UInt16, nowNanos: Int64) -> Bool {
        guard packet.count <= slotSize, !packet.isEmpty else { return false }
        let slot = Int(sequenceNumber) & (capacity - 1)
        let size = slotSize
        storage.withUnsafeMutableBytes { raw in
            UnsafeMutableRawBufferPointer(rebasing: raw[(slot * size)..<(slot * size + packet.count)]).copyMemory(from: packet)
        }
        lengths[slot] = packet.count
        sequences[slot] = sequenceNumber
        times[slot] = nowNanos
        return true
    }

    /// Calls `body` with the stored packet for `sequenceNumber`, if it is still there and not older than `maxAgeNanos`.
    @inlinable
    package func withPacket<R>(sequenceNumber: UInt16, nowNanos: Int64, maxAgeNanos: Int64 = 2_000_000_000, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        let slot = Int(sequenceNumber) & (capacity - 1)
        guard lengths[slot] > 0, sequences[slot] == sequenceNumber, nowNanos - times[slot] <= maxAgeNanos else { return nil }
        let start = slot * slotSize
        let length = lengths[slot]
        return try storage.withUnsafeBytes { raw in try body(UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)])) }
    }

    /// A copy of the stored packet (convenience for tests and tools).
    package func packet(sequenceNumber: UInt16, nowNanos: Int64, maxAgeNanos: Int64 = 2_000_000_000) -> [UInt8]? {
        withPacket(sequenceNumber: sequenceNumber, nowNanos: nowNanos, maxAgeNanos: maxAgeNanos) { Array($0) }
    }
}
