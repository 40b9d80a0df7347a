import DTLS
import Testing
@testable import SFU

@Suite("SDP attributes as types: a=setup and the direction")
struct SDPAttributeTests {
    /// RFC 5763 5: an answerer to actpass (or active) is passive, the DTLS server; to passive it is
    /// active, the client. What an SDP says that is not a setup value counts as actpass.
    @Test func setupAnswersAndRoles() {
        #expect(DTLSSetup(sdpValue: "actpass").answer == .passive)
        #expect(DTLSSetup(sdpValue: "active").answer == .passive)
        #expect(DTLSSetup(sdpValue: "passive").answer == .active)
        #expect(DTLSSetup(sdpValue: nil) == .actpass && DTLSSetup(sdpValue: "PASSIVE") == .actpass && DTLSSetup(sdpValue: "") == .actpass)
        #expect(DTLSSetup.passive.role == .server && DTLSSetup.active.role == .client)
        #expect(DTLSSetup(sdpValue: "holdconn").answer.role == .server)
    }

    @Test func directionsReadAndAnswer() throws {
        let sdp = try SessionDescription(parsing: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
            + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n"
            + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n"
            + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n"
            + "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=inactive\r\n")
        #expect(sdp.media.map(\.direction) == [.sendonly, .sendrecv, .recvonly, .inactive])
        #expect(sdp.media.map(\.direction.answered) == [.recvonly, .sendrecv, .sendonly, .inactive])
        #expect(sdp.media.map(\.direction.sends) == [true, true, false, false])
        #expect(sdp.media.map(\.direction.receives) == [false, true, true, false])
        #expect(MediaDirection.recvonly.attribute == SessionDescription.Attribute("recvonly"))
    }
}
