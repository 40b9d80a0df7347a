import Foundation
import Hummingbird

/// An error answered with the PROTOCOL.md shape: `{"error": {"code": "<snake_case>", "message": "..."}}`.
package struct APIError: HTTPResponseError, Equatable {
    package var status: HTTPResponse.Status
    package var code: String
    package var message: String
    /// Sent with the error besides `Content-Type` (`Allow` of a 405).
    package var headers: HTTPFields

    package init(_ status: HTTPResponse.Status, _ code: String, _ message: String, headers: HTTPFields = [:]) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    package func response(from request: Request, context: some RequestContext) throws -> Response {
        let body = (try? APIJSON.data(ErrorBody(error: .init(code: code, message: message)))) ?? Data()
        var headers = self.headers
        headers[.contentType] = "application/json; charset=utf-8"
        if status == .unauthorized { headers[.wwwAuthenticate] = "Bearer" }
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    package static func badRequest(_ message: String) -> APIError { APIError(.badRequest, "bad_request", message) }
    package static func notFound(_ what: String) -> APIError { APIError(.notFound, "not_found", "\(what) not found") }
    package static let unauthorized = APIError(.unauthorized, "unauthorized", "missing or invalid API key (Authorization: Bearer <key>)")
}

/// Turns any error a handler throws into the PROTOCOL.md error shape (Hummingbird's own errors,
/// such as a body over the size limit, included), so clients always get one format.
struct ErrorShapeMiddleware<Context: RequestContext>: RouterMiddleware {
    static func code(for status: HTTPResponse.Status) -> String {
        switch status {
        case .contentTooLarge: "body_too_large"
        case .notFound: "not_found"
        case .methodNotAllowed: "method_not_allowed"
        default: status.code >= 500 ? "internal_error" : "bad_request"
        }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            throw APIError(error.status, Self.code(for: error.status), error.body ?? error.status.reasonPhrase)
        } catch let error as HTTPResponseError {
            throw APIError(error.status, Self.code(for: error.status), error.status.reasonPhrase)
        } catch {
            context.logger.error("request failed", metadata: ["error": "\(error)"])
            throw APIError(.internalServerError, "internal_error", "internal error")
        }
    }
}
