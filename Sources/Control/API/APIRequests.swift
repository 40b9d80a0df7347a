import Foundation
import Hummingbird
import Recorder
import SFU

// The control API's request bodies (docs/API.md, docs/openapi.yaml), one `Codable` type per body.
// Decoding checks what the contract says of each field (type, length, range, allowed values) and
// throws the 400 that names the field; unknown fields are ignored and a field set to null is one
// left out. Encoding (snake_case keys, `SignalingJSON.encoder`) is what `sfu-load` and the tests send.

/// `POST /v1/rooms`.
package struct CreateRoomRequest: Codable, Sendable, Equatable {
    package var name: String?
    package var maxParticipants: Int?
    package var emptyTimeoutS: Int?
    package var maxDurationS: Int?
    package var autoRecord: Bool?
    /// The app's own data (a JSON object, at most ``RequestFields/maxMetadataBytes``), returned as given.
    package var metadata: JSONValue?
    /// `notice` (the default: everyone in the room is recorded) or `required`.
    package var recordingConsent: String?

    package init(name: String? = nil, maxParticipants: Int? = nil, emptyTimeoutS: Int? = nil, maxDurationS: Int? = nil, autoRecord: Bool? = nil,
                 recordingConsent: String? = nil) {
        self.recordingConsent = recordingConsent
        self.name = name
        self.maxParticipants = maxParticipants
        self.emptyTimeoutS = emptyTimeoutS
        self.maxDurationS = maxDurationS
        self.autoRecord = autoRecord
    }

    package init(from decoder: any Decoder) throws {
        let f = try RequestFields(decoder)
        name = try f.string("name", maxLength: 200)
        maxParticipants = try f.int("max_participants", in: 1...100)
        emptyTimeoutS = try f.int("empty_timeout_s", in: 0...86_400)
        maxDurationS = try f.int("max_duration_s", in: 1...(7 * 86_400))
        autoRecord = try f.bool("auto_record")
        metadata = try f.metadata()
        recordingConsent = try f.string("recording_consent", maxLength: 16)
        if let c = recordingConsent, c != "notice", c != "required" {
            throw APIError.badRequest("recording_consent must be notice or required")
        }
    }
}

/// `POST /v1/rooms/{id}/tokens`.
package struct MintTokenRequest: Codable, Sendable, Equatable {
    package var userID: String
    package var role: Role
    package var name: String?
    /// Narrower than the role's defaults, never wider (checked by the handler, which knows the role's set).
    package var permissions: [Permission]?
    package var ttlS: Int?

    package init(userID: String, role: Role, name: String? = nil, permissions: [Permission]? = nil, ttlS: Int? = nil) {
        self.userID = userID
        self.role = role
        self.name = name
        self.permissions = permissions
        self.ttlS = ttlS
    }

    package init(from decoder: any Decoder) throws {
        let f = try RequestFields(decoder)
        guard let userID = try f.string("user_id", maxLength: 128), !userID.isEmpty else { throw APIError.badRequest("user_id is required (a non-empty string)") }
        guard let roleName = try f.string("role", maxLength: 32) else { throw APIError.badRequest("role is required: doctor, patient or observer") }
        guard let role = Role(rawValue: roleName) else { throw APIError.badRequest("role must be doctor, patient or observer") }
        self.userID = userID
        self.role = role
        permissions = try f.stringArray("permissions")?.map { name in
            guard let p = Permission(rawValue: name) else { throw APIError.badRequest("unknown permission '\(name.prefix(32))'") }
            return p
        }
        ttlS = try f.int("ttl_s", in: 1...ControlAPI.Defaults.maxTokenTTLS)
        name = try f.string("name", maxLength: 200)
    }
}

/// `POST /v1/rooms/{id}/participants/{user_id}/mute`.
package struct MuteRequest: Codable, Sendable, Equatable {
    package var kind: MediaKind
    package var muted: Bool

    package init(kind: MediaKind, muted: Bool) {
        self.kind = kind
        self.muted = muted
    }

    package init(from decoder: any Decoder) throws {
        let f = try RequestFields(decoder)
        guard let kindName = try f.string("kind", maxLength: 16) else { throw APIError.badRequest("kind is required: audio or video") }
        guard let kind = MediaKind(rawValue: kindName) else { throw APIError.badRequest("kind must be audio or video") }
        guard let muted = try f.bool("muted") else { throw APIError.badRequest("muted is required (true or false)") }
        self.kind = kind
        self.muted = muted
    }
}

