#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import COpenSSL
import Control
import Foundation
import SFU

/// An http:// or ws:// URL split into what a socket needs.
struct PlainURL {
    var address: TransportAddress
    var hostHeader: String
    /// Path and query.
    var target: String

    init?(_ text: String) {
        guard let scheme = text.range(of: "://") else { return nil }
        guard ["http", "ws"].contains(text[..<scheme.lowerBound].lowercased()) else { return nil }
        let rest = text[scheme.upperBound...]
        let slash = rest.firstIndex(of: "/") ?? rest.endIndex
        let authority = String(rest[..<slash])
        target = slash == rest.endIndex ? "/" : String(rest[slash...])
        hostHeader = authority
        guard let address = parseHostPort(authority.contains(":") ? authority : authority + ":80") else { return nil }
        self.address = address
    }
}

/// The load tool's own JSON (its report, the floor's control line, the control API's bodies):
/// `Codable` types, keys in snake_case. Signaling frames are the server's own types
/// (``ClientEvent``, ``ServerEvent``), encoded and decoded by their code in Control.
enum JSON {
    /// The signaling wire's encoder (snake_case, sorted keys): the same JSON everywhere.
    static var encoder: JSONEncoder { SignalingJSON.encoder }

    static let prettyEncoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return e
    }()

    static func encode(_ value: some Encodable) -> [UInt8] {
        (try? encoder.encode(value)).map { [UInt8]($0) } ?? Array("{}".utf8)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) -> T? {
        try? SignalingJSON.decoder.decode(T.self, from: Data(bytes))
    }

    /// Pretty-printed, for what the tool prints.
    static func string(_ value: some Encodable) -> String {
        (try? prettyEncoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}

/// The control API over blocking HTTP/1.1 (setup only: a few requests per participant).
struct ControlClient {
    let base: PlainURL
    let apiKey: String

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// `POST /v1/rooms`'s body (docs/API.md), as much of it as the tool sets.
    struct CreateRoom: Encodable {
        var name: String
        var maxParticipants: Int
        var emptyTimeoutS: Int
    }

    /// `POST /v1/rooms/{id}/tokens`'s body.
    struct MintToken: Encodable {
        var userID: String
        var role: String
        var ttlS: Int
    }

    /// What the tool reads of a room and of a token.
    struct Room: Decodable { var id: String }
    struct Token: Decodable { var signalingURL: String }

    func createRoom(name: String, maxParticipants: Int) throws -> String {
        let room = try call("POST", "/v1/rooms", CreateRoom(name: name, maxParticipants: maxParticipants, emptyTimeoutS: 600), expect: 201)
        guard let id = JSON.decode(Room.self, room)?.id else { throw Failure(description: "room without id: \(String(decoding: room, as: UTF8.self))") }
        return id
    }

    /// The signaling URL (token included) for `userID` in `room`.
    func signalingURL(room: String, userID: String, role: String) throws -> String {
        let token = try call("POST", "/v1/rooms/\(room)/tokens", MintToken(userID: userID, role: role, ttlS: 3600), expect: nil)
        guard let url = JSON.decode(Token.self, token)?.signalingURL else {
            throw Failure(description: "token without signaling_url: \(String(decoding: token, as: UTF8.self))")
        }
        return url
    }

    func deleteRoom(_ id: String) {
        _ = try? call("DELETE", "/v1/rooms/\(id)", nil as CreateRoom?, expect: nil)
    }

    /// One request; the response body's bytes.
    func call(_ method: String, _ path: String, _ body: (some Encodable)?, expect: Int?) throws -> [UInt8] {
        let fd = try Sockets.connectedTCP(to: base.address, nonBlocking: false)
        defer { close(fd) }
        let payload = body.map { JSON.encode($0) } ?? []
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(base.hostHeader)\r\nAuthorization: Bearer \(apiKey)\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json\r\n" }
        head += "Content-Length: \(payload.count)\r\n\r\n"
        try Sockets.writeAll(fd, Array(head.utf8) + payload)
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while response.count < 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0, errno == EINTR { continue }
            if n <= 0 { break }
            response += chunk[0..<n]
        }
        guard let split = Self.headerEnd(response) else { throw Failure(description: "\(method) \(path): no HTTP response") }
        let headText = String(decoding: response[0..<split], as: UTF8.self)
        let statusLine = headText.split(separator: "\r\n").first ?? ""
        let status = statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        var bodyBytes = Array(response[(split + 4)...])
        if headText.lowercased().contains("transfer-encoding: chunked") { bodyBytes = Self.dechunk(bodyBytes) }
        let ok = expect.map { status == $0 } ?? (200..<300).contains(status)
        guard ok else { throw Failure(description: "\(method) \(path) -> \(status) \(String(decoding: bodyBytes, as: UTF8.self))") }
        return bodyBytes
    }

    static func headerEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 { return i }
        return nil
    }

    static func dechunk(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            guard let lineEnd = (i..<bytes.count - 1).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }),
                  let size = Int(String(decoding: bytes[i..<lineEnd], as: UTF8.self).split(separator: ";")[0], radix: 16), size > 0 else { break }
            let start = lineEnd + 2
            guard start + size <= bytes.count else { break }
            out += bytes[start..<(start + size)]
            i = start + size + 2
        }
        return out
    }
}

/// A WebSocket client (RFC 6455) on a non-blocking TCP socket driven by the load tool's poller:
/// the opening handshake (Sec-WebSocket-Accept checked), masked text frames out, text frames in
/// (fragments joined), ping answered, close noted.
final class WebSocketClient {
    enum State: Equatable { case handshaking, open, closed(String) }
    let fd: Int32
    private(set) var state: State = .handshaking
    private var input: [UInt8] = []
    private var output: [UInt8] = []
    private var fragments: [UInt8] = []
    private let expectedAccept: String
    /// Events received (text frames that are events of the contract; others are counted).
    var onMessage: ((ServerEvent) -> Void)?
    private(set) var undecoded = 0
    static let maxMessage = 1 << 20

