import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import SFU
import Testing
@testable import Control

/// `ice_servers` with TURN credentials in coturn's `use-auth-secret` scheme (the TURN REST API draft).
@Suite("ICE servers and TURN credentials")
struct ICEServerDirectoryTests {
    static let secret = "turn-shared-secret-0123456789-abcdef"
    let turn = ICEServerDirectory.TURN(urls: ["turn:turn.example:3478?transport=udp", "turns:turn.example:5349"], secret: Self.secret, ttlSeconds: 86_400)

    @Test func credentialsAreTheRESTScheme() {
        let entry = turn.entry(userID: "dr-1", nowSeconds: 1_700_000_000)
        #expect(entry.urls == turn.urls)
        #expect(entry.username == "1700086400:dr-1")
        // Python: base64(hmac.new(secret, b"1700086400:dr-1", sha1).digest()), what coturn computes.
        #expect(entry.credential == "jqBIC0Iq+JlkaZqa4ZXW/BfyCRk=")
        // Another user, another time, another secret: another credential.
        #expect(turn.entry(userID: "dr-2", nowSeconds: 1_700_000_000).credential != entry.credential)
        #expect(turn.entry(userID: "dr-1", nowSeconds: 1_700_000_001).credential != entry.credential)
        var other = turn
        other.secret += "x"
        #expect(other.entry(userID: "dr-1", nowSeconds: 1_700_000_000).credential != entry.credential)
    }

    @Test func serversListPlainURLsThenTheUsersTURN() {
        let plain: ICEServerDirectory = ["stun:stun.example:3478"]
        #expect(plain.servers(userID: "u", nowSeconds: 0) == [ICEServerEntry(urls: ["stun:stun.example:3478"])])
        #expect(ICEServerDirectory(urls: []).servers(userID: "u", nowSeconds: 0).isEmpty)
        let both = ICEServerDirectory(urls: ["stun:stun.example:3478"], turn: turn)
        let list = both.servers(userID: "pat-7", nowSeconds: 100)
        #expect(list.count == 2 && list[0] == ICEServerEntry(urls: ["stun:stun.example:3478"]))
        #expect(list[1].username == "86500:pat-7" && list[1].credential == turn.credential(username: "86500:pat-7"))
    }

    @Test func joinedRoomCarriesTheJoiningUsersCredentials() throws {
        let peer = PeerInfo(peerID: "pe_1", userID: "pat-7", name: "P", role: "patient", canPublish: true, canSubscribe: true)
        let event = ServerEvent(RoomSignal.joined(roomID: "rm_1", peer: peer, participants: []),
                                iceServers: ICEServerDirectory(turn: turn), nowSeconds: 1_000)
        guard case .joinedRoom(let joined) = event else {
            Issue.record("not joined_room: \(event)")
            return
        }
        #expect(joined.iceServers == [turn.entry(userID: "pat-7", nowSeconds: 1_000)])
        let text = try event.encoded()
        #expect(text.contains(#""ice_servers":[{"credential":""#) && text.contains(#""username":"87400:pat-7""#))
        // Without credentials the entry has no username/credential keys at all (not null).
        let plain = try ServerEvent(RoomSignal.joined(roomID: "rm_1", peer: peer, participants: []), iceServers: ["stun:s:3478"]).encoded()
        #expect(plain.contains(#""ice_servers":[{"urls":["stun:s:3478"]}]"#))
    }

    @Test func configurationIsChecked() throws {
        func config(_ env: [String: String]) throws -> ServerConfig {
            var c = ServerConfig()
            try c.apply(environment: env)
            try c.validate()
            return c
        }
        let ok = try config(["SFU_TURN_URLS": "turn:t.example:3478, turns:t.example:5349", "SFU_TURN_SECRET": Self.secret, "SFU_TURN_TTL_S": "600"])
        #expect(ok.iceServerDirectory.turn == ICEServerDirectory.TURN(urls: ["turn:t.example:3478", "turns:t.example:5349"], secret: Self.secret, ttlSeconds: 600))
        #expect(try config([:]).iceServerDirectory.turn == nil)
        #expect(throws: ConfigError.self) { try config(["SFU_TURN_URLS": "turn:t.example:3478"]) }
        #expect(throws: ConfigError.self) { try config(["SFU_TURN_SECRET": Self.secret]) }
        #expect(throws: ConfigError.self) { try config(["SFU_TURN_URLS": "stun:t.example:3478", "SFU_TURN_SECRET": Self.secret]) }
        #expect(throws: ConfigError.self) { try config(["SFU_TURN_URLS": "turn:t.example:3478", "SFU_TURN_SECRET": "short"]) }
        #expect(throws: ConfigError.self) { try config(["SFU_TURN_URLS": "turn:t.example:3478", "SFU_TURN_SECRET": Self.secret, "SFU_TURN_TTL_S": "10"]) }
    }
}

