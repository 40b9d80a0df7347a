import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOEmbedded
import Testing
@testable import Control

/// hummingbird-websocket's `ws` route keeps the request context in the context's own handler
/// reference, a cycle that kept every upgraded connection's context (logger, metadata) alive for the
/// life of the process. ``SFURequestContext`` keeps the reference in a slot the route empties.
@Suite struct WebSocketContextTests {
    /// Runs the route's HTTP half (what Hummingbird does before the upgrade) and returns the
    /// context's slot weakly, after `release` if asked.
    static func upgradeRequest(release: Bool) async throws -> (status: HTTPResponse.Status, slot: WeakSlot) {
        let router = Router(context: SFURequestContext.self)
        router.webSocket("/ws") { _, _ in .upgrade([:]) } onUpgrade: { _, _, _ in }
        let responder = router.buildResponder()
        let context = SFURequestContext(source: .init(channel: EmbeddedChannel(), logger: Logger(label: "test")))
        let weak = WeakSlot(context.webSocketSlot)
        let request = Request(head: HTTPRequest(method: .get, scheme: "http", authority: "localhost", path: "/ws"), body: RequestBody(buffer: ByteBuffer()))
        let response = try await responder.respond(to: request, context: context)
        if release { context.webSocketSlot.release() }
        return (response.status, weak)
    }

    final class WeakSlot: @unchecked Sendable {
        weak var slot: WebSocketHandlerSlot?
        init(_ slot: WebSocketHandlerSlot) { self.slot = slot }
    }

    @Test func theRouteStoresItsContextInTheContextItself() async throws {
        // Without the release the context outlives the request: the cycle this type works around
        // (if a hummingbird-websocket release fixes it, this fails and the workaround can go).
        let (status, weak) = try await Self.upgradeRequest(release: false)
        #expect(status == .ok)
        #expect(weak.slot != nil)
    }

    @Test func releasingTheSlotFreesTheContext() async throws {
        let (status, weak) = try await Self.upgradeRequest(release: true)
        #expect(status == .ok)
        #expect(weak.slot == nil)
    }
}
