import NIOConcurrencyHelpers

/// Join tokens that no longer let their user in: when a participant is removed through the API,
/// every token for that user and room issued up to then (`iat` at or before the removal) is refused
/// until it would have expired anyway. A token the backend mints afterwards works (letting the user
/// back is the backend's decision). Kept in memory: a restart forgets them (documented in docs/API.md).
package final class TokenRevocations: Sendable {
    private struct Key: Hashable { let room: String; let user: String }
    private let revoked = NIOLockedValueBox<[Key: Int64]>([:])
    /// How long a revocation is kept: no token lives longer than this (ControlAPI.Defaults.maxTokenTTLS).
    let keepSeconds: Int64

    package init(keepSeconds: Int64 = 86_400) { self.keepSeconds = keepSeconds }

    /// Refuses `user`'s tokens for `room` issued at or before `atSeconds`.
    package func revoke(room: String, user: String, atSeconds: Int64) {
        revoked.withLockedValue { map in
            map[Key(room: room, user: user)] = atSeconds
            map = map.filter { atSeconds - $0.value <= keepSeconds }
        }
    }

    /// Whether a token for `user` in `room` issued at `issuedAt` was revoked.
    package func isRevoked(room: String, user: String, issuedAt: Int64) -> Bool {
        revoked.withLockedValue { $0[Key(room: room, user: user)].map { issuedAt <= $0 } ?? false }
    }
}
