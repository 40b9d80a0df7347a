import Foundation
import Logging
import Testing
@testable import Control

@Suite("Room lifecycle: empty timeout and max duration")
struct RoomJanitorTests {
    @Test(arguments: StoreBackend.allCases)
    func closesEmptyAndExpiredRooms(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        let janitor = RoomJanitor(store: store, webhooks: nil, logger: Logger(label: "t"))
        let t0: Int64 = 1_000_000
        // Empty for 60 s closes; one with a participant present stays; a long one hits max duration.
        try await store.createRoom(RoomRecord(id: "empty", name: "e", createdAt: t0, maxParticipants: 2, emptyTimeoutS: 60, maxDurationS: 3600, autoRecord: false))
        try await store.createRoom(RoomRecord(id: "busy", name: "b", createdAt: t0, maxParticipants: 2, emptyTimeoutS: 60, maxDurationS: 120, autoRecord: false))
        try await store.createRoom(RoomRecord(id: "left", name: "l", createdAt: t0, maxParticipants: 2, emptyTimeoutS: 60, maxDurationS: 3600, autoRecord: false))
        try await store.recordJoin(ParticipantSessionRecord(id: "s1", roomID: "busy", userID: "u", name: "u", role: "doctor", joinedAt: t0 + 1))
        try await store.recordJoin(ParticipantSessionRecord(id: "s2", roomID: "left", userID: "u", name: "u", role: "patient", joinedAt: t0 + 1))
        try await store.recordLeave(sessionID: "s2", at: t0 + 50_000, reason: "signal closed")

        #expect(try await janitor.sweep(nowMillis: t0 + 59_999).isEmpty)
        #expect(try await janitor.sweep(nowMillis: t0 + 60_000) == ["empty"])
        // "left" is empty since its participant left at +50 s: closes at +110 s, not +60 s.
        #expect(try await janitor.sweep(nowMillis: t0 + 109_999).isEmpty)
        #expect(try await janitor.sweep(nowMillis: t0 + 110_000) == ["left"])
        // "busy" has someone in it but reaches its max duration.
        #expect(try await janitor.sweep(nowMillis: t0 + 120_000) == ["busy"])
        #expect(try await store.room(id: "busy")?.closeReason == "max duration reached")
        #expect(try await store.room(id: "empty")?.closeReason == "empty timeout")
        #expect(try await store.events(roomID: "left").map(\.kind) == ["room_closed"])
        #expect(try await janitor.sweep(nowMillis: t0 + 999_999).isEmpty)
    }
}
