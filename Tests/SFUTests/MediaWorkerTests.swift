#if canImport(Glibc)
import Glibc
#endif
import DTLS
import Logging
import NIOConcurrencyHelpers
import NIOCore
import RTP
import Testing
@testable import SFU

/// The media worker's own event loop (an epoll thread that is a NIO `EventLoop`) and its socket
/// path, on real threads and loopback sockets.
@Suite("Media worker: event loop and socket", .serialized)
struct MediaWorkerTests {
    // MARK: the event loop

    @Test func tasksFromOtherThreadsRunOnTheLoopInOrder() async throws {
        let loop = try MediaEventLoop(name: "test-loop")
        let seen = NIOLockedValueBox<[Int]>([])
        for i in 0..<100 { loop.execute { precondition(loop.inEventLoop); seen.withLockedValue { $0.append(i) } } }
        let onLoop = try await loop.submit { loop.inEventLoop }.get()
        #expect(onLoop)
        #expect(!loop.inEventLoop)
        #expect(seen.withLockedValue { $0 } == Array(0..<100))
        try await loop.shutdownGracefully()
    }

    /// The loop's thread asks for a short scheduler slice, so that it preempts a thread with a long
    /// one (a composite recording's encode) when a datagram wakes it; the caller's thread keeps its own.
    @Test func theLoopThreadRunsWithAShortSchedulerSlice() async throws {
        let loop = try MediaEventLoop(name: "test-slice")
        let slice = try await loop.submit { MediaEventLoop.currentThreadSliceNanos() }.get()
        #expect(loop.sliceApplied == true)
        #expect(slice == MediaEventLoop.sliceNanos)
        #expect(MediaEventLoop.currentThreadSliceNanos() != MediaEventLoop.sliceNanos)
        try await loop.shutdownGracefully()
    }

    @Test func scheduledTasksRunByDeadlineAndCancelledOnesNever() async throws {
        let loop = try MediaEventLoop(name: "test-timers")
        let fired = NIOLockedValueBox<[String]>([])
        let start = NIODeadline.now()
        // Scheduled out of order; one cancelled.
        let late = loop.scheduleTask(in: .milliseconds(60)) { fired.withLockedValue { $0.append("60") } }
        _ = loop.scheduleTask(in: .milliseconds(20)) { fired.withLockedValue { $0.append("20") } }
        let cancelled = loop.scheduleTask(in: .milliseconds(40)) { fired.withLockedValue { $0.append("40") } }
        _ = loop.scheduleTask(in: .milliseconds(30)) { fired.withLockedValue { $0.append("30") } }
        cancelled.cancel()
        try await late.futureResult.get()
        #expect(NIODeadline.now() - start >= .milliseconds(60))
        #expect(fired.withLockedValue { $0 } == ["20", "30", "60"])
        await #expect(throws: EventLoopError.self) { try await cancelled.futureResult.get() }
        // A value from a scheduled task, and a repeated task (what the worker's tick uses).
        #expect(try await loop.scheduleTask(in: .milliseconds(5)) { 42 }.futureResult.get() == 42)
        let ticks = NIOLockedValueBox(0)
        let repeated = loop.scheduleRepeatedTask(initialDelay: .milliseconds(5), delay: .milliseconds(5)) { _ in
            ticks.withLockedValue { $0 += 1 }
        }
        try await Task.sleep(for: .milliseconds(100))
        repeated.cancel()
        #expect(ticks.withLockedValue { $0 } >= 5)
        try await loop.shutdownGracefully()
    }

    @Test func loopBoundValuesAndShutdown() async throws {
        let loop = try MediaEventLoop(name: "test-bound")
        final class Counter { var n = 0 }
        let bound = try await loop.submit { NIOLoopBound(Counter(), eventLoop: loop) }.get()
        for _ in 0..<10 { loop.execute { bound.value.n += 1 } }
        #expect(try await loop.submit { bound.value.n }.get() == 10)
        try await loop.shutdownGracefully()
        // After shutdown: timers fail, tasks still run (off the loop) so futures complete, and a
        // second shutdown answers.
        await #expect(throws: EventLoopError.self) { try await loop.scheduleTask(in: .milliseconds(1)) {}.futureResult.get() }
        #expect(try await loop.submit { loop.inEventLoop ? 7 : 0 }.get() == 7)
        try await loop.shutdownGracefully()
    }

    // MARK: the worker's socket

