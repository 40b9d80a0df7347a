import Foundation
import Testing
@testable import Control
@testable import SFU

@Suite("Control API bodies: the contract's JSON from Encodable types")
struct APIBodiesTests {
    func object(_ value: some Encodable) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: try APIJSON.data(value)) as? [String: Any])
    }

    @Test func sessionsSayWhenAndWhyInTheContractsWords() throws {
        let open = ParticipantSessionRecord(id: "pe_a", roomID: "rm_a", userID: "u", name: "U", role: "doctor", joinedAt: 1_764_000_000_000)
        let o = try object(ParticipantSessionBody(open, nowMillis: 1_764_000_002_500))
        // Every key present; an open session's leave fields are explicit nulls.
        #expect(Set(o.keys) == ["peer_id", "user_id", "name", "role", "joined_at", "left_at", "duration_ms", "leave_reason"])
        #expect(o["left_at"] is NSNull && o["leave_reason"] is NSNull && o["duration_ms"] as? Int == 2_500)
        let reasons: [(String?, String)] = [("left", "left"), ("connection_lost", "connection_lost"), ("replaced", "replaced"),
                                            ("room_closed", "room_closed"), ("removed", "removed"), ("rate_limited", "removed"),
                                            ("slow_reader", "removed"), ("bad_message", "removed"), (nil, "left")]
        for (stored, contract) in reasons {
            var closed = open
            closed.leftAt = 1_764_000_001_000
            closed.leaveReason = stored
            let c = try object(ParticipantSessionBody(closed, nowMillis: 1_764_000_009_000))
            #expect(c["leave_reason"] as? String == contract, "\(String(describing: stored))")
            #expect(c["left_at"] as? String == "2025-11-24T16:00:01.000Z" && c["duration_ms"] as? Int == 1_000)
        }
    }

    @Test func roomsLeaveOutWhatTheyDoNotHave() throws {
        let open = RoomRecord(id: "rm_a", name: "A", createdAt: 1_764_000_000_000, maxParticipants: 2, emptyTimeoutS: 60, maxDurationS: 600, autoRecord: true)
        let o = try object(RoomBody(open, participants: nil))
        #expect(Set(o.keys) == ["id", "name", "created_at", "status", "max_participants", "empty_timeout_s", "max_duration_s", "auto_record",
                                "recording_consent"])
        #expect(o["recording_consent"] as? String == "notice")
        var requiring = open
        requiring.consentRequired = true
        #expect(try object(RoomBody(requiring, participants: nil))["recording_consent"] as? String == "required")
        #expect(o["status"] as? String == "open" && o["created_at"] as? String == "2025-11-24T16:00:00.000Z" && o["auto_record"] as? Bool == true)
        var closed = open
        closed.closedAt = 1_764_000_001_500
        closed.closeReason = "empty timeout"
        let c = try object(RoomBody(closed, participants: .sessions([])))
        #expect(c["status"] as? String == "closed" && c["closed_at"] as? String == "2025-11-24T16:00:01.500Z")
        #expect(c["close_reason"] as? String == "empty timeout" && (c["participants"] as? [Any])?.isEmpty == true)
    }

    /// The grade is the worst of what each known figure says (docs/API.md, "Quality").
    @Test func theGradeIsTheWorstOfTheKnownFigures() {
        func q(rtt: Double? = nil, up: Double? = nil, down: Double? = nil, jitter: Double? = nil, estimate: Int64? = nil) -> QualityFigures {
            QualityFigures(rttMs: rtt, uplinkLoss: up, downlinkLoss: down, jitterMs: jitter, publishBitrate: 0, subscribeBitrate: 0, downlinkEstimate: estimate)
        }
        let video = SubscriptionSnapshot(peerID: "p", trackID: "t", kind: .video, source: .camera, paused: false, spatialLayer: nil, targetSpatialLayer: nil,
                                         temporalLayer: nil, targetTemporalLayer: nil, maxSpatial: nil, maxTemporal: nil, layerSwitches: 0, bitrate: 0)
        var paused = video
        paused.paused = true
        #expect(QualityGrade.of(q(), subscriptions: []) == .excellent)
        #expect(QualityGrade.of(q(rtt: 40, up: 0.005, jitter: 5, estimate: 2_500_000), subscriptions: [video]) == .excellent)
        #expect(QualityGrade.of(q(rtt: 160), subscriptions: []) == .good)
        #expect(QualityGrade.of(q(rtt: 40, down: 0.05), subscriptions: []) == .fair)
        #expect(QualityGrade.of(q(jitter: 90), subscriptions: []) == .poor)
        #expect(QualityGrade.of(q(rtt: 40, estimate: 450_000), subscriptions: [video]) == .fair, "a 500 kbit/s link carries no HD video")
        #expect(QualityGrade.of(q(rtt: 40, estimate: 450_000), subscriptions: []) == .excellent, "the downlink counts only for video")
        #expect(QualityGrade.of(q(rtt: 40, estimate: 2_000_000), subscriptions: [video, paused]) == .poor)
        #expect(QualityGrade.of(q(rtt: 40, estimate: 200_000), subscriptions: [video]) == .poor)
    }

    /// A subscription's layer fields are always there, null when unknown (docs/API.md).
    @Test func subscriptionLayersAreNullNotMissing() throws {
        let peer = PeerInfo(peerID: "pe_a", userID: "u", name: "U", role: "patient", canPublish: true, canSubscribe: true)
        var snapshot = ParticipantSnapshot(peer: peer, tracks: [], quality: QualityFigures(rttMs: 12.345, uplinkLoss: nil, downlinkLoss: 0.01234,
                                                                                           jitterMs: nil, publishBitrate: 1000, subscribeBitrate: 2000,
                                                                                           downlinkEstimate: nil), joinedNanos: 0)
        snapshot.subscriptions = [SubscriptionSnapshot(peerID: "pe_b", trackID: "tr_1", kind: .video, source: .camera, paused: false,
                                                       spatialLayer: 1, targetSpatialLayer: nil, temporalLayer: nil, targetTemporalLayer: nil,
                                                       maxSpatial: nil, maxTemporal: nil, layerSwitches: 3, bitrate: 500_000)]
        let o = try object(ParticipantBody(snapshot, nowMillis: 10_000, nowNanos: 2_000_000_000))
        #expect(o["joined_at"] as? String == "1970-01-01T00:00:08.000Z")
        let q = try #require(o["quality"] as? [String: Any])
        #expect(Set(q.keys) == ["publish_bitrate_bps", "subscribe_bitrate_bps", "audio_bitrate_bps", "video_bitrate_bps", "rtt_ms", "downlink_loss", "grade"])
        #expect(q["rtt_ms"] as? Double == 12.3 && q["downlink_loss"] as? Double == 0.012)
        // 1.2 % loss: good (rtt alone would be excellent; the downlink is not known yet).
        #expect(q["grade"] as? String == "good")
        let sub = try #require((o["subscriptions"] as? [[String: Any]])?.first)
        for key in ["target_spatial_layer", "temporal_layer", "target_temporal_layer", "max_spatial", "max_temporal", "width", "height", "fps"] {
            #expect(sub[key] is NSNull, "\(key)")
        }
        #expect(sub["spatial_layer"] as? Int == 1 && sub["layer_switches"] as? Int == 3 && sub["bitrate_bps"] as? Int == 500_000)
    }

    @Test func webhookBodiesCarryTheEnvelope() throws {
        let body = try WebhookEvent.participantLeft(roomID: "rm_a", userID: "u", peerID: "pe_a", reason: "left", leftAtMillis: 0)
            .body(id: "wh_1", createdAtMillis: 1000)
        let o = try #require(JSONSerialization.jsonObject(with: body) as? [String: Any])
        #expect(o["id"] as? String == "wh_1" && o["event"] as? String == "participant_left" && o["created_at"] as? String == "1970-01-01T00:00:01.000Z")
        #expect((o["data"] as? [String: String]) == ["room_id": "rm_a", "user_id": "u", "peer_id": "pe_a", "reason": "left",
                                                    "left_at": "1970-01-01T00:00:00.000Z"])
        let chat = try WebhookEvent.chatMessage(roomID: "rm_a", message: ChatMessageRecord(id: "msg_1", roomID: "rm_a", peerID: "pe_a", userID: "u",
                                                                                          message: "hi “there”", at: 2000))
            .body(id: "wh_2", createdAtMillis: 2000)
        let c = try #require(JSONSerialization.jsonObject(with: chat) as? [String: Any])
        #expect(c["event"] as? String == "chat_message")
        #expect((c["data"] as? [String: String]) == ["room_id": "rm_a", "message_id": "msg_1", "peer_id": "pe_a", "user_id": "u",
                                                    "message": "hi “there”", "timestamp": "1970-01-01T00:00:02.000Z"])
        let error = try object(ErrorBody(error: .init(code: "bad_request", message: "m")))
        #expect((error["error"] as? [String: String]) == ["code": "bad_request", "message": "m"])
    }

    /// The webhook signature as a receiver recomputes it (Python's hmac gives the same hex).
    @Test func webhookSignatureCoversTimeAndBody() {
        let body = Array(#"{"id":"wh_1"}"#.utf8)
        #expect(WebhookDispatcher.signature(secret: "whsec-test", unixTime: 1_796_640_000, body: body)
                == "t=1796640000,v1=4df9b2cbdf29ba8a2df3f852a4a11cbf5919590f0be8dc35bdc44c0ff5cc52cb")
        #expect(WebhookDispatcher.signature(secret: "whsec-test", unixTime: 1_796_640_001, body: body)
                != WebhookDispatcher.signature(secret: "whsec-test", unixTime: 1_796_640_000, body: body))
    }
}
