import DTLS
import Foundation

/// One entry of `ice_servers` (PROTOCOL.md additions): `{urls, username?, credential?}`, the shape of
/// a browser's RTCIceServer.
package struct ICEServerEntry: Codable, Sendable, Equatable {
    package var urls: [String]
    package var username: String?
    package var credential: String?

    package init(urls: [String], username: String? = nil, credential: String? = nil) {
        self.urls = urls
        self.username = username
        self.credential = credential
    }
}

/// What clients are told to use for ICE: the configured STUN/TURN URLs as given (`SFU_ICE_SERVERS`),
/// and with a TURN secret (`SFU_TURN_URLS`, `SFU_TURN_SECRET`, `SFU_TURN_TTL_S`) the TURN URLs with
/// credentials for that user that expire, in the scheme coturn checks with `use-auth-secret`
/// (the "TURN REST API" draft, draft-uberti-behave-turn-rest-00): username
/// `<expiry unix time>:<user_id>`, credential base64(HMAC-SHA1(secret, username)). The server
/// never sees TURN traffic; coturn verifies the credential with the same secret.
package struct ICEServerDirectory: Sendable, Equatable {
    package struct TURN: Sendable, Equatable {
        package var urls: [String]
        package var secret: String
        package var ttlSeconds: Int

        package init(urls: [String], secret: String, ttlSeconds: Int = TURN.defaultTTLSeconds) {
            self.urls = urls
            self.secret = secret
            self.ttlSeconds = ttlSeconds
        }

        /// `SFU_TURN_TTL_S`'s default: a day.
        package static let defaultTTLSeconds = 86_400

        /// The credential for `username`: base64(HMAC-SHA1(secret, username)).
        package func credential(username: String) -> String {
            let mac = HMAC(digest: .sha1, key: Array(secret.utf8))?.authenticate(Array(username.utf8)) ?? []
            return Data(mac).base64EncodedString()
        }

        /// `<now + ttl>:<user_id>` and its credential.
        package func entry(userID: String, nowSeconds: Int64) -> ICEServerEntry {
            let username = "\(nowSeconds + Int64(ttlSeconds)):\(userID)"
            return ICEServerEntry(urls: urls, username: username, credential: credential(username: username))
        }
    }

    package var urls: [String]
    package var turn: TURN?

    package init(urls: [String] = [], turn: TURN? = nil) {
        self.urls = urls
        self.turn = turn
    }

    /// The `ice_servers` for `userID`: one entry with the plain URLs (none when there are none) and,
    /// with a TURN secret, one with the TURN URLs and that user's credentials.
    package func servers(userID: String, nowSeconds: Int64) -> [ICEServerEntry] {
        var list = urls.isEmpty ? [] : [ICEServerEntry(urls: urls)]
        if let turn { list.append(turn.entry(userID: userID, nowSeconds: nowSeconds)) }
        return list
    }
}

extension ICEServerDirectory: ExpressibleByArrayLiteral {
    /// Plain STUN/TURN URLs, no TURN secret.
    package init(arrayLiteral urls: String...) { self.init(urls: urls) }
}
