import AsyncHTTPClient
import DTLS
import Foundation
import Hummingbird
import Logging
import Recorder
import SFU

/// The control API (PROTOCOL.md "Control API") for app backends: rooms and join tokens, backed by
/// the metadata store, live rooms, recordings and snapshots.
package struct ControlAPI: Sendable {
    package let store: MetadataStore
    package let keys: APIKeys
    package let iceServers: ICEServerDirectory
    package let logger: Logger
    package let webhooks: WebhookDispatcher?
    package let media: MediaRuntime?
    /// Live rooms (nil in tests without media): participants, mute, removal, closing.
    package let live: LiveRooms?
    /// `POST /demo/join` (the demo page's token minting) is served: development mode only.
    package let demoEnabled: Bool
    package let recordings: RecordingService?

    /// Defaults for what a create-room request leaves out (docs/API.md).
    package enum Defaults {
        package static let maxParticipants = 6
        package static let emptyTimeoutS = 300
        package static let maxDurationS = 4 * 3600
        package static let tokenTTLS = 3600
        package static let maxTokenTTLS = 86_400
    }

    package static let maxBodyBytes = 64 * 1024

    package init(store: MetadataStore, keys: APIKeys, iceServers: ICEServerDirectory, logger: Logger, webhooks: WebhookDispatcher? = nil,
                media: MediaRuntime? = nil, live: LiveRooms? = nil, demoEnabled: Bool = false, recordings: RecordingService? = nil,
                tokenSecret: String? = nil, tokenPublicKey: ES256VerificationKey? = nil, publicURL: PublicURL? = nil, servesTLS: Bool = false,
                linkSecret: String? = nil, storage: S3Client? = nil) {
        self.storage = storage
        self.links = FileLinks(secret: linkSecret ?? secureRandomBytes(32).map { String(format: "%02x", $0) }.joined())
        self.publicURL = publicURL
        self.servesTLS = servesTLS
        self.signer = JoinTokenSigner(secret: tokenSecret ?? keys.signingSecret, publicKey: tokenPublicKey)
        self.live = live
        self.recordings = recordings
        self.demoEnabled = demoEnabled
        self.webhooks = webhooks
        self.media = media
        self.store = store
        self.keys = keys
        self.iceServers = iceServers
        self.logger = logger
    }

    /// Signs and checks the recording files' links (a key of their own, kept in the store).
    package let links: FileLinks

    /// Deleting recordings (the route and the retention schedule).
    var deletion: RecordingDeletion { RecordingDeletion(store: store, webhooks: webhooks, logger: logger, storage: storage) }
    /// S3 storage, where files with an `object_key` are read from (streamed through this server).
    let storage: S3Client?

    /// Where clients reach this server (`SFU_PUBLIC_URL`), for the `signaling_url` handed out; nil:
    /// `ws://` and the request's Host.
    package let publicURL: PublicURL?

    /// This server speaks HTTPS itself (`SFU_TLS_CERT`): without a public URL, `wss://` and the Host.
    package let servesTLS: Bool

    /// The `signaling_url` for `token`.
    func signalingURL(token: String, request: Request) -> String {
        let base = publicURL?.webSocketBase ?? (servesTLS ? "wss://" : "ws://") + (request.head.authority ?? "127.0.0.1:8080")
        return base + "/v1/signal?token=" + token
    }

    /// Signs and verifies join tokens (`SFU_JWT_SECRET`, else the first API key).
    package let signer: JoinTokenSigner

    /// Opening and closing rooms (shared with the janitor).
    var lifecycle: RoomLifecycle { RoomLifecycle(store: store, webhooks: webhooks, live: live, recordings: recordings, logger: logger) }

    /// Every path the API serves with its methods, and SFUServer's `/healthz`: for 405 and `Allow`
    /// when one is asked with another method (``UnroutedRequestMiddleware``). ControlRoutingTests
    /// checks it against the router both ways (each of these is routed; each route but the static
    /// pages and the WebSocket endpoints is here).
    static let routes: [APIRoute] = [
        .init("/healthz", [.get]), .init("/metrics", [.get]),
        .init("/v1/rooms", [.get, .post]), .init("/v1/rooms/:id", [.get, .delete]), .init("/v1/rooms/:id/tokens", [.post]),
        .init("/v1/rooms/:id/participants", [.get]), .init("/v1/rooms/:id/sessions", [.get]), .init("/v1/rooms/:id/messages", [.get]), .init("/v1/rooms/:id/participants/:user", [.delete]),
        .init("/v1/rooms/:id/participants/:user/mute", [.post]), .init("/v1/rooms/:id/recordings", [.post]),
        .init("/v1/rooms/:id/snapshots", [.post]),
        .init("/v1/recordings", [.get]), .init("/v1/recordings/:id/stop", [.post]),
        .init("/v1/recordings/:id", [.get, .delete]), .init("/v1/recordings/:id/files/:file", [.get]),
        .init("/v1/recordings/:id/files/:file/url", [.post]), .init("/v1/links/:id/:file", [.get]),
        .init("/v1/snapshots", [.get]), .init("/v1/snapshots/:id", [.get]), .init("/v1/snapshots/:id/file", [.get]),
        .init("/v1/rooms/:id/events", [.get]), .init("/v1/events", [.get]), .init("/v1/rooms/:id/quality", [.get]),
        .init("/demo/join", [.post]),
    ]

    func register<Context: RequestContext>(on router: Router<Context>) {
        // First: it wraps every route registered after it and the router's answer for unmatched requests.
        router.add(middleware: UnroutedRequestMiddleware<Context>(routes: Self.routes))
        let auth = APIKeyMiddleware<Context>(keys: keys)
        let metrics = MetricsEndpoint(store: store, media: media, webhooks: webhooks, live: live)
        router.group("metrics").add(middleware: ErrorShapeMiddleware()).add(middleware: auth).get { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: try await metrics.render())))
        }
        let rooms = router.group("v1/rooms").add(middleware: ErrorShapeMiddleware()).add(middleware: auth)
        rooms.post { request, context in try await createRoom(request, context) }
        rooms.get { request, _ in try await listRooms(request) }
        rooms.get(":id") { _, context in try await getRoom(context.parameters.require("id")) }
        rooms.delete(":id") { _, context in try await closeRoom(context.parameters.require("id")) }
        rooms.post(":id/tokens") { request, context in try await mintToken(request, context, room: context.parameters.require("id")) }
        rooms.get(":id/participants") { _, context in try await listParticipants(context.parameters.require("id")) }
        rooms.get(":id/sessions") { _, context in try await listSessions(context.parameters.require("id")) }
        rooms.get(":id/messages") { request, context in try await listMessages(request, room: context.parameters.require("id")) }
        rooms.get(":id/events") { request, context in try await listEvents(request, room: context.parameters.require("id")) }
        rooms.get(":id/quality") { request, context in try await listQuality(request, room: context.parameters.require("id")) }
        router.group("v1/events").add(middleware: ErrorShapeMiddleware()).add(middleware: auth).get { request, _ in try exportEvents(request) }
        rooms.delete(":id/participants/:user") { _, context in
            try await removeParticipant(room: context.parameters.require("id"), user: context.parameters.require("user"))
        }
        rooms.post(":id/participants/:user/mute") { request, context in
            try await muteParticipant(request, context, room: context.parameters.require("id"), user: context.parameters.require("user"))
        }
        rooms.post(":id/recordings") { request, context in try await startRecording(request, context, room: context.parameters.require("id")) }
        let recordings = router.group("v1/recordings").add(middleware: ErrorShapeMiddleware()).add(middleware: auth)
        recordings.get { request, _ in try await listRecordings(request) }
        recordings.get(":id") { _, context in try await getRecording(context.parameters.require("id")) }
        recordings.post(":id/stop") { _, context in try await stopRecording(context.parameters.require("id")) }
        recordings.get(":id/files/:file") { request, context in
            try await recordingFile(request, context, id: context.parameters.require("id"), file: context.parameters.require("file"))
        }
        recordings.delete(":id") { _, context in try await deleteRecording(context.parameters.require("id")) }
        recordings.post(":id/files/:file/url") { request, context in
            try await signFileLink(request, context, id: context.parameters.require("id"), file: context.parameters.require("file"))
        }
        // Signed links work without the API key: the signature is the credential.
        router.group("v1/links").add(middleware: ErrorShapeMiddleware()).get(":id/:file") { request, context in
            try await linkedFile(request, context, id: context.parameters.require("id"), file: context.parameters.require("file"))
        }
        rooms.post(":id/snapshots") { request, context in try await takeSnapshot(request, context, room: context.parameters.require("id")) }
        let snapshots = router.group("v1/snapshots").add(middleware: ErrorShapeMiddleware()).add(middleware: auth)
        snapshots.get { request, _ in try await listSnapshots(request) }
        snapshots.get(":id") { _, context in try await getSnapshot(context.parameters.require("id")) }
        snapshots.get(":id/file") { _, context in try await snapshotFile(context, id: context.parameters.require("id")) }
        router.group("demo").add(middleware: ErrorShapeMiddleware()).post("join") { request, context in
            try await demoJoin(request, context)
        }
    }

    // MARK: handlers

    func createRoom<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        let body = try await decodeBody(CreateRoomRequest.self, request, context, allowEmpty: true)
        var options = RoomLifecycle.Options(name: body.name)
        options.maxParticipants = body.maxParticipants ?? Defaults.maxParticipants
        options.emptyTimeoutS = body.emptyTimeoutS ?? Defaults.emptyTimeoutS
        options.maxDurationS = body.maxDurationS ?? Defaults.maxDurationS
        options.autoRecord = body.autoRecord ?? false
        options.metadata = body.metadata.flatMap(JSONValue.text)
        options.consentRequired = body.recordingConsent == "required"
        let room = try await lifecycle.open(options)
        return try json(.created, RoomBody(room, participants: .sessions([])))
    }

    /// The call history: rooms newest first, open ones by default (`status=closed|all` for the
    /// rest), created in [`from`, `to`), `limit` (100, at most 1000) a page, then `cursor`.
    func listRooms(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        var q = RoomHistoryQuery()
        if let s = query.get("status") {
            guard let status = RoomHistoryQuery.Status(rawValue: s) else { throw APIError.badRequest("status must be open, closed or all") }
            q.status = status
        }
        (q.fromMillis, q.toMillis) = try ListQuery.range(from: query.get("from"), to: query.get("to"))
        q.limit = try ListQuery.limit(query.get("limit"), fallback: 100, max: 1000)
        q.after = try query.get("cursor").map(ListQuery.position(cursor:))
        let page = try await store.roomHistory(q)
        let now = MetadataStore.nowMillis
        let next = page.count == q.limit ? page.last.map { ListQuery.cursor(ListPosition(at: $0.room.createdAt, id: $0.room.id)) } : nil
        return try json(.ok, PageBody(name: "rooms", items: page.map { RoomBody(history: $0, nowMillis: now) }, nextCursor: next))
    }

    /// A room's chat, oldest first, `limit` (1000, at most 10000) a page.
    func listMessages(_ request: Request, room id: String) async throws -> Response {
        guard Self.validID(id), try await store.room(id: id) != nil else { throw APIError.notFound("room") }
        let query = request.uri.queryParameters
        let limit = try ListQuery.limit(query.get("limit"), fallback: 1000, max: 10_000)
        let after = try query.get("cursor").map(ListQuery.position(cursor:))
        let page = try await store.chatMessages(roomID: id, after: after, limit: limit)
        let next = page.count == limit ? page.last.map { ListQuery.cursor(ListPosition(at: $0.at, id: $0.id)) } : nil
        return try json(.ok, PageBody(name: "messages", items: page.map(ChatMessageBody.init), nextCursor: next))
    }

    func getRoom(_ id: String) async throws -> Response {
        guard Self.validID(id), let room = try await store.room(id: id) else { throw APIError.notFound("room") }
        let sessions = try await store.participantSessions(roomID: id).filter { $0.leftAt == nil }
        var participants = RoomBody.sessions(sessions)
        if let liveRoom = live?.existing(id) {
            let snapshot = try await liveRoom.run { $0.snapshot(nowNanos: MediaWorker.nowNanos) }
            participants = .live(snapshot.map(Self.participantBody))
        }
        return try json(.ok, RoomBody(room, participants: participants))
    }

    func closeRoom(_ id: String) async throws -> Response {
        guard Self.validID(id), let room = try await store.room(id: id) else { throw APIError.notFound("room") }
        let closed = try await lifecycle.close(room, reason: .api)
        return try json(.ok, RoomBody(closed, participants: .sessions([])))
    }

    func mintToken<Context: RequestContext>(_ request: Request, _ context: Context, room id: String) async throws -> Response {
        let body = try await decodeBody(MintTokenRequest.self, request, context, allowEmpty: false)
        guard Self.validID(id), let room = try await store.room(id: id) else { throw APIError.notFound("room") }
        guard room.closedAt == nil else { throw APIError(.conflict, "room_closed", "room \(id) is closed") }
        var perms = body.role.defaultPermissions
        if let requested = body.permissions {
            var narrowed: [Permission] = []
            for p in requested {
                guard perms.contains(p) else { throw APIError.badRequest("permission '\(p.rawValue)' is not allowed for role \(body.role.rawValue)") }
                if !narrowed.contains(p) { narrowed.append(p) }
            }
            perms = narrowed
        }
        let ttl = body.ttlS ?? Defaults.tokenTTLS
        let now = Int64(Date().timeIntervalSince1970)
        let claims = JoinClaims(room: id, sub: body.userID, name: body.name ?? body.userID, role: body.role,
                                perms: perms, exp: now + Int64(ttl), iat: now)
        let token = try await signer.sign(claims)
        audit(RoomEvent(roomID: id, at: MetadataStore.nowMillis, kind: "token_issued", userID: body.userID, actor: "api", subject: "user:" + body.userID,
                        data: ["role": body.role.rawValue, "ttl_s": String(ttl), "expires_at": Self.iso8601(claims.exp * 1000)]))
        return try json(.ok, TokenBody(token: token, signalingURL: signalingURL(token: token, request: request),
                                       iceServers: iceServers.servers(userID: body.userID, nowSeconds: now), expiresAt: Self.iso8601(claims.exp * 1000)))
    }

    // MARK: live participants

    func liveRoom(_ id: String) async throws -> LiveRooms.Live? {
        guard Self.validID(id), let room = try await store.room(id: id) else { throw APIError.notFound("room") }
        guard room.closedAt == nil else { return nil }
        return live?.existing(id)
    }

    func listParticipants(_ id: String) async throws -> Response {
        guard let room = try await liveRoom(id) else { return try json(.ok, ParticipantListBody(participants: [])) }
        let snapshot = try await room.run { $0.snapshot(nowNanos: MediaWorker.nowNanos) }
        return try json(.ok, ParticipantListBody(participants: snapshot.map(Self.participantBody)))
    }

    /// Every participant session of a room, open or closed, in join order (the room may be closed).
    func listSessions(_ id: String) async throws -> Response {
        guard Self.validID(id), try await store.room(id: id) != nil else { throw APIError.notFound("room") }
        let now = MetadataStore.nowMillis
        let sessions = try await store.participantSessions(roomID: id).map { ParticipantSessionBody($0, nowMillis: now) }
        return try json(.ok, ParticipantSessionListBody(sessions: sessions))
    }

    func removeParticipant(room id: String, user: String) async throws -> Response {
        guard let room = try await liveRoom(id),
              try await room.run({ $0.remove(userID: user, reason: .removedByApplication, message: "removed from the room through the API") })
        else { throw Self.participantNotFound(user, room: id) }
        // The token it joined with (and any other issued so far) no longer gets it back in.
        live?.revocations.revoke(room: id, user: user, atSeconds: Int64(Date().timeIntervalSince1970))
        audit(RoomEvent(roomID: id, at: MetadataStore.nowMillis, kind: "participant_removed", userID: user, actor: "api", subject: "user:" + user))
        return Response(status: .noContent)
    }

    func muteParticipant<Context: RequestContext>(_ request: Request, _ context: Context, room id: String, user: String) async throws -> Response {
        let body = try await decodeBody(MuteRequest.self, request, context, allowEmpty: false)
        let (kind, muted) = (body.kind, body.muted)
        guard let room = try await liveRoom(id) else { throw Self.participantNotFound(user, room: id) }
        let snapshot: ParticipantSnapshot? = try await room.run { room in
            guard let peerID = room.peerID(userID: user) else { return nil }
            room.setEnabled(peerID: peerID, kind: kind, enabled: !muted, origin: .server, nowNanos: MediaWorker.nowNanos)
            return room.snapshot(nowNanos: MediaWorker.nowNanos).first { $0.peer.peerID == peerID }
        }
        guard let snapshot else { throw Self.participantNotFound(user, room: id) }
        audit(RoomEvent(roomID: id, at: MetadataStore.nowMillis, kind: "participant_muted", userID: user, actor: "api", subject: "user:" + user,
                        data: ["kind": kind.rawValue, "muted": String(muted)]))
        return try json(.ok, Self.participantBody(snapshot))
    }

    static func participantNotFound(_ user: String, room: String) -> APIError {
        APIError(.notFound, "not_found", "participant \(user.prefix(64)) is not connected to room \(room)")
    }

    static func participantBody(_ s: ParticipantSnapshot) -> ParticipantBody {
        ParticipantBody(s, nowMillis: MetadataStore.nowMillis, nowNanos: MediaWorker.nowNanos)
    }

    // MARK: recordings

    func startRecording<Context: RequestContext>(_ request: Request, _ context: Context, room id: String) async throws -> Response {
        let body = try await decodeBody(StartRecordingRequest.self, request, context, allowEmpty: true)
        guard Self.validID(id), try await store.room(id: id) != nil else { throw APIError.notFound("room") }
        let composite: CompositeRecording.Options? = body.mode == .composite ? body.compositeOptions : nil
        guard let recordings else { throw APIError(.serviceUnavailable, "unavailable", "recording needs the media workers") }
        do {
            let record = try await recordings.start(roomID: id, startedBy: nil, composite: composite, metadata: body.metadata.flatMap(JSONValue.text))
            return try json(.created, RecordingBody(record))
        } catch RecordingService.StartError.roomClosed {
            throw APIError(.conflict, "room_closed", "room \(id) is closed")
        } catch RecordingService.StartError.alreadyRecording(let other) {
            throw APIError(.conflict, "recording_active", "room \(id) is already being recorded (\(other))")
        } catch RecordingService.StartError.roomNotFound {
            throw APIError.notFound("room")
        }
    }

    func listRecordings(_ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let room = query.get("room_id")
        var status: RecordingRecord.Status?
        if let s = query.get("status") {
            guard let parsed = RecordingRecord.Status(rawValue: s) else { throw APIError.badRequest("status must be recording, processing, completed, failed or deleted") }
            status = parsed
        }
        if let room, !Self.validID(room) { throw APIError.badRequest("room_id is not a valid id") }
        let list = try await store.recordings(roomID: room, status: status)
        return try json(.ok, RecordingListBody(recordings: list.map(RecordingBody.init)))
    }

    func getRecording(_ id: String) async throws -> Response {
        guard Self.validID(id), let record = try await store.recording(id: id) else { throw APIError.notFound("recording") }
        return try json(.ok, RecordingBody(record))
    }

    func stopRecording(_ id: String) async throws -> Response {
        guard Self.validID(id), try await store.recording(id: id) != nil else { throw APIError.notFound("recording") }
        let stopped: RecordingRecord?
        if let recordings { stopped = try await recordings.stop(id: id) } else { stopped = try await store.recording(id: id) }
        guard let record = stopped else { throw APIError.notFound("recording") }
        return try json(.ok, RecordingBody(record))
    }

    /// `DELETE /v1/recordings/{id}`: the files removed, the metadata kept as `deleted`.
    func deleteRecording(_ id: String) async throws -> Response {
        guard Self.validID(id) else { throw APIError.notFound("recording") }
        do {
            return try json(.ok, RecordingBody(try await deletion.delete(id: id, actor: "api")))
        } catch RecordingDeletion.Failure.notFound {
            throw APIError.notFound("recording")
        } catch RecordingDeletion.Failure.active(let status) {
            throw APIError(.conflict, "recording_active", "recording \(id) is \(status.rawValue): stop it first")
        }
    }

    /// `POST /v1/recordings/{id}/files/{file_id}/url {ttl_s}`: a link to the file that works without
    /// the API key until it expires.
    func signFileLink<Context: RequestContext>(_ request: Request, _ context: Context, id: String, file fileID: String) async throws -> Response {
        let body = try await decodeBody(SignedLinkRequest.self, request, context, allowEmpty: true)
        guard Self.validID(id), Self.validID(fileID), let record = try await store.recording(id: id), record.status != .deleted,
              record.files.contains(where: { $0.id == fileID }) else { throw APIError.notFound("recording file") }
        let expires = Int64(Date().timeIntervalSince1970) + Int64(body.ttlS)
        let path = "/v1/links/\(id)/\(fileID)?expires=\(expires)&signature=\(links.signature(recording: id, file: fileID, expires: expires))"
        return try json(.ok, SignedLinkBody(url: httpBase(request) + path, expiresAt: Self.iso8601(expires * 1000)))
    }

    /// `GET /v1/links/{id}/{file_id}?expires=&signature=`: the file, when the signature is this
    /// server's for that file and expiry and the expiry has not passed; 403 otherwise.
    func linkedFile<Context: RequestContext>(_ request: Request, _ context: Context, id: String, file fileID: String) async throws -> Response {
        let query = request.uri.queryParameters
        guard let expiresText = query.get("expires"), let expires = Int64(expiresText), let signature = query.get("signature"),
              links.verify(signature, recording: id, file: fileID, expires: expires) else {
            throw APIError(.forbidden, "link_invalid", "the link's signature does not match this file and expiry")
        }
        guard expires > Int64(Date().timeIntervalSince1970) else { throw APIError(.forbidden, "link_expired", "the link expired") }
        return try await recordingFile(request, context, id: id, file: fileID, actor: "link")
    }

    /// `http(s)://host` as clients reach this server: `SFU_PUBLIC_URL`, else the request's Host.
    func httpBase(_ request: Request) -> String {
        if let base = publicURL?.webSocketBase {
            return base.hasPrefix("wss://") ? "https://" + base.dropFirst(6) : "http://" + base.dropFirst(5)
        }
        return (servesTLS ? "https://" : "http://") + (request.head.authority ?? "127.0.0.1:8080")
    }

    /// The file's bytes (WebM, or Matroska for H.264), with single-range requests (`Range: bytes=a-b`, `a-`, `-n`).
    func recordingFile<Context: RequestContext>(_ request: Request, _ context: Context, id: String, file fileID: String,
                                                actor: String = "api") async throws -> Response {
        guard Self.validID(id), Self.validID(fileID), let record = try await store.recording(id: id),
              let file = record.files.first(where: { $0.id == fileID }) else { throw APIError.notFound("recording file") }
        guard record.status != .deleted else { throw APIError(.gone, "deleted", "recording \(id) was deleted") }
        if let key = file.objectKey {
            return try await s3File(request, record: record, file: file, key: key, actor: actor)
        }
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: file.path), let size = (attributes[.size] as? NSNumber)?.intValue else {
            throw APIError(.notFound, "not_found", "the file of \(fileID) is not on disk")
        }
        var headers: HTTPFields = [.contentType: file.format == "mkv" ? "video/x-matroska" : "video/webm", .acceptRanges: "bytes"]
        var particulars = ["file_id": file.id, "file_name": file.fileName]
        if let range = request.headers[.range] { particulars["range"] = String(range.prefix(100)) }
        audit(RoomEvent(roomID: record.roomID, at: MetadataStore.nowMillis, kind: "recording_downloaded", actor: actor, subject: "recording:" + id,
                        data: particulars))
        headers[.contentDisposition] = "attachment; filename=\"\(file.fileName)\""
        let io = FileIO()
        switch Self.byteRange(request.headers[.range], size: size) {
        case .whole:
            headers[.contentLength] = String(size)
            return Response(status: .ok, headers: headers, body: try await io.loadFile(path: file.path, context: context))
        case .unsatisfiable:
            throw APIError(.rangeNotSatisfiable, "range_not_satisfiable", "the range is outside the file or malformed", headers: [.contentRange: "bytes */\(size)"])
        case .part(let range):
            headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound)/\(size)"
            headers[.contentLength] = String(range.count)
            return Response(status: .partialContent, headers: headers, body: try await io.loadFile(path: file.path, range: range, context: context))
        }
    }

    /// A file in S3 storage, streamed from S3 through this server (the client needs no access to the
    /// bucket): the `Range` header is passed on, and S3's status (200, 206, 416), length and range
    /// come back; S3 unreachable or refusing is 502 `storage_unavailable`.
    func s3File(_ request: Request, record: RecordingRecord, file: RecordingFileRecord, key: String, actor: String) async throws -> Response {
        guard let storage else {
            throw APIError(.serviceUnavailable, "storage_unavailable", "the file is in S3 storage and this server has no SFU_STORAGE_URL")
        }
        let answer: HTTPClientResponse
        do {
            answer = try await storage.get(key: key, range: request.headers[.range])
        } catch {
            throw APIError(.badGateway, "storage_unavailable", "S3 storage did not answer: \(error)")
        }
        let status = Int(answer.status.code)
        if status == 416 {
            let total = answer.headers.first(name: "Content-Range") ?? "bytes */\(file.sizeBytes)"
            throw APIError(.rangeNotSatisfiable, "range_not_satisfiable", "the range is outside the file or malformed", headers: [.contentRange: total])
        }
        guard status == 200 || status == 206 else {
            _ = try? await answer.body.collect(upTo: 64 * 1024)
            throw APIError(.badGateway, "storage_unavailable", "S3 storage answered \(status) for \(file.id)")
        }
        var headers: HTTPFields = [.contentType: file.format == "mkv" ? "video/x-matroska" : "video/webm", .acceptRanges: "bytes"]
        headers[.contentDisposition] = "attachment; filename=\"\(file.fileName)\""
        if let length = answer.headers.first(name: "Content-Length") { headers[.contentLength] = length }
        if let range = answer.headers.first(name: "Content-Range") { headers[.contentRange] = range }
        var particulars = ["file_id": file.id, "file_name": file.fileName, "storage": "s3"]
        if let range = request.headers[.range] { particulars["range"] = String(range.prefix(100)) }
        audit(RoomEvent(roomID: record.roomID, at: MetadataStore.nowMillis, kind: "recording_downloaded", actor: actor, subject: "recording:" + record.id,
                        data: particulars))
        return Response(status: status == 206 ? .partialContent : .ok, headers: headers, body: ResponseBody(asyncSequence: answer.body))
    }

    /// What a `Range` header asks of a file.
    enum ByteRangeRequest: Equatable {
        /// No range, or one the server ignores: the whole file (200).
        case whole
        /// One satisfiable range (206).
        case part(ClosedRange<Int>)
        /// A `bytes` range outside the file or malformed (416).
        case unsatisfiable
    }

    // MARK: snapshots

    func takeSnapshot<Context: RequestContext>(_ request: Request, _ context: Context, room id: String) async throws -> Response {
        let body = try await decodeBody(SnapshotRequest.self, request, context, allowEmpty: false)
        let (userID, source, format) = (body.userID, body.source, body.format)
        guard Self.validID(id) else { throw APIError.notFound("room") }
        guard let recordings else { throw APIError(.serviceUnavailable, "unavailable", "snapshots need the media workers") }
        do {
            let record = try await recordings.takeSnapshot(roomID: id, userID: userID, source: source, format: format)
            return try json(.created, SnapshotBody(record))
        } catch let error as RecordingService.SnapshotError {
            switch error {
            case .roomNotFound: throw APIError.notFound("room")
            case .participantNotFound: throw Self.participantNotFound(userID, room: id)
            case .noVideo(let source): throw APIError(.conflict, "no_video", "\(userID.prefix(64)) publishes no \(source) video")
            case .keyframeTimeout: throw APIError(.gatewayTimeout, "keyframe_timeout", "no keyframe came from the publisher within 3 s")
            case .failed(let message): throw APIError(.internalServerError, "snapshot_failed", message)
            }
        }
    }

    func listSnapshots(_ request: Request) async throws -> Response {
        let room = request.uri.queryParameters.get("room_id")
        if let room, !Self.validID(room) { throw APIError.badRequest("room_id is not a valid id") }
        let list = try await store.snapshots(roomID: room)
        return try json(.ok, SnapshotListBody(snapshots: list.map(SnapshotBody.init)))
    }

    func getSnapshot(_ id: String) async throws -> Response {
        guard Self.validID(id), let record = try await store.snapshot(id: id) else { throw APIError.notFound("snapshot") }
        return try json(.ok, SnapshotBody(record))
    }

    func snapshotFile<Context: RequestContext>(_ context: Context, id: String) async throws -> Response {
        guard Self.validID(id), let record = try await store.snapshot(id: id) else { throw APIError.notFound("snapshot") }
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: record.path), let size = (attributes[.size] as? NSNumber)?.intValue else {
            throw APIError(.notFound, "not_found", "the file of \(id) is not on disk")
        }
        let format = SnapshotFormat(rawValue: record.format) ?? .jpeg
        var headers: HTTPFields = [.contentType: format.contentType, .contentLength: String(size)]
        headers[.contentDisposition] = "attachment; filename=\"\(id).\(format.fileExtension)\""
        return Response(status: .ok, headers: headers, body: try await FileIO().loadFile(path: record.path, context: context))
    }

    /// What the `Range` header asks of a file of `size` bytes: one `bytes=a-b`, `bytes=a-` or
    /// `bytes=-n` range is served. RFC 9110 14.2: a range unit the server does not know must be
    /// ignored, and several ranges may be; both get the whole file.
    static func byteRange(_ header: String?, size: Int) -> ByteRangeRequest {
        guard let header else { return .whole }
        let unit = "bytes="
        guard header.prefix(unit.count).lowercased() == unit else { return .whole }
        let spec = header.dropFirst(unit.count)
        guard !spec.contains(",") else { return .whole }
        guard size > 0, let dash = spec.firstIndex(of: "-") else { return .unsatisfiable }
        let first = spec[..<dash].trimmingCharacters(in: .whitespaces), last = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        if first.isEmpty {
            guard let n = Int(last), n > 0 else { return .unsatisfiable }
            return .part(max(0, size - n)...(size - 1))
        }
        guard let a = Int(first), a >= 0, a < size else { return .unsatisfiable }
        if last.isEmpty { return .part(a...(size - 1)) }
        guard let b = Int(last), b >= a else { return .unsatisfiable }
        return .part(a...min(b, size - 1))
    }

    // MARK: quality over time

    /// The room's stored quality samples in time order (every `SFU_QUALITY_SAMPLE_S` per live
    /// participant), of one user if asked, in [`from`, `to`); `limit` 1...100000 (10000).
    func listQuality(_ request: Request, room id: String) async throws -> Response {
        guard Self.validID(id), try await store.room(id: id) != nil else { throw APIError.notFound("room") }
        let query = request.uri.queryParameters
        let user = query.get("user_id")
        if let user, user.isEmpty || user.utf8.count > 128 { throw APIError.badRequest("user_id must be 1...128 bytes") }
        let (from, to) = try ListQuery.range(from: query.get("from"), to: query.get("to"))
        let limit = try ListQuery.limit(query.get("limit"), fallback: 10_000, max: 100_000)
        let samples = try await store.qualitySamples(roomID: id, userID: user, from: from, to: to, limit: limit)
        return try json(.ok, QualitySampleListBody(samples))
    }

    // MARK: audit trail

    /// Writes an audit event in the background: the request does not wait for the database.
    func audit(_ event: RoomEvent) {
        let (store, logger) = (store, logger)
        Task {
            do { try await store.appendEvent(event) } catch {
                logger.warning("could not write an audit event", metadata: ["kind": "\(event.kind)", "error": "\(error)"])
            }
        }
    }

    /// A room's audit trail in the order it happened, of one `type` if asked, `limit` (1000, at
    /// most 10000) a page; the room may be closed.
    func listEvents(_ request: Request, room id: String) async throws -> Response {
        guard Self.validID(id), try await store.room(id: id) != nil else { throw APIError.notFound("room") }
        let query = request.uri.queryParameters
        let type = query.get("type")
        if let type, type.isEmpty || type.utf8.count > 64 || !type.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || (97...122).contains($0) }) {
            throw APIError.badRequest("type must be an event type such as participant_joined")
        }
        let limit = try ListQuery.limit(query.get("limit"), fallback: 1000, max: 10_000)
        let after = try query.get("cursor").map(ListQuery.position(cursor:))
        let page = try await store.events(roomID: id, type: type, after: after, limit: limit)
        let next = page.count == limit ? page.last.map { ListQuery.cursor(ListPosition(at: $0.at, id: $0.id)) } : nil
        return try json(.ok, PageBody(name: "events", items: page.map(EventBody.init), nextCursor: next))
    }

    /// Every room's events in [`from`, `to`) as JSON lines (default) or CSV, streamed a page of
    /// ``exportPageSize`` at a time: a month of events never sits in memory.
    func exportEvents(_ request: Request) throws -> Response {
        let query = request.uri.queryParameters
        let (from, to) = try ListQuery.range(from: query.get("from"), to: query.get("to"))
        let format = query.get("format") ?? "jsonl"
        guard format == "jsonl" || format == "csv" else { throw APIError.badRequest("format must be jsonl or csv") }
        let store = store
        let pageSize = Self.exportPageSize
        let body = ResponseBody { writer in
            var after: ListPosition?
            if format == "csv" { try await writer.write(ByteBuffer(string: EventBody.csvHeader)) }
            while true {
                let page = try await store.events(from: from, to: to, after: after, limit: pageSize)
                guard let last = page.last else { break }
                var buffer = ByteBuffer()
                for e in page {
                    let line = EventBody(e)
                    if format == "csv" {
                        buffer.writeString(line.csvLine)
                    } else {
                        buffer.writeBytes(try APIJSON.data(line))
                        buffer.writeString("\n")
                    }
                }
                try await writer.write(buffer)
                after = ListPosition(at: last.at, id: last.id)
                if page.count < pageSize { break }
            }
            try await writer.finish(nil)
        }
        let type = format == "csv" ? "text/csv; charset=utf-8" : "application/x-ndjson"
        return Response(status: .ok, headers: [.contentType: type, .contentDisposition: "attachment; filename=\"events.\(format)\""], body: body)
    }

    static let exportPageSize = 1000

    // MARK: demo page

    /// `POST /demo/join {room, name, role?}`: the demo page's way in, in development mode only (no
    /// API key configured): finds the open room with that name or makes one, and mints a token.
    func demoJoin<Context: RequestContext>(_ request: Request, _ context: Context) async throws -> Response {
        guard demoEnabled else { throw APIError(.notFound, "not_found", "the demo is only served in development mode (no SFU_API_KEY)") }
        let body = try await decodeBody(DemoJoinRequest.self, request, context, allowEmpty: false)
        let (name, display, role) = (body.room, body.name, body.role)
        let room: RoomRecord
        if let existing = try await store.rooms().first(where: { $0.name == name }) {
            room = existing
        } else {
            room = try await lifecycle.open(RoomLifecycle.Options(name: name), origin: "demo")
        }
        let now = Int64(Date().timeIntervalSince1970)
        let claims = JoinClaims(room: room.id, sub: "demo-" + ResourceID.randomString(count: 8), name: display, role: role, perms: role.defaultPermissions,
                                exp: now + Int64(Defaults.tokenTTLS), iat: now)
        let token = try await signer.sign(claims)
        audit(RoomEvent(roomID: room.id, at: MetadataStore.nowMillis, kind: "token_issued", userID: claims.sub, actor: "demo", subject: "user:" + claims.sub,
                        data: ["role": role.rawValue, "ttl_s": String(Defaults.tokenTTLS)]))
        return try json(.ok, TokenBody(roomID: room.id, token: token, signalingURL: signalingURL(token: token, request: request),
                                       iceServers: iceServers.servers(userID: claims.sub, nowSeconds: now)))
    }

    // MARK: helpers

    /// `2026-11-23T10:31:28.123Z`, made with gmtime_r (a formatter object per call was the largest
    /// cost of listing rooms).
    static func iso8601(_ millis: Int64) -> String {
        var seconds = time_t(millis.quotientAndRemainder(dividingBy: 1000).quotient - (millis < 0 && millis % 1000 != 0 ? 1 : 0))
        let ms = Int((millis % 1000 + 1000) % 1000)
        var t = tm()
        gmtime_r(&seconds, &t)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(t.tm_year + 1900, 4))-\(pad(t.tm_mon + 1, 2))-\(pad(t.tm_mday, 2))T\(pad(t.tm_hour, 2)):\(pad(t.tm_min, 2)):\(pad(t.tm_sec, 2)).\(pad(Int32(ms), 3))Z"
    }

    static func validID(_ id: String) -> Bool {
        id.utf8.count <= 64 && !id.isEmpty && id.utf8.allSatisfy { $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") || (48...57).contains($0) || (97...122).contains($0) || (65...90).contains($0) }
    }

    func json(_ status: HTTPResponse.Status, _ body: some Encodable) throws -> Response {
        let data = try APIJSON.data(body)
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

/// Checks `Authorization: Bearer <api key>` on the control API.
struct APIKeyMiddleware<Context: RequestContext>: RouterMiddleware {
    let keys: APIKeys
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard keys.accepts(authorization: request.headers[.authorization]) else { throw APIError.unauthorized }
        return try await next(request, context)
    }
}