    init(url: PlainURL) throws {
        fd = try Sockets.connectedTCP(to: url.address, nonBlocking: true)
        var keyBytes = [UInt8](repeating: 0, count: 16)
        for i in keyBytes.indices { keyBytes[i] = UInt8.random(in: 0...255) }
        let key = Data(keyBytes).base64EncodedString()
        expectedAccept = Self.accept(for: key)
        let request = "GET \(url.target) HTTP/1.1\r\nHost: \(url.hostHeader)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: 13\r\n\r\n"
        output = Array(request.utf8)
    }

    deinit { close(fd) }

    static func accept(for key: String) -> String {
        let text = Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8)
        var digest = [UInt8](repeating: 0, count: 20)
        _ = text.withUnsafeBufferPointer { t in digest.withUnsafeMutableBufferPointer { d in SHA1(t.baseAddress, t.count, d.baseAddress) } }
        return Data(digest).base64EncodedString()
    }

    var wantsWrite: Bool { !output.isEmpty }

    func send(_ event: ClientEvent) {
        if case .closed = state { return }
        guard let text = try? event.encoded() else { return }
        frame(opcode: 0x1, payload: Array(text.utf8))
    }

    private func frame(opcode: UInt8, payload: [UInt8]) {
        output.append(0x80 | opcode)
        let n = payload.count
        if n < 126 {
            output.append(0x80 | UInt8(n))
        } else if n < 65536 {
            output += [0x80 | 126, UInt8(n >> 8), UInt8(n & 0xff)]
        } else {
            output.append(0x80 | 127)
            for shift in stride(from: 56, through: 0, by: -8) { output.append(UInt8(truncatingIfNeeded: n >> shift)) }
        }
        let mask = (0..<4).map { _ in UInt8.random(in: 0...255) }
        output += mask
        for (i, b) in payload.enumerated() { output.append(b ^ mask[i & 3]) }
    }

    /// Writes what it can. - Returns: false when the connection failed.
    @discardableResult
    func writeReady() -> Bool {
        while !output.isEmpty {
            let n = output.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 {
                output.removeFirst(n)
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return true }
            if n < 0 && errno == EINTR { continue }
            state = .closed("write failed: \(SystemError("send"))")
            return false
        }
        return true
    }

    /// Reads what is waiting and delivers whole messages.
    func readReady() {
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                input += chunk[0..<n]
                if n < chunk.count { break }
                continue
            }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            if n < 0 && errno == EINTR { continue }
            if case .closed = state {} else { state = .closed(n == 0 ? "connection closed by the server" : "\(SystemError("recv"))") }
            break
        }
        process()
    }

    private func process() {
        if state == .handshaking {
            guard let end = ControlClient.headerEnd(input) else { return }
            let head = String(decoding: input[0..<end], as: UTF8.self)
            input.removeFirst(end + 4)
            let lines = head.split(separator: "\r\n")
            let accept = lines.first { $0.lowercased().hasPrefix("sec-websocket-accept:") }
                .map { $0.split(separator: ":", maxSplits: 1)[1].trimmingCharacters(in: .whitespaces) }
            guard lines.first?.contains(" 101 ") == true, accept == expectedAccept else {
                state = .closed("WebSocket handshake refused: \(lines.first ?? "")")
                return
            }
            state = .open
        }
        while case .open = state, let (fin, opcode, payload, used) = Self.parseFrame(input) {
            input.removeFirst(used)
            switch opcode {
            case 0x0, 0x1, 0x2:
                fragments += payload
                guard fragments.count <= Self.maxMessage else {
                    state = .closed("message too large")
                    return
                }
                if fin {
                    let message = fragments
                    fragments.removeAll()
                    if let event = ServerEvent.decode(String(decoding: message, as: UTF8.self)) {
                        onMessage?(event)
                    } else {
                        undecoded += 1
                    }
                }
            case 0x8:
                let code = payload.count >= 2 ? Int(payload[0]) << 8 | Int(payload[1]) : 1005
                let reason = payload.count > 2 ? String(decoding: payload[2...], as: UTF8.self) : ""
                state = .closed("closed by the server (\(code) \(reason))")
            case 0x9:
                frame(opcode: 0xA, payload: payload)
            default:
                break
            }
        }
    }

    /// One server frame (unmasked) from the start of `bytes`: (fin, opcode, payload, bytes used).
    static func parseFrame(_ bytes: [UInt8]) -> (Bool, UInt8, [UInt8], Int)? {
        guard bytes.count >= 2 else { return nil }
        let fin = bytes[0] & 0x80 != 0
        let opcode = bytes[0] & 0x0f
        let masked = bytes[1] & 0x80 != 0
        var length = Int(bytes[1] & 0x7f)
        var offset = 2
        if length == 126 {
            guard bytes.count >= 4 else { return nil }
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            offset = 4
        } else if length == 127 {
            guard bytes.count >= 10 else { return nil }
            length = 0
            for i in 2..<10 { length = length << 8 | Int(bytes[i]) }
            offset = 10
            guard length <= maxMessage else { return (true, 0x8, [], bytes.count) }
        }
        var mask: [UInt8] = []
        if masked {
            guard bytes.count >= offset + 4 else { return nil }
            mask = Array(bytes[offset..<(offset + 4)])
            offset += 4
        }
        guard bytes.count >= offset + length else { return nil }
        var payload = Array(bytes[offset..<(offset + length)])
        if masked { for i in payload.indices { payload[i] ^= mask[i & 3] } }
        return (fin, opcode, payload, offset + length)
    }
}
