import DTLS
import RTP

/// STUN messages (RFC 5389/8489) as ICE uses them: binding requests, success and error responses,
/// with USERNAME, MESSAGE-INTEGRITY (HMAC-SHA1), FINGERPRINT (CRC-32), XOR-MAPPED-ADDRESS and the
/// ICE attributes (RFC 8445: PRIORITY, USE-CANDIDATE, ICE-CONTROLLING, ICE-CONTROLLED).
package struct STUNMessage: Sendable, Equatable {
    package enum MessageClass: UInt16, Sendable {
        case request = 0, indication = 1, successResponse = 2, errorResponse = 3
    }

    package struct Attribute: Sendable, Equatable {
        package var type: UInt16
        package var value: [UInt8]
        package init(type: UInt16, value: [UInt8]) {
            self.type = type
            self.value = value
        }
    }

    package static let magicCookie: UInt32 = 0x2112_A442
    package static let headerSize = 20
    package static let bindingMethod: UInt16 = 0x001
    /// Largest message accepted: a STUN message fits a datagram; nothing legitimate comes close.
    package static let maxSize = 1500

    package var messageClass: MessageClass
    package var method: UInt16
    /// 96-bit transaction id.
    package var transactionID: [UInt8]
    /// Attributes in order, MESSAGE-INTEGRITY and FINGERPRINT excluded (they are computed on output
    /// and checked on input).
    package var attributes: [Attribute]
    /// Where the MESSAGE-INTEGRITY attribute starts in the parsed datagram, if it had one.
    package private(set) var integrityOffset: Int?
    package private(set) var hadFingerprint = false

    package init(messageClass: MessageClass, method: UInt16 = bindingMethod, transactionID: [UInt8], attributes: [Attribute] = []) {
        self.messageClass = messageClass
        self.method = method & 0x0FFF
        self.transactionID = transactionID.count == 12 ? transactionID : Array((transactionID + [UInt8](repeating: 0, count: 12)).prefix(12))
        self.attributes = attributes
    }

    /// Whether a datagram looks like STUN: top two bits zero, magic cookie, length a multiple of 4 that matches.
    package static func isSTUN(_ raw: UnsafeRawBufferPointer) -> Bool {
        raw.count >= headerSize && raw[0] & 0xC0 == 0 && raw.u32(4) == magicCookie
            && Int(raw.u16(2)) + headerSize == raw.count && raw.u16(2) % 4 == 0
    }

    /// Parses a STUN message and checks its FINGERPRINT when present.
    /// - Throws: ``STUNError`` for anything malformed; never traps.
    package init(parsing raw: UnsafeRawBufferPointer) throws(STUNError) {
        guard raw.count >= Self.headerSize else { throw .truncated }
        guard raw.count <= Self.maxSize else { throw .tooLarge }
        guard raw[0] & 0xC0 == 0, raw.u32(4) == Self.magicCookie else { throw .notSTUN }
        let length = Int(raw.u16(2))
        guard length % 4 == 0, length + Self.headerSize == raw.count else { throw .badLength }
        let type = raw.u16(0)
        // Method bits M0-M11 are interleaved with the class bits C0 (bit 4) and C1 (bit 8).
        let c = (type >> 4 & 0x1) | (type >> 7 & 0x2)
        method = (type & 0x000F) | (type >> 1 & 0x0070) | (type >> 2 & 0x0F80)
        messageClass = MessageClass(rawValue: c) ?? .request
        transactionID = Array(raw[8..<20])
        attributes = []
        var offset = Self.headerSize
        while offset < raw.count {
            guard raw.count - offset >= 4 else { throw .badAttribute }
            let attrType = raw.u16(offset)
            let attrLength = Int(raw.u16(offset + 2))
            let valueStart = offset + 4
            guard attrLength <= raw.count - valueStart else { throw .badAttribute }
            let padded = (attrLength + 3) & ~3
            guard padded <= raw.count - valueStart else { throw .badAttribute }
            switch attrType {
            case STUNAttributeType.messageIntegrity:
                guard attrLength == HMAC.sha1Size else { throw .badAttribute }
                if integrityOffset == nil { integrityOffset = offset }
            case STUNAttributeType.fingerprint:
                guard attrLength == 4, valueStart + 4 == raw.count else { throw .badAttribute }
                let crc = CRC32.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<offset])) ^ 0x5354_554E
                guard crc == raw.u32(valueStart) else { throw .badFingerprint }
                hadFingerprint = true
            default:
                // RFC 5389 15.4: attributes after MESSAGE-INTEGRITY (other than FINGERPRINT) are ignored.
                if integrityOffset == nil {
                    attributes.append(Attribute(type: attrType, value: Array(raw[valueStart..<(valueStart + attrLength)])))
                }
            }
            offset = valueStart + padded
        }
    }

    package init(parsing bytes: [UInt8]) throws(STUNError) {
        let result: Result<STUNMessage, STUNError> = bytes.withUnsafeBytes { raw in
            Result { () throws(STUNError) -> STUNMessage in try STUNMessage(parsing: raw) }
        }
        self = try result.get()
    }

    /// Checks MESSAGE-INTEGRITY of the datagram this message was parsed from (RFC 5389 15.4: HMAC over
    /// the message up to the attribute, with the length field covering the attribute).
    package func checkIntegrity(_ raw: UnsafeRawBufferPointer, key: HMAC) -> Bool {
        guard let mi = integrityOffset, mi + 24 <= raw.count else { return false }
        var prefix = [UInt8](UnsafeRawBufferPointer(rebasing: raw[0..<mi]))
        let adjusted = UInt16(mi + 24 - Self.headerSize)
        prefix[2] = UInt8(adjusted >> 8)
        prefix[3] = UInt8(adjusted & 0xff)
        var mac = [UInt8](repeating: 0, count: HMAC.sha1Size)
        let ok = prefix.withUnsafeBytes { p in mac.withUnsafeMutableBytes { m in key.authenticate(p, into: m) } }
        guard ok else { return false }
        // Constant-time comparison.
        var diff: UInt8 = 0
        for i in 0..<HMAC.sha1Size { diff |= mac[i] ^ raw[mi + 4 + i] }
        return diff == 0
    }

    /// The message's bytes, with MESSAGE-INTEGRITY keyed by `integrity` and a FINGERPRINT when asked.
    package func serialized(integrity: HMAC? = nil, fingerprint: Bool = true) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(128)
        let c = messageClass.rawValue
        let m = method
        let type = (m & 0x000F) | (m & 0x0070) << 1 | (m & 0x0F80) << 2 | (c & 0x1) << 4 | (c & 0x2) << 7
        out.append16(type)
        out.append16(0)
        out.append32(Self.magicCookie)
        out.append(contentsOf: transactionID)
        for a in attributes {
            out.append16(a.type)
            out.append16(UInt16(a.value.count))
            out.append(contentsOf: a.value)
            while out.count % 4 != 0 { out.append(0) }
        }
        func setLength(_ n: Int) {
            out[2] = UInt8(truncatingIfNeeded: n >> 8)
            out[3] = UInt8(truncatingIfNeeded: n)
        }
        if let integrity {
            setLength(out.count + 24 - Self.headerSize)
            let mac = integrity.authenticate(out)
            out.append16(STUNAttributeType.messageIntegrity)
            out.append16(UInt16(HMAC.sha1Size))
            out.append(contentsOf: mac.count == HMAC.sha1Size ? mac : [UInt8](repeating: 0, count: HMAC.sha1Size))
        }
        if fingerprint {
            setLength(out.count + 8 - Self.headerSize)
            let crc = out.withUnsafeBytes { CRC32.checksum($0) } ^ 0x5354_554E
            out.append16(STUNAttributeType.fingerprint)
            out.append16(4)
            out.append32(crc)
        }
        setLength(out.count - Self.headerSize)
        return out
    }

    // MARK: typed attributes

    package func attribute(_ type: UInt16) -> [UInt8]? { attributes.first { $0.type == type }?.value }

    package var username: String? {
        attribute(STUNAttributeType.username).map { String(decoding: $0, as: UTF8.self) }
    }

    package var priority: UInt32? {
        guard let v = attribute(STUNAttributeType.priority), v.count == 4 else { return nil }
        return UInt32(v[0]) << 24 | UInt32(v[1]) << 16 | UInt32(v[2]) << 8 | UInt32(v[3])
    }

    package var useCandidate: Bool { attribute(STUNAttributeType.useCandidate) != nil }

    package var iceControlling: UInt64? { Self.u64(attribute(STUNAttributeType.iceControlling)) }
    package var iceControlled: UInt64? { Self.u64(attribute(STUNAttributeType.iceControlled)) }

    static func u64(_ v: [UInt8]?) -> UInt64? {
        guard let v, v.count == 8 else { return nil }
        return v.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// ERROR-CODE as (code, reason).
    package var errorCode: (code: Int, reason: String)? {
        guard let v = attribute(STUNAttributeType.errorCode), v.count >= 4 else { return nil }
        return (Int(v[2] & 0x7) * 100 + Int(v[3]), String(decoding: v[4...], as: UTF8.self))
    }

    /// XOR-MAPPED-ADDRESS decoded with this message's transaction id.
    package var xorMappedAddress: TransportAddress? {
        guard let v = attribute(STUNAttributeType.xorMappedAddress), v.count >= 8 else { return nil }
        let port = (UInt16(v[2]) << 8 | UInt16(v[3])) ^ UInt16(Self.magicCookie >> 16)
        let key: [UInt8] = [0x21, 0x12, 0xA4, 0x42] + transactionID
        switch v[1] {
        case 0x01:
            var a: UInt32 = 0
            for i in 0..<4 { a = a << 8 | UInt32(v[4 + i] ^ key[i]) }
            return TransportAddress(ip: .v4(a), port: port)
        case 0x02 where v.count >= 20:
            var hi: UInt64 = 0, lo: UInt64 = 0
            for i in 0..<8 { hi = hi << 8 | UInt64(v[4 + i] ^ key[i]) }
            for i in 8..<16 { lo = lo << 8 | UInt64(v[4 + i] ^ key[i]) }
            return TransportAddress(ip: .v6(hi, lo), port: port)
        default:
            return nil
        }
    }

    // MARK: attribute builders

    package static func xorMappedAddressAttribute(_ address: TransportAddress, transactionID: [UInt8]) -> Attribute {
        let key: [UInt8] = [0x21, 0x12, 0xA4, 0x42] + transactionID
        let port = address.port ^ UInt16(magicCookie >> 16)
        let bytes = address.addressBytes
        var v: [UInt8] = [0, address.isIPv4 ? 0x01 : 0x02, UInt8(port >> 8), UInt8(port & 0xff)]
        for (i, b) in bytes.enumerated() { v.append(b ^ key[i]) }
        return Attribute(type: STUNAttributeType.xorMappedAddress, value: v)
    }

    package static func errorCodeAttribute(_ code: Int, reason: String) -> Attribute {
        var v: [UInt8] = [0, 0, UInt8(code / 100), UInt8(code % 100)]
        v.append(contentsOf: reason.utf8.prefix(128))
        return Attribute(type: STUNAttributeType.errorCode, value: v)
    }

    package static func usernameAttribute(_ username: String) -> Attribute {
        Attribute(type: STUNAttributeType.username, value: Array(username.utf8))
    }

    package static func u32Attribute(_ type: UInt16, _ v: UInt32) -> Attribute {
        Attribute(type: type, value: [UInt8(v >> 24), UInt8(v >> 16 & 0xff), UInt8(v >> 8 & 0xff), UInt8(v & 0xff)])
    }

    package static func u64Attribute(_ type: UInt16, _ v: UInt64) -> Attribute {
        Attribute(type: type, value: (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * UInt64($0))) })
    }
}

package enum STUNAttributeType {
    package static let mappedAddress: UInt16 = 0x0001
    package static let username: UInt16 = 0x0006
    package static let messageIntegrity: UInt16 = 0x0008
    package static let errorCode: UInt16 = 0x0009
    package static let unknownAttributes: UInt16 = 0x000A
    package static let xorMappedAddress: UInt16 = 0x0020
    package static let priority: UInt16 = 0x0024
    package static let useCandidate: UInt16 = 0x0025
    package static let software: UInt16 = 0x8022
    package static let fingerprint: UInt16 = 0x8028
    package static let iceControlled: UInt16 = 0x8029
    package static let iceControlling: UInt16 = 0x802A
}

package enum STUNError: Error, Equatable, Sendable {
    case truncated
    case tooLarge
    case notSTUN
    case badLength
    case badAttribute
    case badFingerprint
}
