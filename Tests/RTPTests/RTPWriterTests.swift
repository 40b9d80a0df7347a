import RTP
import Testing

@Suite("RTP writer: the SFU's outbound packets parse back as written")
struct RTPWriterTests {
    static let cc = RTPWriter.TransportCC(id: 3, sequence: 0xABCD)

    @Test func mediaPacketWithTransportCCParsesBack() throws {
        let payload: [UInt8] = [9, 8, 7, 6, 5]
        var buffer = [UInt8](repeating: 0xEE, count: 1500)
        let n = buffer.withUnsafeMutableBytes { b in
            payload.withUnsafeBytes {
                RTPWriter.writePacket(b, marker: true, payloadType: 111, sequenceNumber: 7, timestamp: 48_000, ssrc: 0xCAFE_F00D,
                                      transportCC: Self.cc, originalSequence: nil, payload: $0, vp8: nil)
            }
        }
        #expect(n == RTPWriter.headerSize(transportCC: true) + payload.count)
        let packet = Array(buffer[..<n])
        let h = try RTPHeader(parsing: packet)
        #expect(h.marker && h.payloadType == 111 && h.sequenceNumber == 7 && h.timestamp == 48_000 && h.ssrc == 0xCAFE_F00D)
        #expect(Array(packet[h.payloadOffset..<(h.payloadOffset + h.payloadLength)]) == payload)
        #expect(packet.withUnsafeBytes { h.extensionValue(id: 3, in: $0).map(Array.init) } == [0xAB, 0xCD])
    }

    @Test func rtxPacketCarriesTheOriginalSequenceFirst() throws {
        let payload: [UInt8] = [1, 2, 3]
        var buffer = [UInt8](repeating: 0, count: 100)
        let n = buffer.withUnsafeMutableBytes { b in
            payload.withUnsafeBytes {
                RTPWriter.writePacket(b, marker: false, payloadType: 97, sequenceNumber: 1, timestamp: 0, ssrc: 2, transportCC: nil,
                                      originalSequence: 0x1234, payload: $0, vp8: nil)
            }
        }
        let h = try RTPHeader(parsing: Array(buffer[..<n]))
        #expect(h.payloadOffset == RTPWriter.fixedHeaderSize && !h.marker)
        #expect(Array(buffer[h.payloadOffset..<n]) == [0x12, 0x34, 1, 2, 3])
    }

    @Test func aPacketThatDoesNotFitIsNotWritten() {
        let payload = [UInt8](repeating: 1, count: 100)
        var buffer = [UInt8](repeating: 0, count: 119)
        let n = buffer.withUnsafeMutableBytes { b in
            payload.withUnsafeBytes {
                RTPWriter.writePacket(b, marker: false, payloadType: 96, sequenceNumber: 0, timestamp: 0, ssrc: 1, transportCC: Self.cc,
                                      originalSequence: nil, payload: $0, vp8: nil)
            }
        }
        #expect(n == 0)
        #expect(buffer.allSatisfy { $0 == 0 })
    }

    @Test func paddingPacketIsAllPadding() throws {
        var buffer = [UInt8](repeating: 0xEE, count: 1500)
        let n = buffer.withUnsafeMutableBytes {
            RTPWriter.writePadding($0, payloadType: 97, sequenceNumber: 9, timestamp: 3000, ssrc: 5, transportCC: Self.cc)
        }
        #expect(n == RTPWriter.paddingPacketSize && n == 12 + 8 + 255)
        let h = try RTPHeader(parsing: Array(buffer[..<n]))
        #expect(h.padding && h.payloadLength == 0 && h.paddingLength == RTPWriter.maxPaddingSize && h.packetLength == n)
        #expect(buffer[..<n].withUnsafeBytes { h.extensionValue(id: 3, in: $0).map(Array.init) } == [0xAB, 0xCD])
        var small = [UInt8](repeating: 0, count: n - 1)
        #expect(small.withUnsafeMutableBytes { RTPWriter.writePadding($0, payloadType: 97, sequenceNumber: 9, timestamp: 0, ssrc: 5, transportCC: Self.cc) } == 0)
    }
}
