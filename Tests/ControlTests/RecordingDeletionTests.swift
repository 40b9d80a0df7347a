import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
@testable import Control

/// Deleting recordings (the route, the retention schedule with its clock injected) and signed links
/// to their files, on both store backends and through the routes in process.
@Suite("Recording deletion, retention and signed links", .serialized)
struct RecordingDeletionTests {
    /// A finished recording with one file of `bytes` on disk under `dir`.
    static func finished(_ store: MetadataStore, id: String, room: String, endedAt: Int64, dir: String, bytes: [UInt8] = Array(0..<200)) async throws -> String {
        let folder = (dir as NSString).appendingPathComponent(id)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let path = (folder as NSString).appendingPathComponent("u.webm")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        try await store.createRecording(RecordingRecord(id: id, roomID: room, mode: "tracks", status: .recording, startedAt: endedAt - 1000))
        try await store.addRecordingFile(RecordingFileRecord(id: "file_" + id, recordingID: id, userID: "u", trackKinds: ["video"], fileName: "u.webm",
                                                             path: path, sizeBytes: Int64(bytes.count), source: "camera", format: "webm",
                                                             videoCodec: "vp8", audioCodec: nil, resolution: nil, durationMs: 1000))
        try await store.finishRecording(id: id, status: .completed, endedAt: endedAt, durationMs: 1000, failureReason: nil)
        return path
    }

    @Test(arguments: StoreBackend.allCases)
    func deletionRemovesTheFilesKeepsTheMetadataAndRetentionDeletesTheOldOnes(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        let dir = NSTemporaryDirectory() + "sfu-del-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try await store.createRoom(RoomRecord(id: "rm_d", name: "d", createdAt: 0, maxParticipants: 4, emptyTimeoutS: 60, maxDurationS: 600, autoRecord: false))
        let day: Int64 = 86_400_000
        let now: Int64 = 100 * day
        let old = try await Self.finished(store, id: "rec_old", room: "rm_d", endedAt: now - 31 * day, dir: dir)
        let recent = try await Self.finished(store, id: "rec_new", room: "rm_d", endedAt: now - 29 * day, dir: dir)
        try await store.createRecording(RecordingRecord(id: "rec_live", roomID: "rm_d", mode: "tracks", status: .recording, startedAt: now - 40 * day))
        let deletion = RecordingDeletion(store: store, webhooks: nil, logger: Logger(label: "deletion"))

        // Retention at 30 days: only the finished recording older than that; the live one is never touched.
        #expect(await deletion.applyRetention(days: 30, nowMillis: now) == ["rec_old"])
        #expect(!FileManager.default.fileExists(atPath: old) && !FileManager.default.fileExists(atPath: (old as NSString).deletingLastPathComponent))
        #expect(FileManager.default.fileExists(atPath: recent))
        let gone = try #require(try await store.recording(id: "rec_old"))
        #expect(gone.status == .deleted && gone.deletedAt == now && gone.files.count == 1, "the metadata stays")
        #expect(await deletion.applyRetention(days: 30, nowMillis: now).isEmpty, "a deleted recording is not deleted again")

        // The route's deletion: the recent one now, by the API; a live one refused; unknown ids.
        let deleted = try await deletion.delete(id: "rec_new", actor: "api", nowMillis: now + 1)
        #expect(deleted.status == .deleted && !FileManager.default.fileExists(atPath: recent))
        #expect(try await deletion.delete(id: "rec_new", actor: "api", nowMillis: now + 2).deletedAt == now + 1, "idempotent")
        await #expect(throws: RecordingDeletion.Failure.active(.recording)) { try await deletion.delete(id: "rec_live", actor: "api") }
        await #expect(throws: RecordingDeletion.Failure.notFound) { try await deletion.delete(id: "rec_nope", actor: "api") }
        let audit = try await store.events(roomID: "rm_d", type: "recording_deleted")
        #expect(audit.map(\.subject) == ["recording:rec_old", "recording:rec_new"])
        #expect(audit.map(\.actor) == ["server", "api"] && audit[0].data["reason"] == "retention (30 days)")
        // The key signed links are made with: made once, the same on every read.
        let secret = try await store.serverSecret(name: "file_links")
        let again = try await store.serverSecret(name: "file_links"), other = try await store.serverSecret(name: "other")
        #expect(secret.count == 64 && again == secret && other != secret)
    }

    @Test func linksNameOneFileUntilOneTime() {
        let links = FileLinks(secret: "k1"), other = FileLinks(secret: "k2")
        let s = links.signature(recording: "rec_a", file: "file_a", expires: 1000)
        #expect(links.verify(s, recording: "rec_a", file: "file_a", expires: 1000))
        #expect(!links.verify(s, recording: "rec_a", file: "file_b", expires: 1000))
        #expect(!links.verify(s, recording: "rec_b", file: "file_a", expires: 1000))
        #expect(!links.verify(s, recording: "rec_a", file: "file_a", expires: 1001))
        #expect(!other.verify(s, recording: "rec_a", file: "file_a", expires: 1000))
        #expect(!links.verify(String(s.dropLast()) + (s.hasSuffix("A") ? "B" : "A"), recording: "rec_a", file: "file_a", expires: 1000))
        #expect(!s.contains("+") && !s.contains("/") && !s.contains("="))
    }

