/// A reader for classic libpcap capture files (not pcapng) that yields the UDP datagrams inside,
/// for `sfu inspect pcap` and for tests that replay real captures. Pure parsing over bytes.
///
/// Supported: both byte orders, microsecond and nanosecond magic; link types Null/loopback (0),
/// Ethernet (1, with 802.1Q/802.1ad tags), raw IP (101, 228, 229), Linux cooked SLL (113) and
/// SLL2 (276); IPv4 and IPv6 (skipping the common extension headers).
package struct PcapFile: Sendable {
    package enum LinkType: UInt32, Sendable {
        case null = 0
        case ethernet = 1
        case raw = 101
        case linuxSLL = 113
        case ipv4 = 228
        case ipv6 = 229
        case linuxSLL2 = 276
    }

    package enum Error: Swift.Error, Equatable, Sendable, CustomStringConvertible {
        case notPcap
        case truncatedHeader
        case unsupportedLinkType(UInt32)
        case unsupportedVersion(UInt16, UInt16)

        package var description: String {
            switch self {
            case .notPcap: "not a classic pcap file (bad magic number; pcapng is not supported, convert with `tshark -F pcap`)"
            case .truncatedHeader: "file shorter than the pcap global header"
            case .unsupportedLinkType(let t): "unsupported link type \(t) (supported: 0, 1, 101, 113, 228, 229, 276)"
            case .unsupportedVersion(let major, let minor): "unsupported pcap version \(major).\(minor)"
            }
        }
    }

    /// One captured frame. `index` is 1-based, as Wireshark numbers frames.
    package struct Frame: Sendable {
        package var index: Int
        package var seconds: UInt32
        /// Fraction of the second in nanoseconds (converted from microseconds when needed).
        package var nanoseconds: UInt32
        /// The captured bytes (possibly fewer than were on the wire).
        package var data: ArraySlice<UInt8>
        package var originalLength: Int
    }

    /// A UDP datagram taken out of a frame.
    package struct Datagram: Sendable {
        package var frame: Int
        package var sourcePort: UInt16
        package var destinationPort: UInt16
        package var payload: ArraySlice<UInt8>
    }

    package let bytes: [UInt8]
    package let linkType: LinkType
    package let nanosecondResolution: Bool
    package let bigEndian: Bool
    package let snapLength: UInt32

    package init(bytes: [UInt8]) throws(Error) {
        guard bytes.count >= 24 else { throw bytes.count >= 4 ? .truncatedHeader : .notPcap }
        let magicLE = UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24
        switch magicLE {
        case 0xA1B2_C3D4: (bigEndian, nanosecondResolution) = (false, false)
        case 0xA1B2_3C4D: (bigEndian, nanosecondResolution) = (false, true)
        case 0xD4C3_B2A1: (bigEndian, nanosecondResolution) = (true, false)
        case 0x4D3C_B2A1: (bigEndian, nanosecondResolution) = (true, true)
        default: throw .notPcap
        }
        self.bytes = bytes
        let major = Self.read16(bytes, 4, bigEndian)
        let minor = Self.read16(bytes, 6, bigEndian)
        guard major == 2 else { throw .unsupportedVersion(major, minor) }
        snapLength = Self.read32(bytes, 16, bigEndian)
        // The upper bits of the link type field may carry FCS information (pcap-linktype(7)).
        let rawLink = Self.read32(bytes, 20, bigEndian) & 0x0FFF_FFFF
        guard let link = LinkType(rawValue: rawLink) else { throw .unsupportedLinkType(rawLink) }
        linkType = link
    }

    /// Every frame, in file order. A final record cut short (a capture killed mid-write) ends
    /// the sequence.
    package var frames: Frames { Frames(file: self) }

    package struct Frames: Sequence, IteratorProtocol {
        let file: PcapFile
        var offset = 24
        var index = 0

        /// Frames read so far.
        package var count: Int { index }
        /// True once the sequence ended on a record cut short (the file ends inside it).
        package private(set) var truncated = false

        package mutating func next() -> Frame? {
            let b = file.bytes
            guard offset + 16 <= b.count else {
                if offset < b.count { truncated = true }
                return nil
            }
            let seconds = PcapFile.read32(b, offset, file.bigEndian)
            let fraction = PcapFile.read32(b, offset + 4, file.bigEndian)
            let captured = Int(PcapFile.read32(b, offset + 8, file.bigEndian))
            let original = Int(PcapFile.read32(b, offset + 12, file.bigEndian))
            let start = offset + 16
            guard captured <= b.count - start else {
                truncated = true
                return nil
            }
            offset = start + captured
            index += 1
            return Frame(index: index, seconds: seconds,
                         nanoseconds: file.nanosecondResolution ? fraction : fraction &* 1000,
                         data: b[start..<(start + captured)], originalLength: original)
        }
    }

    /// The UDP datagram carried by `frame`, or nil when it is not UDP over IPv4/IPv6, is an IPv4
    /// fragment, or is truncated.
    package func udpDatagram(in frame: Frame) -> Datagram? {
        let d = frame.data
        var i = d.startIndex
        let end = d.endIndex
        var etherType: UInt16
        switch linkType {
        case .null:
            guard end - i >= 4 else { return nil }
            // The address family is in the capturing host's byte order; accept both.
            let le = UInt32(d[i]) | UInt32(d[i + 1]) << 8 | UInt32(d[i + 2]) << 16 | UInt32(d[i + 3]) << 24
            let family = le > 0xFFFF ? le.byteSwapped : le
            i += 4
            switch family {
            case 2: etherType = 0x0800
            case 10, 24, 28, 30: etherType = 0x86DD
            default: return nil
            }
        case .ethernet:
            guard end - i >= 14 else { return nil }
            etherType = Self.be16(d, i + 12)
            i += 14
            while etherType == 0x8100 || etherType == 0x88A8 {
                guard end - i >= 4 else { return nil }
                etherType = Self.be16(d, i + 2)
                i += 4
            }
        case .raw:
            guard i < end else { return nil }
            switch d[i] >> 4 {
            case 4: etherType = 0x0800
            case 6: etherType = 0x86DD
            default: return nil
            }
        case .ipv4: etherType = 0x0800
        case .ipv6: etherType = 0x86DD
        case .linuxSLL:
            guard end - i >= 16 else { return nil }
            etherType = Self.be16(d, i + 14)
            i += 16
        case .linuxSLL2:
            guard end - i >= 20 else { return nil }
            etherType = Self.be16(d, i)
            i += 20
        }

        let udpStart: Int
        let ipEnd: Int
        switch etherType {
        case 0x0800:
            guard end - i >= 20, d[i] >> 4 == 4 else { return nil }
            let ihl = Int(d[i] & 0x0F) * 4
            let total = Int(Self.be16(d, i + 2))
            let flagsFragment = Self.be16(d, i + 6)
            // More-fragments set or a non-zero offset: not a whole datagram.
            guard ihl >= 20, flagsFragment & 0x3FFF == 0, d[i + 9] == 17 else { return nil }
            guard total >= ihl, end - i >= ihl else { return nil }
            udpStart = i + ihl
            ipEnd = min(end, i + total)
        case 0x86DD:
            guard end - i >= 40, d[i] >> 4 == 6 else { return nil }
            let payloadLength = Int(Self.be16(d, i + 4))
            var next = d[i + 6]
            var j = i + 40
            ipEnd = min(end, j + payloadLength)
            // Hop-by-hop, routing, destination options: skip. Fragment header: not whole.
            while next == 0 || next == 43 || next == 60 {
                guard ipEnd - j >= 8 else { return nil }
                next = d[j]
                j += (Int(d[j + 1]) + 1) * 8
            }
            guard next == 17, j <= ipEnd else { return nil }
            udpStart = j
        default:
            return nil
        }
        guard ipEnd - udpStart >= 8 else { return nil }
        let udpLength = Int(Self.be16(d, udpStart + 4))
        guard udpLength >= 8, udpStart + udpLength <= ipEnd else { return nil }
        return Datagram(frame: frame.index, sourcePort: Self.be16(d, udpStart),
                        destinationPort: Self.be16(d, udpStart + 2),
                        payload: d[(udpStart + 8)..<(udpStart + udpLength)])
    }

    static func be16(_ d: ArraySlice<UInt8>, _ i: Int) -> UInt16 { UInt16(d[i]) << 8 | UInt16(d[i + 1]) }

    static func read16(_ b: [UInt8], _ i: Int, _ bigEndian: Bool) -> UInt16 {
        bigEndian ? UInt16(b[i]) << 8 | UInt16(b[i + 1]) : UInt16(b[i + 1]) << 8 | UInt16(b[i])
    }

    static func read32(_ b: [UInt8], _ i: Int, _ bigEndian: Bool) -> UInt32 {
        let v = UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
        return bigEndian ? v : v.byteSwapped
    }
}