/// `SFU_PUBLIC_URL`: the `signaling_url` handed out behind a TLS proxy.
@Suite("Public URL")
struct PublicURLTests {
    @Test func baseURLsBecomeWebSocketBases() {
        #expect(PublicURL("https://sfu.example.org")?.webSocketBase == "wss://sfu.example.org")
        #expect(PublicURL("https://sfu.example.org/")?.webSocketBase == "wss://sfu.example.org")
        #expect(PublicURL("http://10.0.0.5:8080")?.webSocketBase == "ws://10.0.0.5:8080")
        #expect(PublicURL("wss://example.org:8443/sfu/")?.webSocketBase == "wss://example.org:8443/sfu")
        #expect(PublicURL("ws://[2001:db8::1]:8080")?.webSocketBase == "ws://[2001:db8::1]:8080")
        for bad in ["", "sfu.example.org", "ftp://x.org", "https://", "https://x.org/?a=1", "https://x.org/#f", "https://u:p@x.org"] {
            #expect(PublicURL(bad) == nil, "\(bad)")
        }
    }

    @Test func configurationIsChecked() async throws {
        var config = ServerConfig()
        try config.apply(environment: ["SFU_PUBLIC_URL": "https://sfu.example.org/base/"])
        try config.validate()
        #expect(config.publicURL.flatMap(PublicURL.init)?.webSocketBase == "wss://sfu.example.org/base")
        var bad = ServerConfig()
        #expect(throws: ConfigError.self) {
            try bad.apply(environment: ["SFU_PUBLIC_URL": "sfu.example.org"])
            try bad.validate()
        }
    }
}

/// The token route hands out what the server is configured with: `signaling_url` from
/// `SFU_PUBLIC_URL`, `ice_servers` with the user's TURN credentials (in process, HummingbirdTesting).
@Suite("Token route: signaling_url and ice_servers")
struct TokenRouteTests {
    static let key = "token-route-key-0123456789-abcdefghijk"

    @Test func publicURLAndTURNCredentials() async throws {
        let logger = Logger(label: "token-route")
        let store = try await MetadataStore.open(databaseURL: nil, dataDir: NSTemporaryDirectory() + "sfu-token-\(UUID().uuidString)", logger: logger)
        let turn = ICEServerDirectory.TURN(urls: ["turn:t.example:3478"], secret: ICEServerDirectoryTests.secret, ttlSeconds: 600)
        let api = ControlAPI(store: store, keys: APIKeys([Self.key]), iceServers: ICEServerDirectory(urls: ["stun:s.example:3478"], turn: turn),
                             logger: logger, publicURL: PublicURL("https://sfu.example.org/base"))
        let router = SFUServer(config: ServerConfig(), logger: logger).buildRouter(api: api)
        let auth: HTTPFields = [.authorization: "Bearer \(Self.key)", .contentType: "application/json"]
        try await Application(router: router).test(.router) { client in
            let room = try await client.execute(uri: "/v1/rooms", method: .post, headers: auth, body: ByteBuffer(string: "{}")) { response in
                try JSONDecoder().decode([String: JSONValue].self, from: Data(buffer: response.body))["id"]?.string
            }
            let id = try #require(room)
            let before = Int64(Date().timeIntervalSince1970)
            try await client.execute(uri: "/v1/rooms/\(id)/tokens", method: .post, headers: auth,
                                     body: ByteBuffer(string: #"{"user_id": "pat-9", "role": "patient"}"#)) { response in
                #expect(response.status == .ok)
                let body = try JSONDecoder().decode([String: JSONValue].self, from: Data(buffer: response.body))
                let token = try #require(body["token"]?.string)
                #expect(body["signaling_url"]?.string == "wss://sfu.example.org/base/v1/signal?token=\(token)")
                guard case .array(let servers)? = body["ice_servers"], servers.count == 2,
                      let stun = servers[0].object, let entry = servers[1].object else {
                    Issue.record("ice_servers: \(String(describing: body["ice_servers"]))")
                    return
                }
                #expect(stun["urls"] == .array([.string("stun:s.example:3478")]) && stun["username"] == nil)
                let username = try #require(entry["username"]?.string)
                let expiry = try #require(Int64(username.split(separator: ":")[0]))
                #expect(username.hasSuffix(":pat-9") && (before + 600...before + 602).contains(expiry))
                #expect(entry["credential"]?.string == turn.credential(username: username))
            }
        }
        await store.close()
    }
}
