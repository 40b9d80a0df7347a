/// Why a packet could not be parsed. Parsers never trap on malformed input; they throw one of these.
public enum RTPParseError: Error, Equatable, Sendable {
    /// Fewer bytes than the structure needs.
    case truncated(needed: Int, available: Int)
    /// The version field is not 2.
    case badVersion(UInt8)
    /// The padding count is zero or larger than the packet.
    case badPadding
    /// A length field points outside the packet or is inconsistent.
    case badLength
    /// A field holds a value the format forbids.
    case invalidField(String)
}