    /// Sends `datagrams` from socket `fd` to `address`; the number the kernel took.
    static func send(_ datagrams: [[UInt8]], from fd: Int32, to address: TransportAddress) -> Int {
        let batch = DatagramSendBatch(capacity: datagrams.count, slotSize: 4096)
        for d in datagrams { d.withUnsafeBytes { _ = batch.append($0, to: address) } }
        batch.flush(fd: fd)
        return batch.sent
    }

    /// Records, for each STUN response the transport sends, when the request reached the host
    /// (`transport.arrivalNanos`) and when the worker handled it.
    final class ArrivalSession: WorkerSession, WebRTCTransportDelegate, @unchecked Sendable {
        let transport: WebRTCTransport
        let worker: MediaWorker
        var handled: [(arrival: Int64, now: Int64)] = []
        init(transport: WebRTCTransport, worker: MediaWorker) {
            self.transport = transport
            self.worker = worker
            transport.delegate = self
        }
        func workerDidRemove() {}
        func transport(_ transport: WebRTCTransport, send datagram: UnsafeRawBufferPointer, to address: TransportAddress) {
            handled.append((transport.arrivalNanos, MediaWorker.nowNanos))
            worker.send(datagram, to: address)
        }
        func transportDidConnect(_ transport: WebRTCTransport) {}
        func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64) {}
        func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64) {}
        func transportDidClose(_ transport: WebRTCTransport, reason: String) {}
    }

    /// A datagram that waited in the socket while the worker's thread was busy is reported as
    /// arrived when the kernel received it, not when the worker got to it: transport-cc feedback
    /// built from it does not turn the worker's delay into fake network queueing.
    @Test func arrivalTimeIsTheKernelReceiveTimeNotWhenTheWorkerGotToIt() async throws {
        let worker = try await MediaWorker.start(index: 0, host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        #expect(worker.kernelTimestamps)
        let serverICE = ICELiteAgent.Credentials.random()
        let clientICE = ICELiteAgent.Credentials.random()
        let cert = try DTLSCertificate(commonName: "peer")
        let transport = try WebRTCTransport(
            id: "t", iceCredentials: serverICE, remoteICE: clientICE, dtlsContext: DTLSContext(certificate: try DTLSCertificate(commonName: "server")),
            dtlsRole: .server, remoteFingerprint: try #require(CertificateFingerprint(sdpValue: "sha-256 " + cert.sha256Fingerprint)),
            nowNanos: MediaWorker.nowNanos)
        let session = ArrivalSession(transport: transport, worker: worker)
        try await worker.submit { worker.add(session) }

        let client = try MediaWorker.bindSocket(try #require(TransportAddress(host: "127.0.0.1", port: 0)))
        defer { close(client) }
        let request = bindingRequest(username: "\(serverICE.ufrag):\(clientICE.ufrag)", password: serverICE.password)
        // Once with the worker idle, once while its thread is busy for 300 ms.
        var sentAt: [Int64] = []
        final class BusyEnd: @unchecked Sendable { var nanos: Int64 = 0 }  // written and read on the worker's thread
        let busyEnd = BusyEnd()
        for busy in [false, true] {
            if busy {
                worker.execute {
                    usleep(300_000)
                    busyEnd.nanos = MediaWorker.nowNanos
                }
            }
            try await Task.sleep(for: .milliseconds(50))
            sentAt.append(MediaWorker.nowNanos)
            #expect(Self.send([request], from: client, to: worker.localAddress) == 1)
            try await Task.sleep(for: .milliseconds(busy ? 400 : 100))
        }
        let (handled, received, busyEndNanos) = try await worker.submit { (session.handled.map { [$0.arrival, $0.now] }, worker.received, busyEnd.nanos) }
        try #require(handled.count == 2, "the worker answered \(handled.count) of 2 binding requests")
        for (i, h) in handled.enumerated() {
            let arrival = h[0], now = h[1]
            #expect(arrival >= sentAt[i] && arrival - sentAt[i] < 20_000_000, "arrival \((arrival - sentAt[i]) / 1000) µs after sending")
            #expect(arrival <= now)
        }
        // The busy round: handled once the 300 ms wait was over (it began before the send: how long
        // before depends on the test's own scheduling, so the end is measured), arrival still at sending.
        #expect(busyEndNanos > sentAt[1])
        #expect(handled[1][1] >= busyEndNanos)
        #expect(received == 2)
        await worker.stop()
    }

    /// A session woken at the times it asked for (a probe's pacing between ticks).
    final class WakeSession: WorkerSession, @unchecked Sendable {
        let transport: WebRTCTransport
        let worker: MediaWorker
        let peer: TransportAddress
        var woken: [Int64] = []
        /// The worker's written datagrams at each wake-up.
        var written: [Int] = []
        /// The write batch the datagram of each wake-up went into.
        var batches: [UInt64] = []
        init(worker: MediaWorker, peer: TransportAddress) throws {
            transport = try WebRTCTransport(
                id: "w", iceCredentials: .random(), remoteICE: .random(), dtlsContext: DTLSContext(certificate: try DTLSCertificate(commonName: "server")),
                dtlsRole: .server, remoteFingerprint: CertificateFingerprint(algorithm: .sha256, digest: []), nowNanos: MediaWorker.nowNanos)
            self.worker = worker
            self.peer = peer
        }
        func workerDidRemove() {}
        func wake(nowNanos: Int64) {
            woken.append(nowNanos)
            written.append(worker.datagramsSent)
            [UInt8](repeating: UInt8(woken.count), count: 40).withUnsafeBytes { worker.send($0, to: peer) }
            batches.append(worker.writeBatch)
        }
    }

    /// Wake-ups run on the loop at (not before) the time asked for, and what the session queued in
    /// one is written then, not at the next tick; a session removed meanwhile is not woken.
    @Test func sessionsAreWokenAtTheTimeTheyAskedForAndTheirDatagramsWritten() async throws {
        let worker = try await MediaWorker.start(index: 2, host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let client = try MediaWorker.bindSocket(try #require(TransportAddress(host: "127.0.0.1", port: 0)))
        defer { close(client) }
        let peer = try #require(TransportAddress(localOf: client))
        let kept = try WakeSession(worker: worker, peer: peer)
        let removed = try WakeSession(worker: worker, peer: peer)
        let asked = try await worker.submit { () -> [Int64] in
            worker.add(kept)
            worker.add(removed)
            let now = MediaWorker.nowNanos
            worker.wake(kept, atNanos: now + 3_000_000)
            worker.wake(kept, atNanos: now + 7_000_000)
            worker.wake(removed, atNanos: now + 3_000_000)
            worker.remove(removed)
            return [now + 3_000_000, now + 7_000_000]
        }
        var arrivals: [(byte: UInt8, at: Int64)] = []
        var buffer = [UInt8](repeating: 0, count: 100)
        let deadline = MediaWorker.nowNanos + 500_000_000
        while arrivals.count < 2, MediaWorker.nowNanos < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, 100, 0) }
            if n > 0 { arrivals.append((buffer[0], MediaWorker.nowNanos)) } else { usleep(200) }
        }
        let (woken, written, writtenAt) = try await worker.submit {
            ((kept.woken, removed.woken), kept.written, kept.batches.map { worker.writtenNanos(batch: $0) })
        }
        #expect(woken.1.isEmpty)
        try #require(woken.0.count == 2)
        for (at, want) in zip(woken.0, asked) {
            #expect(at >= want && at - want < 15_000_000, "woken \((at - want) / 1000) µs after the time asked for")
        }
        #expect(arrivals.map(\.byte) == [1, 2])
        // The first wake-up's datagram was written when it returned, not at the next 20 ms tick.
        #expect(written == [0, 1])
        // And the worker knows when each went out (two batches), not before it was queued.
        #expect(writtenAt.count == 2 && writtenAt.allSatisfy { $0 != nil })
        for (at, queued) in zip(writtenAt, woken.0) { #expect((at ?? 0) >= queued) }
        #expect(try await worker.submit { worker.writtenNanos(batch: worker.writeBatch) } == nil, "the batch being filled is not written")
        await worker.stop()
    }

    /// Datagrams that belong to no session, or are too long, are read in batches, counted and dropped.
    @Test func unmatchedDatagramsAreCounted() async throws {
        let worker = try await MediaWorker.start(index: 1, host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        let client = try MediaWorker.bindSocket(try #require(TransportAddress(host: "127.0.0.1", port: 0)))
        defer { close(client) }
        let junk = [UInt8](repeating: 0x80, count: 100)
        // And one longer than a receive slot (2048 bytes): cut by the kernel, so dropped and counted.
        let oversize = [UInt8](repeating: 0x80, count: 3000)
        #expect(Self.send(Array(repeating: junk, count: 50) + [oversize], from: client, to: worker.localAddress) == 51)
        try await Task.sleep(for: .milliseconds(100))
        let counts = try await worker.submit { worker.snapshot() }
        #expect(counts.datagramsReceived == 51)
        #expect(counts.datagramsUnmatched == 50)
        #expect(counts.datagramsReceiveDropped == 1)
        await worker.stop()
    }
}
