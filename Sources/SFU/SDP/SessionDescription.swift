/// An SDP (RFC 8866) parsed into its session part and media sections, keeping every line so an
/// answer can be built from what the offer said. JSEP (RFC 8829) shapes: unified plan, BUNDLE,
/// rtcp-mux. Parsing is lenient about unknown lines and strict about structure.
public struct SessionDescription: Sendable, Equatable {
    public struct Attribute: Sendable, Equatable {
        public var name: String
        public var value: String?
        public init(_ name: String, _ value: String? = nil) {
            self.name = name
            self.value = value
        }
        var line: String { value.map { "a=\(name):\($0)" } ?? "a=\(name)" }
    }

    public struct Media: Sendable, Equatable {
        /// audio, video, application.
        public var kind: String
        public var port: Int
        public var proto: String
        /// Payload types (or `webrtc-datachannel`), as in the m-line.
        public var formats: [String]
        /// c=, b= and other non-attribute lines of the section, verbatim.
        public var otherLines: [String] = []
        public var attributes: [Attribute] = []

        public init(kind: String, port: Int, proto: String, formats: [String]) {
            self.kind = kind
            self.port = port
            self.proto = proto
            self.formats = formats
        }

        public func values(_ name: String) -> [String] { attributes.filter { $0.name == name }.compactMap(\.value) }
        public func value(_ name: String) -> String? { attributes.first { $0.name == name }?.value }
        public func has(_ name: String) -> Bool { attributes.contains { $0.name == name } }

        public var mid: String? { value("mid") }

        /// sendrecv, sendonly, recvonly or inactive (sendrecv when absent).
        public var direction: String {
            for d in ["sendrecv", "sendonly", "recvonly", "inactive"] where has(d) { return d }
            return "sendrecv"
        }

        /// The codecs of the section in m-line order: payload type, name, clock rate, channels, fmtp, rtcp-fb.
        public var codecs: [Codec] {
            var out: [Codec] = []
            for format in formats {
                guard let pt = UInt8(format), pt < 128 else { continue }
                var codec = Codec(payloadType: pt, name: "", clockRate: 0)
                for map in values("rtpmap") where map.hasPrefix("\(pt) ") {
                    let encoding = map.dropFirst("\(pt) ".count).split(separator: "/")
                    if encoding.count >= 2 {
                        codec.name = String(encoding[0])
                        codec.clockRate = Int(encoding[1]) ?? 0
                        codec.channels = encoding.count > 2 ? Int(encoding[2]) ?? 1 : 1
                    }
                }
                for f in values("fmtp") where f.hasPrefix("\(pt) ") { codec.fmtp = String(f.dropFirst("\(pt) ".count)) }
                for f in values("rtcp-fb") where f.hasPrefix("\(pt) ") { codec.feedback.append(String(f.dropFirst("\(pt) ".count))) }
                if !codec.name.isEmpty { out.append(codec) }
            }
            return out
        }

        /// `a=extmap` entries: id -> URI.
        public var extensions: [(id: UInt8, uri: String)] {
            values("extmap").compactMap { v in
                let parts = v.split(separator: " ")
                guard parts.count >= 2 else { return nil }
                let idPart = parts[0].split(separator: "/")[0]
                guard let id = UInt8(idPart), id >= 1, id <= 255 else { return nil }
                return (id, String(parts[1]))
            }
        }

        /// SSRCs declared with `a=ssrc:<ssrc> ...`, in order, without duplicates.
        public var ssrcs: [UInt32] {
            var seen: [UInt32] = []
            for v in values("ssrc") {
                if let s = v.split(separator: " ").first.flatMap({ UInt32($0) }), !seen.contains(s) { seen.append(s) }
            }
            return seen
        }
    }

    public struct Codec: Sendable, Equatable {
        public var payloadType: UInt8
        public var name: String
        public var clockRate: Int
        public var channels = 1
        public var fmtp: String?
        public var feedback: [String] = []

        public init(payloadType: UInt8, name: String, clockRate: Int, channels: Int = 1, fmtp: String? = nil, feedback: [String] = []) {
            self.payloadType = payloadType
            self.name = name
            self.clockRate = clockRate
            self.channels = channels
            self.fmtp = fmtp
            self.feedback = feedback
        }
    }

    public enum ParseError: Error, Equatable, Sendable {
        case tooLarge
        case badLine(Int, String)
        case missingVersion
    }

    /// Largest SDP accepted (a browser offer with simulcast is a few KB).
    public static let maxSize = 64 * 1024

    public var sessionLines: [String] = []
    public var sessionAttributes: [Attribute] = []
    public var media: [Media] = []

    public init() {}

    public init(parsing text: String) throws(ParseError) {
        guard text.utf8.count <= Self.maxSize else { throw .tooLarge }
        var sawVersion = false
        var number = 0
        for raw in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            number += 1
            let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : String(raw)
            if line.isEmpty { continue }
            let chars = Array(line.utf8.prefix(2))
            guard chars.count == 2, chars[1] == UInt8(ascii: "="), chars[0] >= UInt8(ascii: "a"), chars[0] <= UInt8(ascii: "z") else {
                throw .badLine(number, String(line.prefix(80)))
            }
            let type = Character(UnicodeScalar(chars[0]))
            let rest = String(line.dropFirst(2))
            switch type {
            case "v":
                sawVersion = true
                sessionLines.append(line)
            case "m":
                let parts = rest.split(separator: " ", omittingEmptySubsequences: true)
                guard parts.count >= 3, let port = Int(parts[1].split(separator: "/")[0]) else { throw .badLine(number, String(line.prefix(80))) }
                media.append(Media(kind: String(parts[0]), port: port, proto: String(parts[2]), formats: parts.dropFirst(3).map(String.init)))
            case "a":
                let attribute: Attribute
                if let colon = rest.firstIndex(of: ":") {
                    attribute = Attribute(String(rest[..<colon]), String(rest[rest.index(after: colon)...]))
                } else {
                    attribute = Attribute(rest)
                }
                if media.isEmpty { sessionAttributes.append(attribute) } else { media[media.count - 1].attributes.append(attribute) }
            default:
                if media.isEmpty { sessionLines.append(line) } else { media[media.count - 1].otherLines.append(line) }
            }
        }
        guard sawVersion else { throw .missingVersion }
    }

    /// An attribute from the media section, falling back to the session level (ICE and DTLS
    /// attributes may sit at either).
    public func value(_ name: String, in section: Media?) -> String? {
        section?.value(name) ?? sessionAttributes.first { $0.name == name }?.value
    }

    public var bundleGroup: [String] {
        for a in sessionAttributes where a.name == "group" {
            let parts = (a.value ?? "").split(separator: " ")
            if parts.first == "BUNDLE" { return parts.dropFirst().map(String.init) }
        }
        return []
    }

    public var text: String {
        var lines = sessionLines
        lines.append(contentsOf: sessionAttributes.map(\.line))
        for m in media {
            lines.append("m=\(m.kind) \(m.port) \(m.proto) \(m.formats.joined(separator: " "))")
            lines.append(contentsOf: m.otherLines)
            lines.append(contentsOf: m.attributes.map(\.line))
        }
        return lines.joined(separator: "\r\n") + "\r\n"
    }
}
