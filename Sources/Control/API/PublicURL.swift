import Foundation

/// `SFU_PUBLIC_URL`: the base URL clients reach the server at (behind a TLS proxy:
/// `https://sfu.example.org` or with a path prefix `https://example.org/sfu`). The `signaling_url`
/// handed out is built from it (`wss://sfu.example.org/v1/signal?token=...`) instead of `ws://` and
/// the request's Host header, which behind a proxy is the proxy's upstream address.
package struct PublicURL: Sendable, Equatable {
    /// `ws://` or `wss://`, the host (and port), and the path prefix without a trailing slash.
    package let webSocketBase: String

    /// http(s) or ws(s), a host, an optional port and path; no query, fragment or user info.
    package init?(_ text: String) {
        guard let components = URLComponents(string: text.trimmingCharacters(in: .whitespaces)),
              let scheme = components.scheme?.lowercased(), let host = components.host, !host.isEmpty,
              components.query == nil, components.fragment == nil, components.user == nil, components.password == nil
        else { return nil }
        let secure: Bool
        switch scheme {
        case "https", "wss": secure = true
        case "http", "ws": secure = false
        default: return nil
        }
        let port = components.port.map { ":\($0)" } ?? ""
        var path = components.percentEncodedPath
        while path.hasSuffix("/") { path.removeLast() }
        let hostText = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        webSocketBase = (secure ? "wss://" : "ws://") + hostText + port + path
    }
}
