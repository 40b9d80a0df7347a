import DTLS
import SFU
import WebRTCClient

/// One simulated participant: its signaling (a WebSocket to the SFU, or the floor's control line),
/// its publisher connection and media streams when it publishes, its subscriber connection.
final class Participant {
    let room: Int
    let index: Int
    let userID: String
    let publishes: Bool
    /// The streams it publishes (empty for subscribe-only participants).
    let streams: [OutgoingStream]
    var socket: SignalingSocket?
    var joinSent = false
    var peerID: String?
    let publisherICE = ICELiteAgent.Credentials.random()
    var offerSent = false
    var publisher: LoadPublisher?
    var subscriber: LoadSubscriber?
    var subscriberOffers = 0
    var errors: [String] = []
    /// Loss counters of the subscriber when the window opened (RFC 3550, per SSRC, summed).
    var sequenceLossAtOpen: (expected: Int64, lost: Int64) = (0, 0)

    init(room: Int, index: Int, userID: String, publishes: Bool, streams: [OutgoingStream]) {
        self.room = room
        self.index = index
        self.userID = userID
        self.publishes = publishes
        self.streams = streams
    }

    /// The publisher offer for its streams (audio m-line, then video; simulcast layers as RIDs).
    func publisherOffer(fingerprint: String) -> String {
        var sdpStreams: [ClientSDP.Stream] = []
        if let audio = streams.first(where: { $0.kind == .audio }) {
            sdpStreams.append(ClientSDP.Stream(kind: .audio, ssrc: audio.ssrc))
        }
        let video = streams.filter { $0.kind == .video }
        if video.count > 1 {
            sdpStreams.append(ClientSDP.Stream(kind: .video, ssrc: video[0].ssrc, rids: video.compactMap { $0.rid.map { String(decoding: $0, as: UTF8.self) } }))
        } else if let v = video.first {
            sdpStreams.append(ClientSDP.Stream(kind: .video, ssrc: v.ssrc, rtxSSRC: v.rtxSSRC))
        }
        return ClientSDP.publisherOffer(streams: sdpStreams, ice: publisherICE, fingerprint: fingerprint)
    }
}

/// The server's ICE and DTLS parameters and its first UDP host candidate (or, for ICE-TCP, its first
/// passive TCP one), from an SDP.
struct ServerEndpoint {
    var ice: ICELiteAgent.Credentials
    var fingerprint: CertificateFingerprint
    var address: TransportAddress

    init?(_ sdp: SessionDescription, tcp: Bool = false) {
        guard let remote = try? RemoteTransportParameters(sdp) else { return nil }
        var found: TransportAddress?
        for m in sdp.media where found == nil {
            for c in m.values("candidate") {
                // foundation component transport priority address port typ host
                let f = c.split(separator: " ")
                guard f.count >= 6, f[2].lowercased() == (tcp ? "tcp" : "udp"), let port = UInt16(f[5]),
                      let address = TransportAddress(host: String(f[4]), port: port) else { continue }
                if tcp, !c.contains("tcptype passive") { continue }
                found = address.over(tcp: tcp)
                break
            }
        }
        guard let found else { return nil }
        ice = remote.ice
        fingerprint = remote.fingerprint
        address = found
    }

    init(ice: ICELiteAgent.Credentials, fingerprint: CertificateFingerprint, address: TransportAddress) {
        self.ice = ice
        self.fingerprint = fingerprint
        self.address = address
    }
}
