import Hummingbird

/// Answers requests no route takes in the contract's error shape: the router's own 404 has an
/// empty body, and it answers a known path asked with a method it does not serve with 404 too.
/// Here a path of `routes` gets 405 `method_not_allowed` with `Allow`; any other path 404 `not_found`.
/// Added to the router before every route: Hummingbird runs the router's middleware for unmatched
/// requests as well.
struct UnroutedRequestMiddleware<Context: RequestContext>: RouterMiddleware {
    let routes: [APIRoute]

    /// The methods a route serves at `path`, empty for a path nothing serves.
    func methods(at path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/")
        return routes.first { $0.matches(segments) }?.methods ?? []
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound {
            // Only the router throws a bare HTTPError(.notFound): the API's own routes answer theirs as APIError.
            let allowed = methods(at: request.uri.path)
            guard allowed.isEmpty else {
                let allow = allowed.map(\.rawValue).joined(separator: ", ")
                throw APIError(.methodNotAllowed, "method_not_allowed", "\(request.method.rawValue) is not served here; allowed: \(allow)",
                               headers: [.allow: allow])
            }
            throw APIError(.notFound, "not_found", "no route for this path")
        }
    }
}

/// A path template (`:name` segments match any one segment) and the methods served there.
struct APIRoute: Sendable {
    let segments: [Substring]
    let methods: [HTTPRequest.Method]

    init(_ path: String, _ methods: [HTTPRequest.Method]) {
        segments = path.split(separator: "/")
        self.methods = methods
    }

    func matches(_ path: [Substring]) -> Bool {
        path.count == segments.count && zip(segments, path).allSatisfy { $0.hasPrefix(":") ? !$1.isEmpty : $0 == $1 }
    }
}
