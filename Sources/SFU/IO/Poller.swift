#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSFUShim

/// A level-triggered epoll set: descriptors with an integer token each. Not thread-safe.
package final class Poller {
    package let fd: Int32
    private var events: [epoll_event]

    package init(maxEvents: Int = 256) throws {
        fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard fd >= 0 else { throw MediaWorkerError.socket("epoll_create1", errno) }
        events = [epoll_event](repeating: epoll_event(), count: maxEvents)
    }

    deinit { close(fd) }

    package func add(_ descriptor: Int32, token: Int, writable: Bool = false) throws {
        var e = Self.event(token: token, writable: writable)
        guard epoll_ctl(fd, EPOLL_CTL_ADD, descriptor, &e) == 0 else { throw MediaWorkerError.socket("epoll_ctl add", errno) }
    }

    /// Changes whether `descriptor` is also watched for writability.
    package func modify(_ descriptor: Int32, token: Int, writable: Bool) {
        var e = Self.event(token: token, writable: writable)
        _ = epoll_ctl(fd, EPOLL_CTL_MOD, descriptor, &e)
    }

    package func remove(_ descriptor: Int32) {
        var e = epoll_event()
        _ = epoll_ctl(fd, EPOLL_CTL_DEL, descriptor, &e)
    }

    private static func event(token: Int, writable: Bool) -> epoll_event {
        var e = epoll_event()
        e.events = EPOLLIN.rawValue | (writable ? EPOLLOUT.rawValue : 0)
        e.data.u64 = UInt64(UInt(bitPattern: token))
        return e
    }

    /// Waits up to `timeoutMillis` (-1: forever) and calls `body(token, readable, writable)` for each
    /// ready descriptor. An error or a hang-up counts as readable (the read reports it).
    package func wait(timeoutMillis: Int32, _ body: (Int, Bool, Bool) -> Void) {
        let n = events.withUnsafeMutableBufferPointer { epoll_wait(fd, $0.baseAddress, Int32($0.count), timeoutMillis) }
        guard n > 0 else { return }
        for i in 0..<Int(n) {
            let e = events[i]
            let readable = e.events & (EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
            body(Int(bitPattern: UInt(e.data.u64)), readable, e.events & EPOLLOUT.rawValue != 0)
        }
    }
}
