import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing
@testable import Control

/// The backend's read side (issue 23): the call history's paging and figures, chat messages and
/// the audit trail, on both store backends; then the routes in process (bad queries get 400s, the
/// export streams JSON lines or CSV).
@Suite("Call history, chat and audit trail in the store (SQLite and PostgreSQL)", .serialized)
struct CallHistoryStoreTests {
    /// Inserts rooms in one transaction (10,000 one by one would be the test's whole time).
    static func insertRooms(_ rooms: [RoomRecord], into store: MetadataStore) async throws {
        try await store.run { db throws(SQLError) in
            try db.execute("BEGIN")
            for r in rooms {
                try db.execute("""
                    INSERT INTO rooms (id, name, created_at, closed_at, close_reason, max_participants, empty_timeout_s, max_duration_s, auto_record)
                    VALUES ($1, $2, $3, $4, $5, 10, 60, 600, 0)
                    """, [.text(r.id), .text(r.name), .int(r.createdAt), r.closedAt.map { .int($0) } ?? .null, r.closeReason.map { .text($0) } ?? .null])
            }
            try db.execute("COMMIT")
        }
    }

    static func room(_ id: String, at: Int64, closedAt: Int64? = nil) -> RoomRecord {
        RoomRecord(id: id, name: id, createdAt: at, closedAt: closedAt, closeReason: closedAt.map { _ in "closed by API" },
                   maxParticipants: 10, emptyTimeoutS: 60, maxDurationS: 600, autoRecord: false)
    }

