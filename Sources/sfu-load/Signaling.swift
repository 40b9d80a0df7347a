#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import AsyncHTTPClient
import Control
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SFU
import Synchronization
import WSClient

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

/// The control API through async-http-client (setup only: a few requests per participant, made
/// from the runner's thread, which waits for each answer).
struct ControlClient {
    let base: PlainURL
    let apiKey: String

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    // The bodies sent are the server's own request types (Control/API/APIRequests.swift).

    /// What the tool reads of a room and of a token.
    struct Room: Decodable { var id: String }
    struct Token: Decodable { var signalingURL: String }

    /// At most this much of an answer is read (ours are a few hundred bytes).
    static let maxResponseBytes = 1 << 20

    func createRoom(name: String, maxParticipants: Int) throws -> String {
        let room = try call(.POST, "/v1/rooms", CreateRoomRequest(name: name, maxParticipants: maxParticipants, emptyTimeoutS: 600), expect: 201)
        guard let id = JSON.decode(Room.self, room)?.id else { throw Failure(description: "room without id: \(String(decoding: room, as: UTF8.self))") }
        return id
    }

    /// The signaling URL (token included) for `userID` in `room`.
    func signalingURL(room: String, userID: String, role: Role) throws -> String {
        let token = try call(.POST, "/v1/rooms/\(room)/tokens", MintTokenRequest(userID: userID, role: role, ttlS: 3600), expect: nil)
        guard let url = JSON.decode(Token.self, token)?.signalingURL else {
            throw Failure(description: "token without signaling_url: \(String(decoding: token, as: UTF8.self))")
        }
        return url
    }

    func deleteRoom(_ id: String) {
        _ = try? call(.DELETE, "/v1/rooms/\(id)", nil as CreateRoomRequest?, expect: nil)
    }

    /// One request; the response body's bytes. Blocks the calling thread (never an event loop's).
    func call(_ method: HTTPMethod, _ path: String, _ body: (some Encodable)?, expect: Int?) throws -> [UInt8] {
        var headers = HTTPHeaders([("Authorization", "Bearer \(apiKey)")])
        if body != nil { headers.add(name: "Content-Type", value: "application/json") }
        let request = try HTTPClient.Request(url: "http://\(base.hostHeader)\(path)", method: method, headers: headers,
                                             body: body.map { .bytes(JSON.encode($0)) })
        let response: HTTPClient.Response
        do {
            response = try HTTPClient.shared.execute(request: request, deadline: .now() + .seconds(30)).wait()
        } catch {
            throw Failure(description: "\(method) \(path): \(error)")
        }
        let bytes = response.body.map { Array($0.readableBytesView.prefix(Self.maxResponseBytes)) } ?? []
        let status = Int(response.status.code)
        let ok = expect.map { status == $0 } ?? (200..<300).contains(status)
        guard ok else { throw Failure(description: "\(method) \(path) -> \(status) \(String(decoding: bytes, as: UTF8.self))") }
        return bytes
    }
}

/// The signaling WebSocket of one simulated participant, through the WebSocket client of
/// hummingbird-project/swift-websocket, bridged into the load tool's single-threaded poller: the
/// client runs on NIO's event loops, queues what it receives and announces it on a pipe the
/// poller watches (``fd``); what the tool sends goes to the connection's writer through a stream.
/// Everything but the shared ``Mailbox`` is used on the runner's thread only.
final class SignalingSocket {
    enum State: Equatable, Sendable { case handshaking, open, closed(String) }

    /// What the connection's task and the runner's thread share.
    final class Mailbox: Sendable {
        struct Contents {
            var state = State.handshaking
            var messages: [String] = []
        }
        let contents = Mutex(Contents())
        /// A pipe's read end, readable when something arrived or the state changed (a byte per
        /// change; a full pipe is readable anyway, so a write that would block is dropped).
        let eventFD: Int32
        private let signalFD: Int32

        init() throws {
            var ends: [Int32] = [0, 0]
            guard pipe(&ends) == 0 else { throw SystemError("pipe") }
            for fd in ends {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            }
            eventFD = ends[0]
            signalFD = ends[1]
        }

        deinit {
            close(eventFD)
            close(signalFD)
        }

        func update(_ change: (inout Contents) -> Void) {
            contents.withLock { change(&$0) }
            var one: UInt8 = 1
            _ = write(signalFD, &one, 1)
        }
    }

    /// The poller watches this: readable when ``readReady()`` has something to deliver.
    var fd: Int32 { mailbox.eventFD }
    private(set) var state = State.handshaking
    /// Events received (text frames that are events of the contract; others are counted).
    var onMessage: ((ServerEvent) -> Void)?
    private(set) var undecoded = 0
    /// The largest message accepted from the server (the server's own limit is 256 KiB).
    static let maxMessage = 1 << 20

    private let mailbox: Mailbox
    private let outgoing: AsyncStream<String>.Continuation
    private let connection: Task<Void, Never>

    init(url: String) throws {
        let mailbox = try Mailbox()
        let pipe = AsyncStream<String>.makeStream()
        let stream = pipe.stream
        self.mailbox = mailbox
        self.outgoing = pipe.continuation
        let logger = Logger(label: "sfu-load.signaling")
        connection = Task.detached { await SignalingSocket.run(url: url, mailbox: mailbox, outgoing: stream, logger: logger) }
    }

    /// The connection's life, on NIO's event loops: opens, relays both ways, notes how it ended.
    private static func run(url: String, mailbox: Mailbox, outgoing: AsyncStream<String>, logger: Logger) async {
        do {
            let close = try await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: maxMessage), logger: logger) { inbound, outbound, _ in
                mailbox.update { $0.state = .open }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await text in outgoing { try await outbound.write(.text(text)) }
                    }
                    for try await message in inbound.messages(maxSize: maxMessage) {
                        let text = SignalingSocket.text(of: message)
                        mailbox.update { $0.messages.append(text) }
                    }
                    group.cancelAll()
                }
            }
            let reason = close.map { "closed by the server (\($0.closeCode) \($0.reason ?? ""))" } ?? "connection closed by the server"
            mailbox.update { $0.state = .closed(reason) }
        } catch {
            let reason = "\(error)"
            mailbox.update { $0.state = .closed(reason) }
        }
    }

    /// A text message's text; "" for a binary one (not an event: counted as undecoded).
    private static func text(of message: WebSocketMessage) -> String {
        switch message {
        case .text(let text): text
        case .binary: ""
        }
    }

    deinit {
        outgoing.finish()
        connection.cancel()
    }

    /// Nothing to write from the poller: the connection's task writes.
    var wantsWrite: Bool { false }

    func send(_ event: ClientEvent) {
        if case .closed = state { return }
        guard let text = try? event.encoded() else { return }
        outgoing.yield(text)
    }

    @discardableResult
    func writeReady() -> Bool {
        if case .closed = state { return false }
        return true
    }

    /// Delivers what arrived (in order) and takes up the connection's state.
    func readReady() {
        var drain = [UInt8](repeating: 0, count: 256)
        while drain.withUnsafeMutableBytes({ read(mailbox.eventFD, $0.baseAddress, $0.count) }) == drain.count {}
        let (newState, messages) = mailbox.contents.withLock { contents -> (State, [String]) in
            defer { contents.messages.removeAll(keepingCapacity: true) }
            return (contents.state, contents.messages)
        }
        for text in messages {
            if let event = ServerEvent.decode(text) {
                onMessage?(event)
            } else {
                undecoded += 1
            }
        }
        state = newState
    }
}
