import Foundation
import Logging
import NIOConcurrencyHelpers
import SFU
import Testing
@testable import Control

@Suite("Identifiers: one generator, prefixed, unbiased")
struct ResourceIDTests {
    @Test func idsCarryTheirKindAndDoNotRepeat() {
        var seen = Set<String>()
        for kind in ResourceID.allCases {
            for _ in 0..<500 {
                let id = kind.make()
                #expect(kind.matches(id), "\(id)")
                #expect(ControlAPI.validID(id))
                for other in ResourceID.allCases where other != kind { #expect(!other.matches(id), "\(id) taken for a \(other)") }
                seen.insert(id)
            }
        }
        #expect(seen.count == ResourceID.allCases.count * 500)
    }

    /// Every character equally likely: 360,000 characters give each of the 36 about 10,000 times
    /// (one standard deviation ~98). Mapping a random byte with `% 36` without redrawing gives
    /// 0-3 a 8/256 chance against 7/256 (~11,250 against ~9,840): outside the band.
    @Test func charactersAreUniform() {
        var counts: [Character: Int] = [:]
        for _ in 0..<(360_000 / 1000) {
            for c in ResourceID.randomString(count: 1000) { counts[c, default: 0] += 1 }
        }
        #expect(counts.count == 36)
        for (c, n) in counts { #expect((9400...10600).contains(n), "'\(c)' drawn \(n) times of 360,000") }
    }
}

/// A live room on a real media worker (loopback, an ephemeral port), to see who gets disconnected.
private func startLiveRooms() async throws -> (LiveRooms, MediaRuntime) {
    var config = ServerConfig()
    config.workers = 1
    config.mediaHost = "127.0.0.1"
    config.mediaPortBase = 0
    let logger = Logger(label: "lifecycle-test")
    let media = try await MediaRuntime.start(config: config, logger: logger)
    return (LiveRooms(media: media, logger: logger), media)
}

/// Joins a participant that only listens and keeps what it is told.
private func joinListener(_ live: LiveRooms, _ room: RoomRecord, user: String) async throws -> NIOLockedValueBox<[RoomSignal]> {
    let signals = NIOLockedValueBox<[RoomSignal]>([])
    let peer = PeerInfo(peerID: ResourceID.peer.make(), userID: user, name: user, role: "patient", canPublish: false, canSubscribe: false)
    let handle = try await live.room(for: room)
    try await handle.run { r in
        try r.join(peer, nowNanos: 0) { signal in signals.withLockedValue { $0.append(signal) } }
    }
    return signals
}

@Suite("Room lifecycle: one service opens and closes rooms for the API, the janitor and the demo")
struct RoomLifecycleTests {
    @Test(arguments: StoreBackend.allCases)
    func openWritesTheRoomAndItsEvent(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        let rooms = RoomLifecycle(store: store, webhooks: nil, live: nil, recordings: nil, logger: Logger(label: "t"))
        var options = RoomLifecycle.Options(name: "Consultation")
        options.maxParticipants = 3
        options.autoRecord = true
        let named = try await rooms.open(options, nowMillis: 1_000)
        #expect(ResourceID.room.matches(named.id))
        #expect(try await store.room(id: named.id) == named)
        #expect(named.name == "Consultation" && named.maxParticipants == 3 && named.autoRecord && named.createdAt == 1_000)
        let unnamed = try await rooms.open(RoomLifecycle.Options(), origin: "demo", nowMillis: 2_000)
        #expect(unnamed.name == unnamed.id && unnamed.id != named.id)
        let events = try await store.events(roomID: unnamed.id)
        #expect(events.map(\.kind) == ["room_created"] && events.first?.detail == "demo")
        #expect(events.allSatisfy { ResourceID.event.matches($0.id) })
    }

    @Test(arguments: StoreBackend.allCases)
    func closingDisconnectsEveryoneOnceAndTheFirstReasonStays(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        let (live, media) = try await startLiveRooms()
        let rooms = RoomLifecycle(store: store, webhooks: nil, live: live, recordings: nil, logger: Logger(label: "t"))
        let room = try await rooms.open(RoomLifecycle.Options(name: "r"), nowMillis: 1_000)
        let doctor = try await joinListener(live, room, user: "doctor")
        let patient = try await joinListener(live, room, user: "patient")

        let closed = try await rooms.close(room, reason: .api, nowMillis: 5_000)
        #expect(closed.closedAt == 5_000 && closed.closeReason == "closed by API")
        for signals in [doctor, patient] {
            let removed = signals.withLockedValue { $0 }.compactMap { s -> (String, String)? in
                if case .removed(let reason, let message) = s { return (reason.code, message) } else { return nil }
            }
            #expect(removed.count == 1 && removed.first?.0 == "room_closed" && removed.first?.1.contains("closed by API") == true, "\(removed)")
        }
        #expect(live.existing(room.id) == nil && live.isClosed(room.id))
        await #expect(throws: RoomJoinError.closed) { _ = try await live.room(for: room) }

        // Closed again (the janitor, a retried request): the first close's time and reason stay, one event.
        let again = try await rooms.close(closed, reason: .emptyTimeout, nowMillis: 9_000)
        #expect(again.closedAt == 5_000 && again.closeReason == "closed by API")
        #expect(try await store.events(roomID: room.id).map(\.kind) == ["room_created", "room_closed"])
        for w in media.workers { await w.stop() }
    }

    @Test(arguments: StoreBackend.allCases)
    func theJanitorClosesThroughTheSameService(backend: StoreBackend) async throws {
        let (store, _) = try await backend.open()
        defer { Task { await store.close() } }
        let (live, media) = try await startLiveRooms()
        let rooms = RoomLifecycle(store: store, webhooks: nil, live: live, recordings: nil, logger: Logger(label: "t"))
        var options = RoomLifecycle.Options(name: "short")
        options.maxDurationS = 60
        let room = try await rooms.open(options, nowMillis: 1_000)
        let patient = try await joinListener(live, room, user: "patient")
        let janitor = RoomJanitor(store: store, webhooks: nil, logger: Logger(label: "t"), live: live)
        #expect(try await janitor.sweep(nowMillis: 60_999).isEmpty)
        #expect(try await janitor.sweep(nowMillis: 61_000) == [room.id])
        #expect(try await store.room(id: room.id)?.closeReason == "max duration reached")
        let removed = patient.withLockedValue { $0 }.contains { if case .removed(.roomClosed, let m) = $0 { m.contains("max duration reached") } else { false } }
        #expect(removed)
        #expect(live.isClosed(room.id))
        #expect(try await store.events(roomID: room.id).map(\.kind) == ["room_created", "room_closed"])
        for w in media.workers { await w.stop() }
    }
}
