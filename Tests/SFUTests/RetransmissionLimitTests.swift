import RTP
import Testing
import TestSupport
@testable import SFU

/// NACKs from a hostile or broken subscriber: no amplification, and resends that never reuse an
/// SRTP nonce with different bytes.
@Suite("Retransmission limits, in memory", .serialized)
struct RetransmissionLimitTests {
    static func videoConsumer(_ h: RoomHarness, _ sub: RoomHarness.Peer, track: String) throws -> Consumer {
        let participant = try #require(h.room.participant(sub.info.peerID))
        return try #require(participant.subscriber?.slots.compactMap(\.consumer).first { $0.producer.trackID == track })
    }

    /// One subscriber that received 10 video packets (RTX negotiated): the room, the subscriber,
    /// the video and RTX SSRCs it sees, those packets and its video consumer.
    static func tenVideoPackets() throws -> (h: RoomHarness, s: RoomHarness.Peer, video: UInt32, rtx: UInt32, packets: [RTPPacket], consumer: Consumer) {
        let (h, pub, subs, tracks) = try RoomTests.room(subscribers: 1)
        RoomTests.stream(h, pub, frames: 10)
        let s = subs[0]
        let video = try #require(s.ssrc(peer: pub.info.peerID, track: tracks.video))
        let rtxSSRC = try #require(video.rtx)
        let packets = try (s.received[video.ssrc] ?? []).map { try RTPPacket(parsing: $0) }
        try #require(packets.count == 10)
        return (h, s, video.ssrc, rtxSSRC, packets, try videoConsumer(h, s, track: tracks.video))
    }

    @Test func aNACKStormResendsEachPacketOncePerRoundTrip() throws {
        let (h, s, video, rtxSSRC, packets, c) = try Self.tenVideoPackets()
        // 20 NACK datagrams at once, each naming packet 3 forty times.
        let lost = [UInt16](repeating: packets[3].sequenceNumber, count: 40)
        for _ in 0..<20 { s.subscriber?.sendRTCP([.nack(GenericNACK(senderSSRC: 1, mediaSSRC: video, lost: lost))]) }
        h.run(steps: 2)
        #expect((s.received[rtxSSRC] ?? []).count == 1)
        #expect(c.retransmitted == 1)
        #expect(c.retransmissionsThrottled >= 19)
        // A round trip later (no RTT measured yet: 100 ms), it may go once more.
        h.run(steps: 11)
        s.subscriber?.sendRTCP([.nack(GenericNACK(senderSSRC: 1, mediaSSRC: video, lost: lost))])
        h.run(steps: 2)
        #expect((s.received[rtxSSRC] ?? []).count == 2)
    }

    /// A receiver that asks late (aiortc NACKs a lost resend again only at its next new gap, and its
    /// jitter buffer waits for the packet until 512 later ones have come) gets a packet sent 3 s
    /// before, as long as it is stored; one older than the limit is a miss.
    @Test func aLateNACKIsAnsweredUpToFiveSeconds() throws {
        let (h, s, video, rtxSSRC, packets, c) = try Self.tenVideoPackets()
        h.run(steps: 300)  // 3 s
        s.subscriber?.sendRTCP([.nack(GenericNACK(senderSSRC: 1, mediaSSRC: video, lost: [packets[3].sequenceNumber]))])
        h.run(steps: 2)
        #expect((s.received[rtxSSRC] ?? []).count == 1)
        #expect(c.retransmitted == 1 && c.retransmissionMisses == 0)
        h.run(steps: 250)  // 5.5 s after it was sent
        s.subscriber?.sendRTCP([.nack(GenericNACK(senderSSRC: 1, mediaSSRC: video, lost: [packets[4].sequenceNumber]))])
        h.run(steps: 2)
        #expect((s.received[rtxSSRC] ?? []).count == 1)
        #expect(c.retransmissionMisses == 1)
    }

