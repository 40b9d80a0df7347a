#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CSFUShim
import SFU

/// Clocks: monotonic for timers and the transports, real time for the latency stamps (the
/// kernel's SO_TIMESTAMPNS receive times are CLOCK_REALTIME; one host, so one clock on both ends).
typealias Clock = SystemClock

struct SystemError: Error, CustomStringConvertible {
    var what: String
    var code: Int32
    init(_ what: String, _ code: Int32 = errno) {
        self.what = what
        self.code = code
    }
    var description: String { code == 0 ? what : "\(what): \(String(cString: strerror(code)))" }
}

/// A process's CPU time (all threads, nanosecond precision through its CPU-time clock) and memory.
struct ProcessUsage {
    let pid: Int32
    private let clock: clockid_t?

    init(pid: Int32) {
        self.pid = pid
        var id = clockid_t()
        clock = clock_getcpuclockid(pid, &id) == 0 ? id : nil
    }

    /// CPU seconds (user + system) so far, or nil when the process is gone.
    var cpuSeconds: Double? {
        if let clock {
            var ts = timespec()
            if clock_gettime(clock, &ts) == 0 { return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9 }
        }
        // Fallback: /proc/<pid>/stat in clock ticks.
        guard let text = Self.read("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let u = Double(fields[11]), let s = Double(fields[12]) else { return nil }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Peak resident set size in bytes (VmHWM), or nil.
    var peakRSSBytes: Int? { Self.statusField("VmHWM", pid: pid).map { $0 * 1024 } }
    var rssBytes: Int? { Self.statusField("VmRSS", pid: pid).map { $0 * 1024 } }

    static func statusField(_ name: String, pid: Int32) -> Int? {
        guard let text = read("/proc/\(pid)/status") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            return line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
        }
        return nil
    }

    static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += chunk[0..<n]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

enum Sockets {
    /// A non-blocking UDP socket on 127.0.0.1 (any port) connected to `peer`, with large buffers.
    static func connectedUDP(to peer: TransportAddress) throws -> Int32 {
        let fd = socket(peer.isIPv4 ? AF_INET : AF_INET6, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        setBuffers(fd, bytes: 1 << 20)
        guard connect(fd, to: peer) == 0 else {
            let e = errno
            close(fd)
            throw SystemError("connect \(peer)", e)
        }
        return fd
    }

    /// A TCP socket connected to `address` (blocking connect; non-blocking afterwards when asked).
    static func connectedTCP(to address: TransportAddress, nonBlocking: Bool) throws -> Int32 {
        let fd = socket(address.isIPv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        var on: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
        guard connect(fd, to: address) == 0 else {
            let e = errno
            close(fd)
            throw SystemError("connect \(address)", e)
        }
        if nonBlocking { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        return fd
    }

    /// A listening TCP socket on `address` (port 0: any).
    static func listeningTCP(_ address: TransportAddress) throws -> Int32 {
        let fd = socket(address.isIPv4 ? AF_INET : AF_INET6, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        var on: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, to: address) == 0, listen(fd, 64) == 0 else {
            let e = errno
            close(fd)
            throw SystemError("listen \(address)", e)
        }
        return fd
    }

    static func setBuffers(_ fd: Int32, bytes: Int32) {
        var size = bytes
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }

    private static func connect(_ fd: Int32, to address: TransportAddress) -> Int32 {
        var storage = sockaddr_in6()
        return withUnsafeMutableBytes(of: &storage) { raw -> Int32 in
            guard let base = raw.baseAddress else { return -1 }
            let length = address.write(to: base)
            return Glibc.connect(fd, base.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    private static func bind(_ fd: Int32, to address: TransportAddress) -> Int32 {
        var storage = sockaddr_in6()
        return withUnsafeMutableBytes(of: &storage) { raw -> Int32 in
            guard let base = raw.baseAddress else { return -1 }
            let length = address.write(to: base)
            return Glibc.bind(fd, base.assumingMemoryBound(to: sockaddr.self), length)
        }
    }

    /// Writes all of `bytes` to a blocking socket.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError("write")
            }
            offset += n
        }
    }
}

/// Resolves "host:port" (IP literals and "localhost").
func parseHostPort(_ text: String) -> TransportAddress? {
    guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
    var host = String(text[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    if host == "localhost" { host = "127.0.0.1" }
    return TransportAddress(host: host, port: port)
}