/// `POST /v1/rooms/{id}/recordings`: the mode, and the composite's options. The options are checked
/// whatever the mode (a wrong type or range is a 400 even where the mode does not use them).
package struct StartRecordingRequest: Codable, Sendable, Equatable {
    package enum Mode: String, Codable, Sendable { case tracks, composite }
    package var mode: Mode
    package var layout: CompositeLayout.Kind?
    package var width: Int?
    package var height: Int?
    package var fps: Int?
    package var videoBitrateBps: Int?
    /// The app's own data for this recording, returned as given.
    package var metadata: JSONValue?

    package init(mode: Mode = .tracks, layout: CompositeLayout.Kind? = nil, width: Int? = nil, height: Int? = nil, fps: Int? = nil, videoBitrateBps: Int? = nil) {
        self.mode = mode
        self.layout = layout
        self.width = width
        self.height = height
        self.fps = fps
        self.videoBitrateBps = videoBitrateBps
    }

    package init(from decoder: any Decoder) throws {
        let f = try RequestFields(decoder)
        guard let mode = Mode(rawValue: try f.string("mode", maxLength: 32) ?? Mode.tracks.rawValue) else {
            throw APIError.badRequest("mode must be tracks or composite")
        }
        self.mode = mode
        if let layout = try f.string("layout", maxLength: 16) {
            guard let kind = CompositeLayout.Kind(rawValue: layout) else { throw APIError.badRequest("layout must be grid or speaker") }
            self.layout = kind
        }
        width = try f.int("width", in: 160...1920)
        height = try f.int("height", in: 120...1080)
        fps = try f.int("fps", in: 5...60)
        videoBitrateBps = try f.int("video_bitrate_bps", in: 100_000...10_000_000)
        metadata = try f.metadata()
        let options = compositeOptions
        // VP8 works on 4:2:0 pictures: even sizes only.
        guard options.width % 2 == 0, options.height % 2 == 0 else { throw APIError.badRequest("width and height must be even") }
    }

    /// The composite's options: the request's, the defaults for what it leaves out.
    package var compositeOptions: CompositeRecording.Options {
        var o = CompositeRecording.Options()
        if let layout { o.layout = layout }
        if let width { o.width = width }
        if let height { o.height = height }
        if let fps { o.fps = fps }
        if let videoBitrateBps { o.videoBitrateBps = videoBitrateBps }
        return o
    }
}

/// `POST /v1/rooms/{id}/snapshots`.
package struct SnapshotRequest: Codable, Sendable, Equatable {
    package var userID: String
    package var source: TrackSource
    package var format: SnapshotFormat

    package init(userID: String, source: TrackSource = .camera, format: SnapshotFormat = .jpeg) {
        self.userID = userID
        self.source = source
        self.format = format
    }

    package init(from decoder: any Decoder) throws {
        let f = try RequestFields(decoder)
        guard let userID = try f.string("user_id", maxLength: 128), !userID.isEmpty else { throw APIError.badRequest("user_id is required (a non-empty string)") }
        let sourceName = try f.string("source", maxLength: 16) ?? TrackSource.camera.rawValue
        guard sourceName == TrackSource.camera.rawValue || sourceName == TrackSource.screen.rawValue, let source = TrackSource(rawValue: sourceName) else {
            throw APIError.badRequest("source must be camera or screen")
        }
        guard let format = SnapshotFormat(rawValue: try f.string("format", maxLength: 16) ?? SnapshotFormat.jpeg.rawValue) else {
            throw APIError.badRequest("format must be jpeg or png")
        }
        self.userID = userID
        self.source = source
        self.format = format
    }
}

/// `POST /demo/join` (development mode only).
package struct DemoJoinRequest: Codable, Sendable, Equatable {
    package var room: String
    package var name: String
    /// A patient unless the page asks for another role: whoever reaches the demo gets no more than that by default.
    package var role: Role

    package init(from decoder: any Decoder) throws {
        let f = try RequestFields(decoder)
        guard let room = try f.string("room", maxLength: 100), !room.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw APIError.badRequest("room is required (a name)")
        }
        guard let role = Role(rawValue: try f.string("role", maxLength: 32) ?? Role.patient.rawValue) else {
            throw APIError.badRequest("role must be doctor, patient or observer")
        }
        self.room = room
        self.name = try f.string("name", maxLength: 100) ?? "guest"
        self.role = role
    }
}

extension ControlAPI {
    /// A request's body as `T`: 400 for a body that is not a JSON object or a field the type
    /// refuses; an empty body is `{}` when `allowEmpty` (every field optional), a 400 otherwise.
    func decodeBody<T: Decodable, Context: RequestContext>(_ type: T.Type, _ request: Request, _ context: Context, allowEmpty: Bool) async throws -> T {
        let buffer = try await request.body.collect(upTo: ControlAPI.maxBodyBytes)
        var data = Data(buffer: buffer)
        if data.isEmpty {
            guard allowEmpty else { throw APIError.badRequest("a JSON object body is required") }
            data = Data("{}".utf8)
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.badRequest("body must be a JSON object")
        }
    }
}

/// The fields of a request body as ``JSONValue``s, read by the request types' decoders with the
/// checks of the contract: a wrong type or range is a 400 that names the field.
struct RequestFields {
    let object: [String: JSONValue]

    init(_ decoder: any Decoder) throws {
        guard case .object(let object)? = try? decoder.singleValueContainer().decode(JSONValue.self) else {
            throw APIError.badRequest("body must be a JSON object")
        }
        self.object = object
    }