    @Test func retransmissionsStayWithinAShareOfTheDownlink() throws {
        let (h, pub, subs, tracks) = try RoomTests.room(subscribers: 1)
        // 300 large packets, then NACKs for all of them every 10 ms for a second.
        for i in 0..<300 {
            h.sendRTP(pub, RTPPacket(payloadType: 96, sequenceNumber: 100 &+ UInt16(i), timestamp: 90_000 &+ UInt32(i / 3) * 3000, ssrc: RoomTests.videoSSRC,
                                     marker: i % 3 == 2, payload: vp8Payload(keyframe: i == 0, size: 1100, fill: UInt8(truncatingIfNeeded: i))))
            if i % 10 == 9 { h.run() }
        }
        let s = subs[0]
        let video = try #require(s.ssrc(peer: pub.info.peerID, track: tracks.video))
        let rtxSSRC = try #require(video.rtx)
        let sent = try (s.received[video.ssrc] ?? []).map { try RTPPacket(parsing: $0) }
        try #require(sent.count == 300)
        let all = sent.map(\.sequenceNumber)
        let start = h.now
        for _ in 0..<100 {
            s.subscriber?.sendRTCP([.nack(GenericNACK(senderSSRC: 1, mediaSSRC: video.ssrc, lost: all))])
            h.run()
        }
        let seconds = Double(h.now - start) / 1e9
        let bytes = (s.received[rtxSSRC] ?? []).reduce(0) { $0 + $1.count }
        let c = try Self.videoConsumer(h, s, track: tracks.video)
        let estimate = try #require(h.room.participant(s.info.peerID)?.subscriber?.downlink.estimator.estimate)
        let rate = max(estimate * SubscriberConnection.RetransmissionBudget.share, SubscriberConnection.RetransmissionBudget.floorBitsPerSecond) / 8
        let allowed = rate * (seconds + SubscriberConnection.RetransmissionBudget.burstSeconds)
        // Unlimited, this was every packet every 100 ms: 300 x 10 x ~1.1 kB = 3.4 MB.
        #expect(Double(bytes) <= allowed * 1.05, "resent \(bytes) bytes in \(seconds) s, budget \(Int(allowed))")
        #expect(bytes > 0)
        #expect(c.retransmissionsThrottled > 0)
    }

    /// Without RTX a NACKed packet goes again under its own SSRC and sequence number: the bytes
    /// must be those sent the first time (transport-wide sequence number included), or AES-GCM
    /// would encrypt a different plaintext under the same nonce. On the wire the two datagrams
    /// are then identical (same keys, same IV, same plaintext).
    @Test func withoutRTXAResendIsTheSamePacketByteForByte() throws {
        let (h, pub, subs, tracks) = try RoomTests.room(subscribers: 1)
        let s = subs[0]
        let c = try Self.videoConsumer(h, s, track: tracks.video)
        c.rtxPayloadType = nil
        var wire: [[UInt8]] = []
        h.onClientDatagram = { bytes, to in if to == s.subscriberAddress, bytes.count > 12, bytes[0] & 0xC0 == 0x80, bytes[1] & 0x7F == 96 { wire.append(bytes) } }
        RoomTests.stream(h, pub, frames: 10)
        let video = try #require(s.ssrc(peer: pub.info.peerID, track: tracks.video))
        let first = s.received[video.ssrc] ?? []
        try #require(first.count == 10)
        let original = try RTPPacket(parsing: first[3])
        try #require(original.extensionValue(id: RoomSDP.subscriberTransportCCID) != nil)
        s.subscriber?.sendRTCP([.nack(GenericNACK(senderSSRC: 1, mediaSSRC: video.ssrc, lost: [original.sequenceNumber]))])
        h.run(steps: 2)
        #expect(c.retransmitted == 1)
        let seq = original.sequenceNumber
        let copies = wire.filter { UInt16($0[2]) << 8 | UInt16($0[3]) == seq }
        #expect(copies.count == 2)
        #expect(copies.first == copies.last)
    }

