import DTLS
import Foundation
import RTP
import Testing
import TestSupport
@testable import SFU
import WebRTCClient

/// ICE restarts in a room, in memory (docs/SIGNALING.md "ICE restart"): the client's new credentials
/// on the publisher connection (a re-offer), the subscriber's on request and by the server itself
/// when the client's checks stop; tracks, SSRCs and forwarding kept across, a changed address followed.
@Suite("ICE restart, in memory", .serialized)
struct ICERestartTests {
    typealias R = RoomTests

    static func signals(_ peer: RoomHarness.Peer, after: Int) -> [RoomSignal] { Array(peer.signals[after...]) }

    static func trackChurn(_ signals: [RoomSignal]) -> Int {
        signals.filter { if case .trackPublished = $0 { true } else if case .trackUnpublished = $0 { true } else { false } }.count
    }

    @Test func aPublisherReofferWithNewCredentialsRestartsAndFollowsTheNewNetwork() throws {
        let (h, pub, subs, tracks) = try R.room(subscribers: 1)
        let sub = subs[0]
        R.stream(h, pub, frames: 10)
        let video = try #require(sub.ssrc(peer: pub.info.peerID, track: tracks.video))
        #expect(sub.received[video.ssrc]?.count == 10)
        let client = try #require(pub.publisher)
        let oldServerUfrag = client.remote.ufrag
        let subSignals = sub.signals.count
        let pubSignals = pub.signals.count
        let offersBefore = sub.subscriberOffers.count

        // The phone changes networks and restarts ICE: a new offer with new credentials, same tracks.
        pub.network = 8
        pub.publisherICE = .random()
        h.publish(pub, streams: [.init(kind: .audio, ssrc: R.audioSSRC), .init(kind: .video, ssrc: R.videoSSRC, rtxSSRC: R.rtxSSRC)])
        let told = Self.signals(pub, after: pubSignals)
        guard told.count == 2, case .iceRestarted(.publisher) = told[0], case .publisherAnswer = told[1] else {
            Issue.record("the publisher was not told ice_restarted then answered: \(told)")
            return
        }
        #expect(client.remote.ufrag != oldServerUfrag, "the answer kept the server's credentials")
        #expect(client.local == pub.publisherICE)
        // The worker finds the session by its new ufrag only.
        #expect(h.demux.session(ufrag: oldServerUfrag) == nil)
        let session = try #require(h.demux.session(ufrag: client.remote.ufrag))
        // Checks from the new network are verified, then media goes there.
        for _ in 0..<100 { h.run() }
        #expect(session.transport.remoteAddress == pub.publisherAddress)
        #expect(client.state == .connected)

        // What the old path lost will not come: the subscriber's video restarts at a keyframe (the
        // server asked for one), without a hole.
        let consumer = try #require(h.room.participant(pub.info.peerID)?.producers.first { $0.kind == .video }?.consumers.first)
        #expect(consumer.resyncs == 1 && consumer.waitingForKeyframe)
        R.stream(h, pub, frames: 10, firstSeq: 112, keyframes: [1])
        let packets = try (sub.received[video.ssrc] ?? []).map { try RTPPacket(parsing: $0) }
        #expect(packets.count == 19, "forwarding did not go on from the keyframe after the restart")
        for (a, b) in zip(packets, packets.dropFirst()) { #expect(b.sequenceNumber == a.sequenceNumber &+ 1) }
        #expect(packets.dropFirst(10).first?.payload == vp8Payload(keyframe: true, fill: 1))
        // The others saw nothing: no track left or came, no new subscriber offer.
        #expect(Self.trackChurn(Self.signals(sub, after: subSignals)) == 0)
        #expect(sub.subscriberOffers.count == offersBefore)
        // The server's RTCP (receiver reports, feedback) reaches the publisher at its new address.
        let rtcpBefore = pub.publisherRTCP.count
        for _ in 0..<150 { h.run() }
        #expect(pub.publisherRTCP.count > rtcpBefore)
    }

    @Test func aReofferWithAnotherFingerprintIsRefused() throws {
        let (h, pub, _, _) = try R.room(subscribers: 1)
        pub.publisherICE = .random()
        let offer = ClientSDP.publisherOffer(streams: [.init(kind: .audio, ssrc: R.audioSSRC), .init(kind: .video, ssrc: R.videoSSRC, rtxSSRC: R.rtxSSRC)],
                                             ice: pub.publisherICE, fingerprint: h.serverContext.certificate.sha256Fingerprint)
        let before = pub.signals.count
        h.room.publisherOffer(peerID: pub.info.peerID, offer: try SessionDescription(parsing: offer), nowNanos: h.now)
        let told = Self.signals(pub, after: before)
        guard case .refused(.badOffer, _)? = told.first else {
            Issue.record("a new fingerprint was not refused: \(told)")
            return
        }
        #expect(told.count == 1)
    }

    @Test func theSubscriberRestartsOnRequestAndKeepsItsTracks() throws {
        let (h, pub, subs, tracks) = try R.room(subscribers: 1)
        let sub = subs[0]
        R.stream(h, pub, frames: 10)
        let client = try #require(sub.subscriber)
        let oldServerUfrag = client.remote.ufrag
        let oldClientUfrag = client.local.ufrag
        let before = sub.signals.count
        let video = try #require(sub.ssrc(peer: pub.info.peerID, track: tracks.video))

        #expect(h.room.restartSubscriberICE(peerID: sub.info.peerID))
        let told = Self.signals(sub, after: before)
        guard told.count == 2, case .iceRestarted(.subscriber) = told[0], case .subscriberOffer = told[1] else {
            Issue.record("the subscriber was not told ice_restarted then offered: \(told)")
            return
        }
        #expect(client.remote.ufrag != oldServerUfrag && client.local.ufrag != oldClientUfrag)
        #expect(h.demux.session(ufrag: oldServerUfrag) == nil)
        // The same m-lines and SSRCs in the new offer.
        #expect(sub.ssrc(peer: pub.info.peerID, track: tracks.video)?.ssrc == video.ssrc)
        sub.network = 7
        for _ in 0..<100 { h.run() }
        let session = try #require(h.demux.session(ufrag: client.remote.ufrag))
        #expect(session.transport.remoteAddress == sub.subscriberAddress)
        R.stream(h, pub, frames: 10, firstSeq: 110, keyframes: [])
        #expect(sub.received[video.ssrc]?.count == 20)
        // A subscriber answer that changes credentials without a restart is refused.
        #expect(Self.trackChurn(Self.signals(sub, after: before)) == 0)
    }

    @Test func theServerRestartsASubscriberWhoseChecksStopped() throws {
        let (h, pub, subs, tracks) = try R.room(subscribers: 1)
        let sub = subs[0]
        R.stream(h, pub, frames: 10)
        let video = try #require(sub.ssrc(peer: pub.info.peerID, track: tracks.video))
        let client = try #require(sub.subscriber)
        let oldServerUfrag = client.remote.ufrag
        let before = sub.signals.count
        // The client's path is gone: nothing it sends arrives (its signaling still works).
        h.silent.insert(sub.info.peerID)
        let silentSteps = Int(SubscriberConnection.selfRestartSilenceNanos / 10_000_000) + 100
        for _ in 0..<silentSteps { h.run() }
        let restarts = Self.signals(sub, after: before).filter { if case .iceRestarted(.subscriber) = $0 { true } else { false } }
        #expect(restarts.count == 1, "the server did not restart the silent subscriber once: \(Self.signals(sub, after: before))")
        #expect(client.remote.ufrag != oldServerUfrag)
        // Back on another network before consent runs out: the new credentials work, media flows.
        sub.network = 6
        h.silent.remove(sub.info.peerID)
        for _ in 0..<100 { h.run() }
        #expect(h.room.participant(sub.info.peerID) != nil)
        let session = try #require(h.demux.session(ufrag: client.remote.ufrag))
        #expect(session.transport.remoteAddress == sub.subscriberAddress)
        let received = sub.received[video.ssrc]?.count ?? 0
        R.stream(h, pub, frames: 10, firstSeq: 110, keyframes: [])
        #expect((sub.received[video.ssrc]?.count ?? 0) == received + 10)
        // And past the 30 s consent of the first silence it is still there: consent came back.
        for _ in 0..<2000 { h.run() }
        #expect(h.room.participant(sub.info.peerID) != nil)
        #expect(Self.signals(sub, after: before).filter { if case .iceRestarted = $0 { true } else { false } }.count == 1)
    }

    /// After a publisher's move its NACKed packets of the dead path come back on RTX, an old keyframe
    /// among them (CI saw aiortc stall 10 s on the hole a splice there left). The video restarts at
    /// the live keyframe, without a hole.
    @Test func anOldKeyframeRetransmittedAfterAMoveIsNotWhereVideoRestarts() throws {
        let (h, pub, subs, tracks) = try R.room(subscribers: 1)
        let sub = subs[0]
        R.stream(h, pub, frames: 10)
        let video = try #require(sub.ssrc(peer: pub.info.peerID, track: tracks.video))
        pub.network = 8
        pub.publisherICE = .random()
        h.publish(pub, streams: [.init(kind: .audio, ssrc: R.audioSSRC), .init(kind: .video, ssrc: R.videoSSRC, rtxSSRC: R.rtxSSRC)])
        for _ in 0..<100 { h.run() }
        let consumer = try #require(h.room.participant(pub.info.peerID)?.producers.first { $0.kind == .video }?.consumers.first)
        #expect(consumer.resyncs == 1 && consumer.waitingForKeyframe)

        // Packets 110...129 went to the old address. The publisher resends 115, a keyframe, on RTX.
        let osn: UInt16 = 115
        h.sendRTP(pub, RTPPacket(payloadType: 97, sequenceNumber: 1, timestamp: 90_000 &+ 15 * 3000, ssrc: R.rtxSSRC, marker: true,
                                 payload: [UInt8(osn >> 8), UInt8(osn & 0xFF)] + vp8Payload(keyframe: true, fill: 15)))
        h.run()
        #expect(consumer.waitingForKeyframe, "the consumer restarted at a retransmitted keyframe")
        // Then the live stream: two delta frames, the keyframe the server asked for, a delta frame.
        R.stream(h, pub, frames: 4, firstSeq: 130, keyframes: [2])
        let packets = try (sub.received[video.ssrc] ?? []).map { try RTPPacket(parsing: $0) }
        #expect(packets.count == 12, "forwarded: \(packets.count - 10) packets after the move")
        for (a, b) in zip(packets, packets.dropFirst()) { #expect(b.sequenceNumber == a.sequenceNumber &+ 1) }
        #expect(packets.dropFirst(10).first?.payload == vp8Payload(keyframe: true, fill: 2))
    }

    @Test func aHoleOfMoreThanASecondIsClosedAtTheNextKeyframe() throws {
        let (h, pub, subs, tracks) = try R.room(subscribers: 1)
        let sub = subs[0]
        R.stream(h, pub, frames: 10)
        let video = try #require(sub.ssrc(peer: pub.info.peerID, track: tracks.video))
        // The publisher's path was down for 5 s: 150 packets (sequence numbers and 5 s of
        // timestamps) never arrived. Two delta frames come first, then a keyframe.
        func frame(_ i: Int, keyframe: Bool) {
            h.sendRTP(pub, RTPPacket(payloadType: 96, sequenceNumber: UInt16(100 + i), timestamp: 90_000 &+ UInt32(i) * 3000, ssrc: R.videoSSRC,
                                     marker: true, payload: vp8Payload(keyframe: keyframe, fill: UInt8(truncatingIfNeeded: i))))
            h.run()
        }
        frame(160, keyframe: false)
        frame(161, keyframe: false)
        frame(162, keyframe: true)
        frame(163, keyframe: false)
        let packets = try (sub.received[video.ssrc] ?? []).map { try RTPPacket(parsing: $0) }
        #expect(packets.count == 12, "the delta frames after the hole were forwarded (or the keyframe was not)")
        // No hole in what the subscriber got: nothing it could wait for or NACK in vain.
        for (a, b) in zip(packets, packets.dropFirst()) { #expect(b.sequenceNumber == a.sequenceNumber &+ 1) }
        #expect(packets.dropFirst(10).first?.payload == vp8Payload(keyframe: true, fill: UInt8(162)))
        // A late retransmission of a packet lost in the hole is not forwarded: its output number
        // would be one already used before the hole.
        frame(120, keyframe: false)
        #expect((sub.received[video.ssrc] ?? []).count == 12)
        let consumer = try #require(h.room.participant(pub.info.peerID)?.producers.first { $0.kind == .video }?.consumers.first)
        #expect(consumer.resyncs == 1)
        // A few lost packets (under a second) keep their hole: the publisher may still resend them.
        frame(166, keyframe: false)
        let after = try (sub.received[video.ssrc] ?? []).map { try RTPPacket(parsing: $0) }
        #expect(after.count == 13 && after[12].sequenceNumber == after[11].sequenceNumber &+ 3)
        #expect(consumer.resyncs == 1)
    }
}
