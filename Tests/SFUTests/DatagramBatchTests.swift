#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import SFU

/// The batched datagram I/O of the media worker and the load tools, on real loopback sockets.
@Suite struct DatagramBatchTests {
    /// A non-blocking UDP socket bound to 127.0.0.1 on any port, and its address.
    static func socketPair() throws -> (fd: Int32, address: TransportAddress) {
        let address = try #require(TransportAddress(host: "127.0.0.1", port: 0))
        let fd = try MediaWorker.bindSocket(address)
        return (fd, try #require(TransportAddress(localOf: fd)))
    }

    @Test func sockaddrRoundTrip() throws {
        for address in [TransportAddress(ipv4: 192, 168, 1, 20, port: 40000), try #require(TransportAddress(host: "2001:db8::1", port: 5004))] {
            var storage = sockaddr_in6()
            let length = withUnsafeMutableBytes(of: &storage) { address.write(to: $0.baseAddress!) }
            #expect(Int(length) == (address.isIPv4 ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size))
            let back = withUnsafeBytes(of: &storage) { TransportAddress(sockaddr: $0.baseAddress!) }
            #expect(back == address)
        }
    }

    @Test func sendAndReceiveInBatches() throws {
        let a = try Self.socketPair()
        let b = try Self.socketPair()
        defer { close(a.fd); close(b.fd) }
        #expect(DatagramReceiveBatch.enableReceiveTimestamps(fd: b.fd))
        let send = DatagramSendBatch(capacity: 8, slotSize: 1500)
        // 20 datagrams of different sizes and contents: the batch fills up and is flushed in between.
        var expected: [[UInt8]] = []
        for i in 0..<20 {
            let datagram = [UInt8](repeating: UInt8(i), count: 100 + i * 50)
            expected.append(datagram)
            let queued = datagram.withUnsafeBytes { send.append($0, to: b.address) }
            if !queued {
                #expect(send.isFull)
                #expect(send.flush(fd: a.fd))
                #expect(send.isEmpty)
                #expect(datagram.withUnsafeBytes { send.append($0, to: b.address) })
            }
        }
        #expect(send.flush(fd: a.fd))
        #expect(send.sent == 20)
        #expect(send.failed == 0)

        let before = realtimeNanos()
        let receive = DatagramReceiveBatch(capacity: 16, slotSize: 2048, timestamps: true)
        var got: [[UInt8]] = []
        for _ in 0..<10 where got.count < 20 {
            let n = receive.receive(fd: b.fd)
            #expect(n >= 0)
            for i in 0..<n {
                got.append(Array(receive.datagram(i)))
                #expect(receive.source(i) == a.address)
                #expect(!receive.isTruncated(i))
                let stamp = receive.timestampNanos(i)
                #expect(stamp > before - 60_000_000_000 && stamp < before + 60_000_000_000)
            }
        }
        #expect(got == expected)
        #expect(receive.receive(fd: b.fd) == 0)  // nothing left, no blocking
    }

    @Test func buildInPlaceAndOversize() throws {
        let a = try Self.socketPair()
        let b = try Self.socketPair()
        defer { close(a.fd); close(b.fd) }
        let send = DatagramSendBatch(capacity: 4, slotSize: 64)
        let big = [UInt8](repeating: 1, count: 65)
        #expect(!big.withUnsafeBytes { send.append($0, to: b.address) })
        #expect(send.isEmpty)
        #expect(!send.append(to: b.address) { _ in 0 })  // nothing written: nothing queued
        #expect(send.append(to: b.address) { slot in
            for i in 0..<10 { slot[i] = UInt8(i) }
            return 10
        })
        #expect(send.count == 1)
        #expect(send.flush(fd: a.fd))
        // A receive slot smaller than the datagram: flagged as truncated.
        let small = DatagramReceiveBatch(capacity: 2, slotSize: 4)
        #expect(small.receive(fd: b.fd) == 1)
        #expect(small.isTruncated(0))
        #expect(small.datagram(0).count == 4)
    }

    @Test func drainPendingHandsBackWhatWasQueued() {
        let send = DatagramSendBatch(capacity: 4, slotSize: 100)
        let to = TransportAddress(ipv4: 127, 0, 0, 1, port: 9)
        for i in 0..<3 { _ = [UInt8](repeating: UInt8(i), count: i + 1).withUnsafeBytes { send.append($0, to: to) } }
        var seen: [([UInt8], TransportAddress?)] = []
        send.drainPending { bytes, address in seen.append((Array(bytes), address)) }
        #expect(seen.map(\.0) == [[0], [1, 1], [2, 2, 2]])
        #expect(seen.allSatisfy { $0.1 == to })
        #expect(send.isEmpty)
    }
}

private func realtimeNanos() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}
