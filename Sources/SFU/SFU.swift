/// The SFU module: STUN + ICE-lite, SDP, the per-peer WebRTC transport, Room/Router, Producer,
/// Consumer, bandwidth estimation and the UDP IO shell. See docs/ARCHITECTURE.md.
public enum SFUModule {
    /// Version of the forwarding core, reported by `/metrics` and `sfu --version`.
    public static let version = "0.1.0"
}