    /// 10,000 rooms, many created in the same millisecond, paged 1000 and 333 at a time: each comes
    /// exactly once, newest first; rooms created while paging do not shift the pages.
    @Test(arguments: StoreBackend.allCases)
    func pagingTenThousandRoomsReturnsEachExactlyOnce(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        let rooms = (0..<10_000).map { i in Self.room(String(format: "rm_%05d", (i * 7_919) % 10_000), at: Int64(1_000 + i / 7),
                                                   closedAt: i % 3 == 0 ? Int64(5_000 + i) : nil) }
        try await Self.insertRooms(rooms, into: store)
        var expected = rooms.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }.map(\.id)
        for limit in [1000, 333] {
            var q = RoomHistoryQuery()
            q.status = .all
            q.limit = limit
            var seen: [String] = []
            var pages = 0
            while true {
                let page = try await store.roomHistory(q)
                seen += page.map(\.room.id)
                pages += 1
                if pages == 2 {
                    // A room opened meanwhile is newer than every page: it does not appear inside them.
                    try await Self.insertRooms([Self.room("rm_new\(limit)", at: 99_999)], into: store)
                }
                guard page.count == limit, let last = page.last else { break }
                q.after = ListPosition(at: last.room.createdAt, id: last.room.id)
            }
            #expect(seen.count == expected.count && Set(seen).count == expected.count, "limit \(limit): \(seen.count) rooms, \(Set(seen).count) distinct")
            #expect(seen == expected, "limit \(limit): not newest first by (created_at, id)")
            #expect(pages == expected.count / limit + 1)
            // The next pass sees the room opened during this one, first.
            expected.insert("rm_new\(limit)", at: 0)
        }
        // Status and time filters.
        var closed = RoomHistoryQuery()
        closed.status = .closed
        closed.limit = 1000
        closed.fromMillis = 1_100
        closed.toMillis = 1_200
        let closedIDs = try await store.roomHistory(closed).map(\.room.id)
        let want = rooms.filter { $0.closedAt != nil && (1_100..<1_200).contains($0.createdAt) }.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
        #expect(closedIDs == want.map(\.id) && !closedIDs.isEmpty)
    }

    /// Per room: distinct users, most at once (a resume or a rejoin does not double count), and the
    /// recordings in start order.
    @Test(arguments: StoreBackend.allCases)
    func historyFiguresPerRoom(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        try await store.createRoom(Self.room("rm_a", at: 100))
        try await store.createRoom(Self.room("rm_b", at: 200))
        // rm_a: doctor 110-500, patient 120-200 then again 250-400, interpreter 300-350: three at once at most.
        for (i, (user, join, leave)) in [("dr", 110, 500), ("pt", 120, 200), ("pt", 250, 400), ("int", 300, 350)].enumerated() {
            try await store.recordJoin(ParticipantSessionRecord(id: "s\(i)", roomID: "rm_a", userID: user, name: user, role: "patient", joinedAt: Int64(join)))
            try await store.recordLeave(sessionID: "s\(i)", at: Int64(leave), reason: "left")
        }
        // Back to back (one leaves as the other joins): never two at once.
        try await store.recordJoin(ParticipantSessionRecord(id: "s9", roomID: "rm_b", userID: "x", name: "x", role: "patient", joinedAt: 200))
        try await store.recordLeave(sessionID: "s9", at: 300, reason: "left")
        try await store.recordJoin(ParticipantSessionRecord(id: "s10", roomID: "rm_b", userID: "y", name: "y", role: "patient", joinedAt: 300))
        for (id, at) in [("rec_2", 130), ("rec_1", 120)] {
            try await store.createRecording(RecordingRecord(id: id, roomID: "rm_a", mode: "tracks", status: .completed, startedAt: Int64(at), storage: "local"))
        }
        try await store.closeRoom(id: "rm_a", at: 600, reason: "closed by API")
        var q = RoomHistoryQuery()
        q.status = .all
        let page = try await store.roomHistory(q)
        #expect(page.map(\.room.id) == ["rm_b", "rm_a"])
        let a = try #require(page.last)
        #expect(a.totalParticipants == 3 && a.sessions == 4 && a.peakParticipants == 3)
        #expect(a.recordingIDs == ["rec_1", "rec_2"])
        #expect(page[0].peakParticipants == 1 && page[0].totalParticipants == 2 && page[0].recordingIDs.isEmpty)
        #expect(MetadataStore.peak([]) == 0 && MetadataStore.peak([(1, 5), (5, 9)]) == 1 && MetadataStore.peak([(1, 5), (4, 9), (2, 3)]) == 2)
    }

    /// Chat messages in send order, paged; the audit trail by room and type and across rooms by
    /// time; a row written before actors existed reads back with its user as actor and subject.
    @Test(arguments: StoreBackend.allCases)
    func chatAndAuditTrail(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        try await store.createRoom(Self.room("rm_c", at: 1))
        for i in 0..<25 {
            try await store.addChatMessage(ChatMessageRecord(id: String(format: "msg_%02d", i), roomID: "rm_c", peerID: "pe_1", userID: i % 2 == 0 ? "dr" : "pt",
                                                             message: "line \(i) “ünïcode”", at: Int64(100 + i / 2)))
        }
        var all: [ChatMessageRecord] = []
        var after: ListPosition?
        while true {
            let page = try await store.chatMessages(roomID: "rm_c", after: after, limit: 10)
            all += page
            guard page.count == 10, let last = page.last else { break }
            after = ListPosition(at: last.at, id: last.id)
        }
        #expect(all.map(\.id) == (0..<25).map { String(format: "msg_%02d", $0) })
        #expect(all[3].message == "line 3 “ünïcode”" && all[3].userID == "pt")

        let legacy = RoomEvent(id: "ev_legacy", roomID: "rm_c", at: 50, kind: "participant_joined", userID: "dr", detail: "doctor")
        try await store.appendEvent(legacy)
        var generated: [RoomEvent] = []
        for i in 0..<300 {
            generated.append(RoomEvent(id: String(format: "ev_%04d", i), roomID: i % 2 == 0 ? "rm_c" : "rm_d", at: Int64(60 + i / 4),
                                       kind: i % 3 == 0 ? "audio_toggled" : "chat_message_sent", actor: "user:pt", subject: "user:pt",
                                       data: ["enabled": "true", "quote": "a \"b\", c"]))
        }
        try await store.appendEvents(generated)
        let first = try #require(try await store.events(roomID: "rm_c", limit: 1).first)
        #expect(first.id == "ev_legacy" && first.effectiveActor == "user:dr" && first.effectiveSubject == "user:dr")
        #expect(first.effectiveData == ["detail": "doctor"])
        let toggles = try await store.events(roomID: "rm_c", type: "audio_toggled")
        #expect(toggles.map(\.id) == generated.filter { $0.roomID == "rm_c" && $0.kind == "audio_toggled" }.map(\.id))
        #expect(toggles.first?.data == ["enabled": "true", "quote": "a \"b\", c"] && toggles.first?.actor == "user:pt")
        // The export's pages: every event of the range once, in time order.
        var exported: [String] = []
        var position: ListPosition?
        while true {
            let page = try await store.events(from: 60, to: 100, after: position, limit: 64)
            exported += page.map(\.id)
            guard page.count == 64, let last = page.last else { break }
            position = ListPosition(at: last.at, id: last.id)
        }
        let inRange = generated.filter { (60..<100).contains($0.at) }.sorted { ($0.at, $0.id) < ($1.at, $1.id) }.map(\.id)
        #expect(exported == inRange && exported.count == 160)
    }
}