    /// The routes: a link works without the key (whole file and a range), expired, tampered or another
    /// file's signature is 403; a deleted recording's file is 410 and its links die with it.
    @Test func routesServeLinksAndDeleteRecordings() async throws {
        let logger = Logger(label: "links")
        let dir = NSTemporaryDirectory() + "sfu-links-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try await MetadataStore.open(databaseURL: nil, dataDir: dir, logger: logger)
        defer { Task { await store.close() } }
        try await store.createRoom(RoomRecord(id: "rm_l", name: "l", createdAt: 0, maxParticipants: 4, emptyTimeoutS: 60, maxDurationS: 600, autoRecord: false))
        let now = MetadataStore.nowMillis
        _ = try await Self.finished(store, id: "rec_a", room: "rm_l", endedAt: now, dir: dir)
        _ = try await Self.finished(store, id: "rec_b", room: "rm_l", endedAt: now, dir: dir, bytes: Array(repeating: 7, count: 50))
        let key = "links-test-key-0123456789-abcdefghijklmn"
        let api = ControlAPI(store: store, keys: APIKeys([key]), iceServers: [], logger: logger, linkSecret: "a secret of its own")
        let router = SFUServer(config: ServerConfig(), logger: logger).buildRouter(api: api)
        let auth: HTTPFields = [.authorization: "Bearer \(key)"]
        try await Application(router: router).test(.router) { client in
            var url = ""
            try await client.execute(uri: "/v1/recordings/rec_a/files/file_rec_a/url", method: .post, headers: auth, body: ByteBuffer(string: "{\"ttl_s\": 60}")) { r in
                #expect(r.status == .ok)
                let o = try #require(try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: String])
                url = try #require(o["url"])
                #expect(o["expires_at"]?.hasSuffix("Z") == true)
            }
            let path = String(url.drop { $0 != "/" }.dropFirst(2).drop { $0 != "/" })
            #expect(path.hasPrefix("/v1/links/rec_a/file_rec_a?expires="), "\(url)")
            try await client.execute(uri: path, method: .get) { r in
                #expect(r.status == .ok && Array(buffer: r.body) == Array(0..<200))
            }
            try await client.execute(uri: path, method: .get, headers: [.range: "bytes=10-19"]) { r in
                #expect(r.status == .partialContent && Array(buffer: r.body) == Array(10..<20))
            }
            let expires = Int64(Date().timeIntervalSince1970) + 60
            let bSignature = api.links.signature(recording: "rec_b", file: "file_rec_b", expires: expires)
            let pastSignature = api.links.signature(recording: "rec_a", file: "file_rec_a", expires: 1000)
            for (bad, code) in [(path.replacingOccurrences(of: "expires=", with: "expires=9"), "link_invalid"),
                                ("/v1/links/rec_a/file_rec_a?expires=\(expires)&signature=\(bSignature)", "link_invalid"),
                                ("/v1/links/rec_a/file_rec_a?expires=1000&signature=\(pastSignature)", "link_expired"),
                                ("/v1/links/rec_a/file_rec_a", "link_invalid")] {
                try await client.execute(uri: bad, method: .get) { r in
                    #expect(r.status == .forbidden, "\(bad)")
                    #expect(ControlAuthAndErrorTests.errorCode(r) == code, "\(bad)")
                }
            }
            for body in ["{\"ttl_s\": 0}", "{\"ttl_s\": 604801}", "{\"ttl_s\": \"60\"}"] {
                try await client.execute(uri: "/v1/recordings/rec_a/files/file_rec_a/url", method: .post, headers: auth, body: ByteBuffer(string: body)) {
                    #expect($0.status == .badRequest, "\(body)")
                }
            }
            try await client.execute(uri: "/v1/recordings/rec_a/files/file_nope/url", method: .post, headers: auth) { #expect($0.status == .notFound) }
            // Deleted: the metadata says so, the file is gone (410), the link too.
            try await client.execute(uri: "/v1/recordings/rec_a", method: .delete, headers: auth) { r in
                #expect(r.status == .ok)
                let o = try #require(try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as? [String: Any])
                #expect(o["status"] as? String == "deleted" && o["deleted_at"] is String)
            }
            try await client.execute(uri: "/v1/recordings/rec_a/files/file_rec_a", method: .get, headers: auth) { #expect($0.status == .gone) }
            try await client.execute(uri: path, method: .get) { #expect($0.status == .gone) }
            try await client.execute(uri: "/v1/recordings/rec_a/files/file_rec_a/url", method: .post, headers: auth) { #expect($0.status == .notFound) }
            try await client.execute(uri: "/v1/recordings/rec_nope", method: .delete, headers: auth) { #expect($0.status == .notFound) }
        }
    }
}
