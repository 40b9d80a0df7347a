/// An IP address and port, independent of any socket library, for the sans-IO cores. A UDP
/// address, or with ``isTCP`` the remote end of an ICE-TCP connection (RFC 6544): the media worker
/// writes what is sent there onto that connection, framed (RFC 4571). The two are distinct keys.
package struct TransportAddress: Hashable, Sendable, CustomStringConvertible {
    package enum IP: Hashable, Sendable {
        /// Host-order IPv4 address.
        case v4(UInt32)
        /// 16 bytes in network order, as two big-endian halves.
        case v6(UInt64, UInt64)
    }

    package var ip: IP
    package var port: UInt16
    /// The remote end of a TCP connection rather than a UDP address.
    package var isTCP: Bool

    package init(ip: IP, port: UInt16, tcp: Bool = false) {
        self.ip = ip
        self.port = port
        isTCP = tcp
    }

    package init(ipv4 a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8, port: UInt16) {
        ip = .v4(UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d))
        self.port = port
        isTCP = false
    }

    /// Parses a dotted IPv4 or a (possibly compressed) IPv6 literal.
    package init?(host: String, port: UInt16) {
        if let v4 = Self.parseIPv4(host) {
            ip = .v4(v4)
        } else if let v6 = Self.parseIPv6(host) {
            ip = .v6(v6.0, v6.1)
        } else {
            return nil
        }
        self.port = port
        isTCP = false
    }

    package var isIPv4: Bool { if case .v4 = ip { true } else { false } }

    /// The address bytes in network order (4 or 16).
    package var addressBytes: [UInt8] {
        switch ip {
        case .v4(let a): return [UInt8(a >> 24), UInt8(a >> 16 & 0xff), UInt8(a >> 8 & 0xff), UInt8(a & 0xff)]
        case .v6(let hi, let lo):
            return (0..<8).map { UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64($0))) }
                + (0..<8).map { UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64($0))) }
        }
    }

    package var host: String {
        switch ip {
        case .v4(let a): return "\(a >> 24).\(a >> 16 & 0xff).\(a >> 8 & 0xff).\(a & 0xff)"
        case .v6:
            let b = addressBytes
            return stride(from: 0, to: 16, by: 2).map { String(UInt16(b[$0]) << 8 | UInt16(b[$0 + 1]), radix: 16) }.joined(separator: ":")
        }
    }

    package var description: String { (isIPv4 ? "\(host):\(port)" : "[\(host)]:\(port)") + (isTCP ? "/tcp" : "") }

    /// The same address and port, as a TCP (`true`) or UDP endpoint.
    package func over(tcp: Bool) -> TransportAddress { TransportAddress(ip: ip, port: port, tcp: tcp) }

    static func parseIPv4(_ s: String) -> UInt32? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var v: UInt32 = 0
        for p in parts {
            guard !p.isEmpty, p.count <= 3, let n = UInt32(p), n <= 255 else { return nil }
            v = v << 8 | n
        }
        return v
    }

    static func parseIPv6(_ s: String) -> (UInt64, UInt64)? {
        var text = Substring(s)
        if text.hasPrefix("["), text.hasSuffix("]") { text = text.dropFirst().dropLast() }
        if let percent = text.firstIndex(of: "%") { text = text[..<percent] }
        // Split at "::" (at most once).
        var halves: [String] = []
        let chars = Array(text)
        var i = 0
        var current = ""
        while i < chars.count {
            if chars[i] == ":", i + 1 < chars.count, chars[i + 1] == ":" {
                halves.append(current)
                current = ""
                i += 2
            } else {
                current.append(chars[i])
                i += 1
            }
        }
        halves.append(current)
        guard halves.count <= 2 else { return nil }
        func groups(_ part: String) -> [UInt16]? {
            if part.isEmpty { return [] }
            var out: [UInt16] = []
            for g in part.split(separator: ":", omittingEmptySubsequences: false) {
                guard !g.isEmpty, g.count <= 4, let n = UInt16(g, radix: 16) else { return nil }
                out.append(n)
            }
            return out
        }
        guard let head = groups(halves[0]) else { return nil }
        var all: [UInt16]
        if halves.count == 2 {
            guard let tail = groups(halves[1]), head.count + tail.count < 8 else { return nil }
            all = head + [UInt16](repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard head.count == 8 else { return nil }
            all = head
        }
        var hi: UInt64 = 0, lo: UInt64 = 0
        for i in 0..<4 { hi = hi << 16 | UInt64(all[i]) }
        for i in 4..<8 { lo = lo << 16 | UInt64(all[i]) }
        return (hi, lo)
    }
}
