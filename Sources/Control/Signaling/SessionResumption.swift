import Synchronization
import SFU

/// A joined participant's outlet for room signals that outlives its signaling socket. While a
/// socket is attached the signals go straight to its queue; while the participant is parked (its
/// socket dropped, the resume window open) they are kept, in order and bounded, and handed to the
/// next socket when it resumes, after its `joined_room`.
package final class SignalRelay: Sendable {
    /// Signals kept for a parked participant at most (as many as one socket's queue holds).
    static let maxBuffered = RoomSignaling.maxQueuedSignals

    private struct State {
        var enqueue: (@Sendable (SessionSignal) -> Void)?
        var buffered: [SessionSignal] = []
        /// More than ``maxBuffered`` came while parked: the participant cannot be resumed faithfully.
        var overflowed = false
        /// A removal (by the room, the API, a replacing join) that came while parked.
        var removal: String?
        var onParkedEnd: (@Sendable () -> Void)?
    }

    private let state: Mutex<State>

    package init(enqueue: @escaping @Sendable (SessionSignal) -> Void) {
        state = Mutex(State(enqueue: enqueue))
    }

    /// A signal from the room: to the attached socket, or kept while parked. A removal or an
    /// overflow while parked ends the parked participant at once (`onParkedEnd`).
    package func send(_ signal: SessionSignal) {
        let end: (@Sendable () -> Void)? = state.withLock { s in
            // Delivered under the lock: the room's thread and an attaching socket cannot reorder signals.
            if let enqueue = s.enqueue {
                enqueue(signal)
                return nil
            }
            if let code = signal.removalCode { s.removal = code }
            if s.buffered.count < Self.maxBuffered { s.buffered.append(signal) } else { s.overflowed = true }
            guard s.removal != nil || s.overflowed, let end = s.onParkedEnd else { return nil }
            s.onParkedEnd = nil
            return end
        }
        end?()
    }

    /// The socket went away: keep what comes until ``attach(_:first:)``. `unsent` (called once
    /// nothing more can reach the old socket's queue) gives back what that queue still held or
    /// refused, kept ahead of what comes later. `onEnd` is called (once, not under the lock) if a
    /// removal or too many signals come meanwhile.
    func park(unsent: () -> [SessionSignal], onEnd: @escaping @Sendable () -> Void) {
        state.withLock { s in s.enqueue = nil }
        let earlier = unsent()
        let end: (@Sendable () -> Void)? = state.withLock { s in
            s.buffered = Array((earlier + s.buffered).prefix(Self.maxBuffered))
            if earlier.count + s.buffered.count > Self.maxBuffered { s.overflowed = true }
            if s.removal == nil, let code = earlier.lazy.compactMap(\.removalCode).first { s.removal = code }
            if s.removal != nil || s.overflowed { return onEnd }
            s.onParkedEnd = onEnd
            return nil
        }
        end?()
    }

    /// A new socket: `first` (its `joined_room`), then what was kept, then everything live.
    /// - Returns: false (nothing sent) when the participant was removed or overflowed while parked.
    func attach(_ enqueue: @escaping @Sendable (SessionSignal) -> Void, first: SessionSignal) -> Bool {
        state.withLock { s in
            guard s.removal == nil, !s.overflowed else { return false }
            enqueue(first)
            for signal in s.buffered { enqueue(signal) }
            s.buffered = []
            s.onParkedEnd = nil
            s.enqueue = enqueue
            return true
        }
    }

    /// The code of a removal that came while parked, if any.
    var parkedRemoval: String? { state.withLock { $0.removal } }
}

