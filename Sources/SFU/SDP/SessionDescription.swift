/// An SDP (RFC 8866) parsed into its session part and media sections, keeping every line so an
/// answer can be built from what the offer said. JSEP (RFC 8829) shapes: unified plan, BUNDLE,
/// rtcp-mux. Parsing is lenient about unknown lines and strict about structure.
package struct SessionDescription: Sendable, Equatable {
    package struct Attribute: Sendable, Equatable {
        package var name: String
        package var value: String?
        package init(_ name: String, _ value: String? = nil) {
            self.name = name
            self.value = value
        }
        var line: String { value.map { "a=\(name):\($0)" } ?? "a=\(name)" }
    }

    package struct Media: Sendable, Equatable {
        /// audio, video, application.
        package var kind: String
        package var port: Int
        package var proto: String
        /// Payload types (or `webrtc-datachannel`), as in the m-line.
        package var formats: [String]
        /// c=, b= and other non-attribute lines of the section, verbatim.
        package var otherLines: [String] = []
        package var attributes: [Attribute] = []

        package init(kind: String, port: Int, proto: String, formats: [String]) {
            self.kind = kind
            self.port = port
            self.proto = proto
            self.formats = formats
        }

        package func values(_ name: String) -> [String] { attributes.filter { $0.name == name }.compactMap(\.value) }
        package func value(_ name: String) -> String? { attributes.first { $0.name == name }?.value }
        package func has(_ name: String) -> Bool { attributes.contains { $0.name == name } }

        package var mid: String? { value("mid") }

        /// sendrecv, sendonly, recvonly or inactive (sendrecv when absent).
        package var direction: MediaDirection {
            for d in MediaDirection.allCases where has(d.rawValue) { return d }
            return .sendrecv
        }

        /// The codecs of the section in m-line order: payload type, name, clock rate, channels, fmtp, rtcp-fb.
        /// One pass over the attributes (indexed by payload type), then one over the formats.
        package var codecs: [Codec] {
            var byPT: [UInt8: Codec] = [:]
            func split(_ value: String) -> (UInt8, Substring)? {
                guard let space = value.firstIndex(of: " "), let pt = UInt8(value[..<space]), pt < 128 else { return nil }
                return (pt, value[value.index(after: space)...])
            }
            for a in attributes {
                guard a.name == "rtpmap" || a.name == "fmtp" || a.name == "rtcp-fb", let v = a.value, let (pt, rest) = split(v) else { continue }
                var codec = byPT[pt] ?? Codec(payloadType: pt, name: "", clockRate: 0)
                switch a.name {
                case "rtpmap":
                    let encoding = rest.split(separator: "/")
                    if encoding.count >= 2 {
                        codec.name = String(encoding[0])
                        codec.clockRate = Int(encoding[1]) ?? 0
                        codec.channels = encoding.count > 2 ? Int(encoding[2]) ?? 1 : 1
                    }
                case "fmtp": codec.fmtp = String(rest)
                default: codec.feedback.append(String(rest))
                }
                byPT[pt] = codec
            }
            var out: [Codec] = []
            var listed = Set<UInt8>()
            for format in formats {
                guard let pt = UInt8(format), pt < 128, listed.insert(pt).inserted, let codec = byPT[pt], !codec.name.isEmpty else { continue }
                out.append(codec)
            }
            return out
        }

        /// `a=extmap` entries: id -> URI.
        package var extensions: [(id: UInt8, uri: String)] {
            values("extmap").compactMap { v in
                let parts = v.split(separator: " ")
                guard parts.count >= 2 else { return nil }
                guard let idPart = parts[0].split(separator: "/").first, let id = UInt8(idPart), id >= 1 else { return nil }
                return (id, String(parts[1]))
            }
        }

        /// SSRCs declared with `a=ssrc:<ssrc> ...`, in order, without duplicates.
        package var ssrcs: [UInt32] {
            var seen = Set<UInt32>()
            var out: [UInt32] = []
            for v in values("ssrc") {
                if let s = v.split(separator: " ").first.flatMap({ UInt32($0) }), seen.insert(s).inserted { out.append(s) }
            }
            return out
        }
    }

    package struct Codec: Sendable, Equatable {
        package var payloadType: UInt8
        package var name: String
        package var clockRate: Int
        package var channels = 1
        package var fmtp: String?
        package var feedback: [String] = []

        package init(payloadType: UInt8, name: String, clockRate: Int, channels: Int = 1, fmtp: String? = nil, feedback: [String] = []) {
            self.payloadType = payloadType
            self.name = name
            self.clockRate = clockRate
            self.channels = channels
            self.fmtp = fmtp
            self.feedback = feedback
        }
    }

    package enum ParseError: Error, Equatable, Sendable {
        case tooLarge
        case badLine(Int, String)
        case missingVersion
        /// More m-lines, formats or attributes than ``Limits`` allows.
        case tooMany(String)
    }

    /// Largest SDP accepted (a browser offer with simulcast is a few KB).
    package static let maxSize = 64 * 1024

    /// Counts an SDP may not exceed, so that what is done per m-line, format or attribute (here
    /// and in the room: one producer and a consumer per subscriber for each m-line) stays bounded.
    /// A consultation room's subscriber offer has 3 m-lines per participant; a browser offers
    /// about 20 payload types per video section and ~60 attributes.
    package enum Limits {
        package static let mediaSections = 64
        package static let formatsPerSection = 64
        package static let attributesPerSection = 256
        package static let sessionAttributes = 64
        package static let lineLength = 4096
    }

    package var sessionLines: [String] = []
    package var sessionAttributes: [Attribute] = []
    package var media: [Media] = []

    package init() {}

    package init(parsing text: String) throws(ParseError) {
        guard text.utf8.count <= Self.maxSize else { throw .tooLarge }
        var sawVersion = false
        var number = 0
        for raw in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            number += 1
            let line = raw.hasSuffix("\r") ? String(raw.dropLast()) : String(raw)
            if line.isEmpty { continue }
            guard line.utf8.count <= Limits.lineLength else { throw .badLine(number, String(line.prefix(80))) }
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
                guard parts.count >= 3, let portPart = parts[1].split(separator: "/").first, let port = Int(portPart) else {
                    throw .badLine(number, String(line.prefix(80)))
                }
                guard media.count < Limits.mediaSections else { throw .tooMany("more than \(Limits.mediaSections) m-lines") }
                guard parts.count - 3 <= Limits.formatsPerSection else { throw .tooMany("more than \(Limits.formatsPerSection) formats in an m-line") }
                media.append(Media(kind: String(parts[0]), port: port, proto: String(parts[2]), formats: parts.dropFirst(3).map(String.init)))
            case "a":
                let attribute: Attribute
                if let colon = rest.firstIndex(of: ":") {
                    attribute = Attribute(String(rest[..<colon]), String(rest[rest.index(after: colon)...]))
                } else {
                    attribute = Attribute(rest)
                }
                if media.isEmpty {
                    guard sessionAttributes.count < Limits.sessionAttributes else { throw .tooMany("more than \(Limits.sessionAttributes) session attributes") }
                    sessionAttributes.append(attribute)
                } else {
                    guard media[media.count - 1].attributes.count < Limits.attributesPerSection else {
                        throw .tooMany("more than \(Limits.attributesPerSection) attributes in an m-line")
                    }
                    media[media.count - 1].attributes.append(attribute)
                }
            default:
                if media.isEmpty {
                    guard sessionLines.count < Limits.sessionAttributes else { throw .tooMany("more than \(Limits.sessionAttributes) session lines") }
                    sessionLines.append(line)
                } else {
                    guard media[media.count - 1].otherLines.count < Limits.attributesPerSection else {
                        throw .tooMany("more than \(Limits.attributesPerSection) lines in an m-line")
                    }
                    media[media.count - 1].otherLines.append(line)
                }
            }
        }
        guard sawVersion else { throw .missingVersion }
    }

    /// An attribute from the media section, falling back to the session level (ICE and DTLS
    /// attributes may sit at either).
    package func value(_ name: String, in section: Media?) -> String? {
        section?.value(name) ?? sessionAttributes.first { $0.name == name }?.value
    }

    package var bundleGroup: [String] {
        for a in sessionAttributes where a.name == "group" {
            let parts = (a.value ?? "").split(separator: " ")
            if parts.first == "BUNDLE" { return parts.dropFirst().map(String.init) }
        }
        return []
    }

    package var text: String {
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