    /// A peer that floods RTCP has what is over its budget dropped before decryption; its
    /// feedback keeps flowing at the budget's rate.
    @Test func anRTCPFloodIsCutAtTheBudget() throws {
        let (h, pub, subs, tracks) = try RoomTests.room(subscribers: 1)
        RoomTests.stream(h, pub, frames: 3)
        let s = subs[0]
        let video = try #require(s.ssrc(peer: pub.info.peerID, track: tracks.video))
        let transport = try #require(h.room.participant(s.info.peerID)?.subscriber?.transport)
        let before = transport.statistics.rtcpPacketsIn
        // 2,000 PLIs in one read, then 2,000 more a second later.
        for _ in 0..<2000 { s.subscriber?.sendRTCP([.pli(PictureLossIndication(senderSSRC: 1, mediaSSRC: video.ssrc))]) }
        h.run()
        let first = transport.statistics.rtcpPacketsIn - before
        #expect(first <= Int(WebRTCTransport.rtcpBudget.burst) + 5)
        h.run(steps: 100)
        for _ in 0..<2000 { s.subscriber?.sendRTCP([.pli(PictureLossIndication(senderSSRC: 1, mediaSSRC: video.ssrc))]) }
        h.run()
        let second = transport.statistics.rtcpPacketsIn - before - first
        #expect(second <= Int(WebRTCTransport.rtcpBudget.burst) + 5)
        #expect(transport.statistics.rtcpRateLimited >= 3800)
        // The keyframe requests reaching the publisher stay paced (one per second at most).
        let plis = pub.publisherRTCP.filter { if case .pli = $0 { return true } else { return false } }.count
        #expect(plis <= 3)
    }
}

extension RetransmissionLimitTests {
    /// A publisher sending under ever new SSRCs (each one a libsrtp2 stream): at most
    /// ``WebRTCTransport/maxInboundSSRCs`` are decrypted, the rest dropped and counted, and the
    /// declared streams keep flowing to the subscriber.
    @Test func newSSRCsBeyondTheCapAreDroppedUnread() throws {
        let (h, pub, subs, tracks) = try RoomTests.room(subscribers: 1)
        RoomTests.stream(h, pub, frames: 3)
        let transport = try #require(h.room.participant(pub.info.peerID)?.publisher?.transport)
        for i in 0..<200 {
            h.sendRTP(pub, RTPPacket(payloadType: 96, sequenceNumber: 1, timestamp: 0, ssrc: 0x5000_0000 + UInt32(i), marker: true,
                                     payload: vp8Payload(keyframe: true)))
        }
        h.run()
        // The first 3 frames made 2 SSRCs known (audio, video): 62 more fit, 138 are dropped.
        #expect(transport.statistics.ssrcLimited == 200 - (WebRTCTransport.maxInboundSSRCs - 2), "\(transport.statistics.ssrcLimited)")
        // The same unknown SSRC again is admitted only if it was one of the 62.
        h.sendRTP(pub, RTPPacket(payloadType: 96, sequenceNumber: 2, timestamp: 0, ssrc: 0x5000_0000, marker: true, payload: vp8Payload(keyframe: true)))
        h.sendRTP(pub, RTPPacket(payloadType: 96, sequenceNumber: 2, timestamp: 0, ssrc: 0x5000_0000 + 199, marker: true, payload: vp8Payload(keyframe: true)))
        h.run()
        #expect(transport.statistics.ssrcLimited == 200 - (WebRTCTransport.maxInboundSSRCs - 2) + 1)
        let s = subs[0]
        let video = try #require(s.ssrc(peer: pub.info.peerID, track: tracks.video))
        let before = (s.received[video.ssrc] ?? []).count
        RoomTests.stream(h, pub, frames: 5, firstSeq: 103)
        #expect((s.received[video.ssrc] ?? []).count == before + 5, "the declared video still flows")
    }
}

