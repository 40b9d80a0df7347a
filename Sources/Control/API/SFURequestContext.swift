import Hummingbird
import HummingbirdWebSocket
import NIOConcurrencyHelpers

/// The request context of every route, WebSocket upgrades included.
///
/// It exists to break a reference cycle of hummingbird-websocket 2.x: a `router.ws` route stores
/// the request context in the context's own `webSocket` reference (a locked box the context holds),
/// so every upgraded connection's context, its logger and metadata stay alive for the life of the
/// process (~0.5 KB per connection measured with heaptrack; 1,000 signaling sessions leaked ~0.5 MB).
/// Here the reference lives in a ``WebSocketHandlerSlot`` that ``Router/webSocket(_:shouldUpgrade:onUpgrade:)``
/// empties as soon as the upgraded handler starts (Hummingbird has read it by then), which frees the box
/// and with it the context copy it held.
package struct SFURequestContext: RequestContext, WebSocketRequestContext {
    package var coreContext: CoreRequestContextStorage
    let webSocketSlot: WebSocketHandlerSlot

    package var webSocket: WebSocketHandlerReference<SFURequestContext> { webSocketSlot.reference }

    package init(source: Source) {
        coreContext = .init(source: source)
        webSocketSlot = WebSocketHandlerSlot()
    }
}

/// Holds a context's WebSocket handler reference until the upgrade has read it.
final class WebSocketHandlerSlot: Sendable {
    private let box = NIOLockedValueBox(WebSocketHandlerReference<SFURequestContext>())

    var reference: WebSocketHandlerReference<SFURequestContext> { box.withLockedValue { $0 } }

    /// Drops the reference (and the context copy the router stored in it).
    func release() {
        box.withLockedValue { $0 = WebSocketHandlerReference() }
    }
}

extension Router where Context == SFURequestContext {
    /// `ws(_:shouldUpgrade:onUpgrade:)` without the reference cycle (see ``SFURequestContext``).
    @discardableResult
    func webSocket(_ path: RouterPath,
                   shouldUpgrade: @Sendable @escaping (Request, SFURequestContext) async throws -> RouterShouldUpgrade,
                   onUpgrade handler: @escaping WebSocketDataHandler<WebSocketRouterContext<SFURequestContext>>) -> Self {
        ws(path, shouldUpgrade: shouldUpgrade) { inbound, outbound, context in
            context.requestContext.webSocketSlot.release()
            try await handler(inbound, outbound, context)
        }
    }
}