/// The routes in process: `GET /v1/rooms` pages and refuses bad queries, the messages and events
/// routes, the export's formats.
@Suite("Call history, chat and audit routes in process")
struct CallHistoryRouteTests {
    static let key = "history-test-key-0123456789-abcdefghijk"
    static var auth: HTTPFields { [.authorization: "Bearer \(key)"] }

    static func object(_ response: TestResponse) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(buffer: response.body)) as? [String: Any]) ?? [:]
    }

    @Test func roomsArePagedByCursorAndBadQueriesGet400() async throws {
        try await InProcessAPI.with(key: Self.key) { client in
            var created: [String] = []
            for i in 0..<45 {
                try await client.execute(uri: "/v1/rooms", method: .post, headers: Self.auth, body: ByteBuffer(string: "{\"name\":\"c\(i)\"}")) { r in
                    #expect(r.status == .created)
                    if let id = Self.object(r)["id"] as? String { created.append(id) }
                }
            }
            try await client.execute(uri: "/v1/rooms/\(created[0])", method: .delete, headers: Self.auth) { #expect($0.status == .ok) }
            var seen: [String] = []
            var cursor: String?
            repeat {
                let uri = "/v1/rooms?status=all&limit=20" + (cursor.map { "&cursor=\($0)" } ?? "")
                try await client.execute(uri: uri, method: .get, headers: Self.auth) { r in
                    #expect(r.status == .ok)
                    let body = Self.object(r)
                    let rooms = body["rooms"] as? [[String: Any]] ?? []
                    seen += rooms.compactMap { $0["id"] as? String }
                    #expect(body.keys.contains("next_cursor"))
                    cursor = body["next_cursor"] as? String
                    for room in rooms {
                        #expect(room["duration_ms"] is Int && room["peak_participants"] as? Int == 0 && room["recording_ids"] as? [String] == [])
                    }
                }
            } while cursor != nil
            #expect(seen.count == 45 && Set(seen) == Set(created))
            // Default: open rooms only; status=closed: the one closed.
            try await client.execute(uri: "/v1/rooms?limit=1000", method: .get, headers: Self.auth) { r in
                #expect((Self.object(r)["rooms"] as? [Any])?.count == 44)
            }
            try await client.execute(uri: "/v1/rooms?status=closed", method: .get, headers: Self.auth) { r in
                let rooms = Self.object(r)["rooms"] as? [[String: Any]] ?? []
                #expect(rooms.map { $0["id"] as? String } == [created[0]] && rooms.first?["status"] as? String == "closed")
            }
            for bad in ["cursor=!!", "cursor=bm90LWEtY3Vyc29y", "limit=0", "limit=1001", "limit=x", "status=gone", "from=yesterday",
                        "from=2026-12-07T10:00:00Z&to=2026-12-07T09:00:00Z", "to=-5"] {
                try await client.execute(uri: "/v1/rooms?\(bad)", method: .get, headers: Self.auth) { r in
                    #expect(r.status == .badRequest, "\(bad)")
                    #expect(ControlAuthAndErrorTests.errorCode(r) == "bad_request", "\(bad)")
                }
            }
            try await client.execute(uri: "/v1/rooms?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00.500Z&status=all", method: .get, headers: Self.auth) { r in
                #expect(r.status == .ok && (Self.object(r)["rooms"] as? [Any])?.isEmpty == true)
            }
        }
    }

    /// `metadata` on a room: a JSON object kept and returned as given (in the answer, the room, the
    /// history); not an object, or over 16 KiB, is a 400.
    @Test func roomMetadataIsReturnedAsGiven() async throws {
        try await InProcessAPI.with(key: Self.key) { client in
            let given = #"{"consultation_id":"c-42","patient":{"record":"MRN 0042","tags":["follow-up",3,true,null]},"quoted":"a \"b\""}"#
            var id = ""
            try await client.execute(uri: "/v1/rooms", method: .post, headers: Self.auth, body: ByteBuffer(string: #"{"name":"m","metadata":\#(given)}"#)) { r in
                #expect(r.status == .created)
                let o = Self.object(r)
                id = o["id"] as? String ?? ""
                let want = (try? JSONSerialization.jsonObject(with: Data(given.utf8)) as? [String: Any]) ?? [:]
                #expect(NSDictionary(dictionary: o["metadata"] as? [String: Any] ?? [:]).isEqual(to: want) && !want.isEmpty)
            }
            for uri in ["/v1/rooms/\(id)", "/v1/rooms?status=all"] {
                try await client.execute(uri: uri, method: .get, headers: Self.auth) { r in
                    let o = Self.object(r)
                    let room = (o["rooms"] as? [[String: Any]])?.first ?? o
                    let meta = room["metadata"] as? [String: Any]
                    #expect(meta?["consultation_id"] as? String == "c-42" && (meta?["patient"] as? [String: Any])?["record"] as? String == "MRN 0042", "\(uri)")
                }
            }
            let big = #"{"metadata":{"blob":""# + String(repeating: "x", count: 16 * 1024) + #""}}"#
            for bad in [#"{"metadata":[1,2]}"#, #"{"metadata":"text"}"#, big] {
                try await client.execute(uri: "/v1/rooms", method: .post, headers: Self.auth, body: ByteBuffer(string: bad)) { r in
                    #expect(r.status == .badRequest, "\(bad.prefix(40))")
                }
            }
            try await client.execute(uri: "/v1/rooms", method: .post, headers: Self.auth, body: ByteBuffer(string: #"{"name":"plain"}"#)) { r in
                #expect(Self.object(r)["metadata"] == nil, "no metadata given, none returned")
            }
        }
    }

    @Test func eventsMessagesAndTheExport() async throws {
        try await InProcessAPI.with(key: Self.key) { client in
            var room = ""
            try await client.execute(uri: "/v1/rooms", method: .post, headers: Self.auth, body: ByteBuffer(string: "{\"name\":\"audit\"}")) { r in
                room = Self.object(r)["id"] as? String ?? ""
            }
            try await client.execute(uri: "/v1/rooms/\(room)/tokens", method: .post, headers: Self.auth,
                                     body: ByteBuffer(string: "{\"user_id\":\"pt-1\",\"role\":\"patient\"}")) { #expect($0.status == .ok) }
            try await client.execute(uri: "/v1/rooms/\(room)", method: .delete, headers: Self.auth) { #expect($0.status == .ok) }
            // The token's audit event is written in the background.
            var events: [[String: Any]] = []
            for _ in 0..<50 {
                try await client.execute(uri: "/v1/rooms/\(room)/events", method: .get, headers: Self.auth) { r in
                    events = Self.object(r)["events"] as? [[String: Any]] ?? []
                }
                if events.count >= 3 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(events.map { $0["type"] as? String } == ["room_created", "token_issued", "room_closed"])
            #expect(events.map { $0["actor"] as? String } == ["api", "api", "api"])
            #expect(events.map { $0["subject"] as? String } == ["room:\(room)", "user:pt-1", "room:\(room)"])
            #expect((events[1]["data"] as? [String: String])?["role"] == "patient")
            #expect(events.allSatisfy { $0["room_id"] as? String == room && ($0["id"] as? String)?.hasPrefix("ev_") == true && $0["at"] is String })
            try await client.execute(uri: "/v1/rooms/\(room)/events?type=token_issued", method: .get, headers: Self.auth) { r in
                #expect((Self.object(r)["events"] as? [[String: Any]])?.map { $0["type"] as? String } == ["token_issued"])
            }
            try await client.execute(uri: "/v1/rooms/\(room)/messages", method: .get, headers: Self.auth) { r in
                #expect(r.status == .ok && (Self.object(r)["messages"] as? [Any])?.isEmpty == true)
            }
            try await client.execute(uri: "/v1/rooms/rm_aaaaaaaaaaaaaa/messages", method: .get, headers: Self.auth) { #expect($0.status == .notFound) }
            for bad in ["/v1/rooms/\(room)/events?type=Bad-Type", "/v1/rooms/\(room)/events?cursor=zz", "/v1/events?format=xml",
                        "/v1/events?from=tomorrow"] {
                try await client.execute(uri: bad, method: .get, headers: Self.auth) { #expect($0.status == .badRequest, "\(bad)") }
            }
            // The export: JSON lines, one event a line; CSV with a header and quoted fields.
            try await client.execute(uri: "/v1/events", method: .get, headers: Self.auth) { r in
                #expect(r.status == .ok && r.headers[.contentType] == "application/x-ndjson")
                let lines = String(buffer: r.body).split(separator: "\n")
                let types = lines.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["type"] as? String }
                #expect(types == ["room_created", "token_issued", "room_closed"])
            }
            try await client.execute(uri: "/v1/events?format=csv&from=2000-01-01T00:00:00Z", method: .get, headers: Self.auth) { r in
                #expect(r.headers[.contentType] == "text/csv; charset=utf-8")
                let rows = String(buffer: r.body).components(separatedBy: "\r\n").filter { !$0.isEmpty }
                #expect(rows.first == "id,at,room_id,type,actor,subject,data" && rows.count == 4)
                #expect(rows[2].contains("\"token_issued\",\"api\",\"user:pt-1\",\"{\"\"expires_at\"\""))
            }
        }
    }
}