extension RetransmissionLimitTests {
    /// A receiver report's LSR/DLSR pair gives the round trip; one that makes it longer than
    /// 5 s (a stale or forged report) is ignored instead of stretching every RTT-based timer.
    @Test func anRTTBeyondFiveSecondsIsIgnored() throws {
        let (h, pub, subs, tracks) = try RoomTests.room(subscribers: 1)
        let s = subs[0]
        let video = try #require(s.ssrc(peer: pub.info.peerID, track: tracks.video))
        // Our SRs to the subscriber map its RTP time onto the publisher's NTP: the publisher's SR first.
        pub.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: RoomTests.videoSSRC, ntpTime: 5000 << 32, rtpTime: 90_000, packetCount: 0, octetCount: 0))])
        h.run()
        for i in 0..<3 { RoomTests.stream(h, pub, frames: 50, firstSeq: 100 + UInt16(i) * 50, keyframes: i == 0 ? [0] : []) }
        let sr = try #require(s.subscriberRTCP.lazy.compactMap { if case .senderReport(let r) = $0, r.ssrc == video.ssrc { return r } else { return nil } }.first,
                              "the server sent no SR to the subscriber")
        let subscriber = try #require(h.room.participant(s.info.peerID)?.subscriber)
        let middle = UInt32(truncatingIfNeeded: sr.ntpTime >> 16)
        func report(delay: UInt32) {
            s.subscriber?.sendRTCP([.receiverReport(ReceiverReport(ssrc: 77, reports: [ReceptionReport(ssrc: video.ssrc, lastSR: middle, delaySinceLastSR: delay)]))])
            h.run()
        }
        // Answered as if held for all but ~50 ms of the time since the SR: a plausible RTT.
        let sentAt = try #require(subscriber.reports.sent.last(where: { $0.middle == middle })?.nanos)
        let held = UInt32((h.now - sentAt - 50_000_000) * 65536 / 1_000_000_000)
        report(delay: held)
        let plausible = try #require(subscriber.rttNanos)
        #expect(plausible > 30_000_000 && plausible < 80_000_000, "\(plausible)")
        // 6 s later, the same SR answered with no hold: a 6 s round trip, ignored.
        h.run(steps: 600)
        report(delay: 0)
        #expect(subscriber.rttNanos == plausible)
    }
}

@Suite("Server-side mute, in memory", .serialized)
struct ServerMuteTests {
    @Test func theParticipantCannotUndoAServerMute() throws {
        let (h, pub, subs, tracks) = try RoomTests.room(subscribers: 1)
        var seq: UInt16 = 7000
        func sendAudio(_ n: Int) {
            for _ in 0..<n {
                h.sendRTP(pub, RTPPacket(payloadType: 111, sequenceNumber: seq, timestamp: UInt32(seq) * 960, ssrc: RoomTests.audioSSRC,
                                         payload: [0x78] + [UInt8](repeating: 7, count: 40)))
                seq &+= 1
                h.run()
            }
        }
        sendAudio(5)
        let s = subs[0]
        let audio = try #require(s.ssrc(peer: pub.info.peerID, track: tracks.audio))
        let count = { (s.received[audio.ssrc] ?? []).count }
        let before = count()
        #expect(before == 5)
        #expect(h.room.setEnabled(peerID: pub.info.peerID, kind: .audio, enabled: false, origin: .server, nowNanos: h.now) == .applied)
        // The muted participant turns its microphone back on itself: refused, told why, still muted.
        #expect(h.room.setEnabled(peerID: pub.info.peerID, kind: .audio, enabled: true, nowNanos: h.now) == .mutedByServer)
        #expect(pub.signals.contains { if case .refused(.mutedByServer, _) = $0 { true } else { false } })
        sendAudio(5)
        #expect(count() == before)
        // Everyone saw it muted, and no "enabled: true" after the server mute.
        let toggles = s.signals.compactMap { if case .toggled(.audio, _, _, let enabled) = $0 { enabled } else { nil } }
        #expect(toggles == [false])
        // The server unmutes: the participant's own wish (on) holds again.
        #expect(h.room.setEnabled(peerID: pub.info.peerID, kind: .audio, enabled: true, origin: .server, nowNanos: h.now) == .applied)
        sendAudio(5)
        #expect(count() == before + 5)
        // A participant that muted itself stays muted when the server unmutes.
        #expect(h.room.setEnabled(peerID: pub.info.peerID, kind: .audio, enabled: false, nowNanos: h.now) == .applied)
        #expect(h.room.setEnabled(peerID: pub.info.peerID, kind: .audio, enabled: false, origin: .server, nowNanos: h.now) == .applied)
        #expect(h.room.setEnabled(peerID: pub.info.peerID, kind: .audio, enabled: true, origin: .server, nowNanos: h.now) == .applied)
        sendAudio(5)
        #expect(count() == before + 5)
    }
}