/// The joined participants whose signaling may come back: one entry per join token (room, user,
/// issue and expiry time) held by the ``SignalingSession`` that owns it. When the owner's socket
/// drops without `leave_room` or a removal, the entry is parked for the resume window
/// (`SFU_RESUME_WINDOW_S`): the peer stays in the room with its media, tracks, subscriptions and
/// recording, nobody is told. A `join_room {resume: true}` with the same token within the window
/// takes the entry over (from a parked owner, or from one whose socket has not noticed it is dead
/// yet, which is then closed with `replaced`); when the window ends the parked owner finishes as a
/// lost connection.
package final class SessionResumption: Sendable {
    package let windowNanos: Int64

    struct Entry {
        let owner: SignalingSession
        let joined: RoomSignaling.Joined
        /// Set while parked: which parking this is (a late timer of an earlier one does nothing).
        var parking: Int?
    }

    /// How an owner's session ended as far as resumption goes (``release(_:owner:)``).
    enum Release: Equatable {
        /// It owned the entry (now gone): it leaves the room as usual.
        case owner
        /// A resume took its participant over: it must not leave the room or record a leave.
        case handedOver
        /// It had no entry (never joined, or replaced by a fresh join of the same token).
        case notRegistered
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var nextParking = 0
    }

    private let state = Mutex(State())

    package init(windowSeconds: Int) {
        windowNanos = Int64(windowSeconds) * 1_000_000_000
    }

    static func key(_ claims: JoinClaims) -> String { "\(claims.room)\u{0}\(claims.sub)\u{0}\(claims.iat)\u{0}\(claims.exp)" }

    /// A session joined: it owns its token's entry (a fresh join of the same token replaces the entry).
    func register(_ claims: JoinClaims, owner: SignalingSession, joined: RoomSignaling.Joined) {
        state.withLock { $0.entries[Self.key(claims)] = Entry(owner: owner, joined: joined) }
    }

    /// The owner's socket dropped: parks its entry for the window. When the window ends (or a
    /// removal comes meanwhile) the owner finishes with `connection_lost` (or the removal's code).
    /// - Returns: false when there is no window or `owner` does not own the entry: finish now.
    func park(_ claims: JoinClaims, owner: SignalingSession, unsent: () -> [SessionSignal]) -> Bool {
        guard windowNanos > 0 else { return false }
        let key = Self.key(claims)
        let parked: (Int, Entry)? = state.withLock { s in
            guard var entry = s.entries[key], entry.owner === owner else { return nil }
            let parking = s.nextParking
            s.nextParking += 1
            entry.parking = parking
            s.entries[key] = entry
            return (parking, entry)
        }
        guard let (parking, entry) = parked else { return false }
        let window = windowNanos
        let expire: @Sendable () -> Void = { [weak self] in
            Task { await self?.expire(key: key, parking: parking) }
        }
        entry.joined.relay.park(unsent: unsent, onEnd: expire)
        Task {
            try? await Task.sleep(nanoseconds: UInt64(window))
            await self.expire(key: key, parking: parking)
        }
        return true
    }

    /// Ends a parking that is still in place: the owner leaves the room.
    private func expire(key: String, parking: Int) async {
        let owner: SignalingSession? = state.withLock { s in
            guard let entry = s.entries[key], entry.parking == parking else { return nil }
            s.entries[key] = nil
            return entry.owner
        }
        guard let owner else { return }
        await owner.finishParked()
    }

    /// `join_room {resume: true}`: takes the token's entry over for `newOwner`.
    /// - Returns: the joined participant and its previous owner (when that one was still attached,
    ///   it must be told and closed), or nil when there is nothing to resume.
    func takeOver(_ claims: JoinClaims, newOwner: SignalingSession) -> (joined: RoomSignaling.Joined, previous: SignalingSession, wasAttached: Bool)? {
        state.withLock { s in
            let key = Self.key(claims)
            guard let entry = s.entries[key], entry.owner !== newOwner else { return nil }
            s.entries[key] = Entry(owner: newOwner, joined: entry.joined)
            // Whatever the old owner does next (an attached one finishes when its socket closes),
            // it must not take the participant out of the room.
            entry.owner.handedOver.withLock { $0 = true }
            return (entry.joined, entry.owner, entry.parking == nil)
        }
    }

    /// A session is finishing: whether it still owns its participant.
    func release(_ claims: JoinClaims, owner: SignalingSession) -> Release {
        state.withLock { s in
            if owner.handedOver.withLock({ $0 }) { return .handedOver }
            let key = Self.key(claims)
            guard let entry = s.entries[key], entry.owner === owner else { return .notRegistered }
            s.entries[key] = nil
            return .owner
        }
    }

    /// Participants parked now (for tests and metrics).
    package var parkedCount: Int { state.withLock { $0.entries.values.filter { $0.parking != nil }.count } }
}
