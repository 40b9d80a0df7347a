import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import SFU

/// `/v1/echo`: WebSocket signaling for the echo endpoint, in the PROTOCOL.md message shape
/// (`{"event": ..., "data": {...}}`). The client sends `webrtc_offer` (target publisher) and gets
/// `webrtc_answer`; `ice_candidate` is accepted and ignored (we are ICE-lite and learn the peer's
/// address from its checks); anything malformed gets an `error` event and the connection stays open.
enum EchoSignaling {
    static let maxMessageSize = 64 * 1024

    static func handle(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, echo: EchoService, logger: Logger) async throws {
        var handle: EchoService.Handle?
        defer { if let handle { echo.close(handle) } }
        var messages = inbound.messages(maxSize: maxMessageSize).makeAsyncIterator()
        while true {
            let message: WebSocketMessage?
            do {
                message = try await messages.next()
            } catch {
                // Oversized frames or a protocol error end the connection.
                try? await send(outbound, error: "bad_message", "\(error)")
                return
            }
            guard let message else { return }
            guard case .text(let text) = message else {
                try await send(outbound, error: "bad_message", "messages are JSON text frames")
                continue
            }
            guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)),
                  let event = object["event"]?.string
            else {
                try await send(outbound, error: "bad_message", "expected a JSON object {\"event\": ..., \"data\": {...}}")
                continue
            }
            let data = object["data"]?.object ?? [:]
            switch event {
            case "webrtc_offer":
                guard let sdp = data["sdp"]?.string else {
                    try await send(outbound, error: "bad_request", "webrtc_offer needs data.sdp (a string)")
                    continue
                }
                if let target = data["target"]?.string, target != "publisher" {
                    try await send(outbound, error: "bad_request", "the echo endpoint only takes a publisher offer")
                    continue
                }
                guard handle == nil else {
                    try await send(outbound, error: "renegotiation_not_supported", "the echo session is already negotiated; open a new connection")
                    continue
                }
                do {
                    let opened = try await echo.open(offer: sdp)
                    handle = opened
                    try await send(outbound, .webrtcAnswer(.init(target: "publisher", sdp: opened.answer)))
                } catch let error as EchoSession.Error {
                    try await send(outbound, error: "bad_offer", error.description)
                } catch {
                    logger.warning("echo session failed", metadata: ["error": "\(error)"])
                    try await send(outbound, error: "internal_error", "could not create the session")
                }
            case "ice_candidate":
                continue
            case "leave_room":
                return
            default:
                try await send(outbound, error: "unknown_event", "unknown event '\(event.prefix(64))'")
            }
        }
    }

    static func send(_ outbound: WebSocketOutboundWriter, _ event: ServerEvent) async throws {
        try await outbound.write(.text(try event.encoded()))
    }

    static func send(_ outbound: WebSocketOutboundWriter, error code: String, _ message: String) async throws {
        try await send(outbound, .error(.init(code: code, message: message)))
    }
}
