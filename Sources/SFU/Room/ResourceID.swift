import DTLS

/// The identifiers the server hands out, one generator for all of them: a prefix that tells what
/// the id names (`rm_` a room, `pe_` a participant's session, `rec_` a recording...) and 14
/// characters of [0-9a-z] from OpenSSL's generator, about 72 bits: ids appear in URLs and logs and
/// must not be guessable from one another.
package enum ResourceID: String, Sendable, CaseIterable {
    case room = "rm"
    case peer = "pe"
    case recording = "rec"
    case event = "ev"
    case file = "file"
    case snapshot = "snap"
    case webhook = "wh"
    case message = "msg"

    package static let randomLength = 14

    /// A new id of this kind: `<prefix>_<14 random characters>`.
    package func make() -> String { rawValue + "_" + Self.randomString(count: Self.randomLength) }

    /// Whether `id` has this kind's prefix and a well-formed random part.
    package func matches(_ id: String) -> Bool {
        let prefix = rawValue + "_"
        guard id.hasPrefix(prefix) else { return false }
        let rest = id.utf8.dropFirst(prefix.utf8.count)
        return rest.count == Self.randomLength && rest.allSatisfy { Self.alphabet.contains($0) }
    }

    static let alphabet: [UInt8] = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)

    /// `count` characters of [0-9a-z], each equally likely: random bytes at or above 252 (7 x 36)
    /// are drawn again, so `byte % 36` has no bias.
    package static func randomString(count: Int) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            for byte in secureRandomBytes(count - out.count + 4) where byte < 252 && out.count < count {
                out.append(alphabet[Int(byte % 36)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