    /// The field, nil when absent or null.
    func present(_ key: String) -> JSONValue? {
        guard let v = object[key], v != .null else { return nil }
        return v
    }

    func string(_ key: String, maxLength: Int) throws -> String? {
        guard let v = present(key) else { return nil }
        guard let s = v.string else { throw APIError.badRequest("\(key) must be a string") }
        // Characters as JSON Schema counts them (docs/openapi.yaml `maxLength`): Unicode scalars.
        guard s.unicodeScalars.count <= maxLength else { throw APIError.badRequest("\(key) is longer than \(maxLength) characters") }
        return s
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let v = present(key) else { return nil }
        // Booleans and fractions are refused; 5 and 5.0 are the same integer.
        guard let i = v.integer else { throw APIError.badRequest("\(key) must be an integer") }
        guard range.contains(i) else { throw APIError.badRequest("\(key) must be in \(range.lowerBound)...\(range.upperBound)") }
        return i
    }

    /// The body's `metadata`: a JSON object of at most 16 KiB (serialized), kept and returned as given.
    static let maxMetadataBytes = 16 * 1024
    func metadata() throws -> JSONValue? {
        guard let v = present("metadata") else { return nil }
        guard case .object = v else { throw APIError.badRequest("metadata must be a JSON object") }
        let size = (try? JSONEncoder().encode(v).count) ?? Int.max
        guard size <= Self.maxMetadataBytes else { throw APIError.badRequest("metadata is \(size) bytes: at most \(Self.maxMetadataBytes)") }
        return v
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = present(key) else { return nil }
        guard let b = v.bool else { throw APIError.badRequest("\(key) must be true or false") }
        return b
    }

    /// At most 16 strings.
    func stringArray(_ key: String) throws -> [String]? {
        guard let v = present(key) else { return nil }
        guard case .array(let a) = v, a.count <= 16 else { throw APIError.badRequest("\(key) must be an array of strings") }
        let strings = a.compactMap(\.string)
        guard strings.count == a.count else { throw APIError.badRequest("\(key) must be an array of strings") }
        return strings
    }
}

/// The query parameters of the list routes that page (`GET /v1/rooms`, `.../messages`): times,
/// limits and opaque cursors, each refused with a 400 that names it.
enum ListQuery {
    /// A cursor: base64url of "<milliseconds>.<id>", the last item of the page it follows.
    static func cursor(_ position: ListPosition) -> String {
        Data("\(position.at).\(position.id)".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func position(cursor text: String) throws -> ListPosition {
        let bad = APIError.badRequest("cursor is not one this server handed out (use next_cursor as given)")
        guard text.utf8.count <= 200, text.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || (48...57).contains($0)
                                                              || (65...90).contains($0) || (97...122).contains($0) }) else { throw bad }
        var b64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while b64.utf8.count % 4 != 0 { b64 += "=" }
        guard let data = Data(base64Encoded: b64), let plain = String(data: data, encoding: .utf8),
              let dot = plain.firstIndex(of: "."), let at = Int64(plain[..<dot]), at >= 0 else { throw bad }
        let id = String(plain[plain.index(after: dot)...])
        guard ControlAPI.validID(id) else { throw bad }
        return ListPosition(at: at, id: id)
    }

    /// An RFC 3339 time (`2026-12-07T10:00:00Z`, fractions and offsets allowed) or Unix milliseconds.
    static func time(_ text: String, name: String) throws -> Int64 {
        if let ms = Int64(text), ms >= 0 { return ms }
        let withFraction = ISO8601DateFormatter()
        withFraction.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let plain = ISO8601DateFormatter()
        guard let date = withFraction.date(from: text) ?? plain.date(from: text) else {
            throw APIError.badRequest("\(name) must be an RFC 3339 time (2026-12-07T10:00:00Z) or Unix milliseconds")
        }
        return Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    /// `limit`: 1...`max`, `fallback` when absent.
    static func limit(_ text: String?, fallback: Int, max: Int) throws -> Int {
        guard let text else { return fallback }
        guard let n = Int(text), (1...max).contains(n) else { throw APIError.badRequest("limit must be an integer in 1...\(max)") }
        return n
    }

    /// `from` and `to` (to after from).
    static func range(from: String?, to: String?) throws -> (from: Int64?, to: Int64?) {
        let f = try from.map { try time($0, name: "from") }
        let t = try to.map { try time($0, name: "to") }
        if let f, let t, t <= f { throw APIError.badRequest("to must be after from") }
        return (f, t)
    }
}

/// `POST /v1/recordings/{id}/files/{file_id}/url {ttl_s?}`: how long the link works (1 s to 7 days, 1 h by default).
package struct SignedLinkRequest: Codable, Sendable, Equatable {
    package static let maxTTLS = 7 * 86_400
    package var ttlS: Int

    package init(ttlS: Int = 3600) { self.ttlS = ttlS }

    package init(from decoder: any Decoder) throws {
        let f = try RequestFields(decoder)
        ttlS = try f.int("ttl_s", in: 1...Self.maxTTLS) ?? 3600
    }
}
