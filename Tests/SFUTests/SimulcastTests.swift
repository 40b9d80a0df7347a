import DTLS
import Foundation
import RTP
import Testing
import TestSupport
@testable import SFU
import WebRTCClient

/// A VP8 payload with the full descriptor Chromium sends with temporal layers: X, I (15-bit
/// picture id), L (TL0PICIDX), T (TID, Y); then the VP8 payload header and filler that names the
/// layer (`fill`) so the test can tell which stream a forwarded packet came from.
func layeredVP8(keyframe: Bool, pictureID: UInt16, tl0: UInt8, tid: UInt8, sync: Bool, fill: UInt8, size: Int = 300) -> [UInt8] {
    var p: [UInt8] = [0x90, 0xE0, 0x80 | UInt8(pictureID >> 8 & 0x7F), UInt8(truncatingIfNeeded: pictureID), tl0, tid << 6 | (sync ? 0x20 : 0)]
    p += [keyframe ? 0x00 : 0x01, 0x00, 0x00]
    if keyframe { p += [0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00] }
    p += [UInt8](repeating: fill, count: max(0, size - p.count))
    return p
}

/// Simulcast through an in-memory room: a publisher sending three rid-tagged streams (as Chromium
/// does), real transports, a fake clock.
@Suite("Simulcast, in memory", .serialized)
struct SimulcastTests {
    static let audioSSRC: UInt32 = 0x1111_1111
    static let layerSSRCs: [UInt32] = [0xA000_0001, 0xA000_0002, 0xA000_0003]
    static let rids = ["q", "h", "f"]
    /// Each layer's RTP timestamps have their own random-looking base, as in libwebrtc.
    static let timestampBases: [UInt32] = [1_000_000, 2_345_678, 3_999_999_000]

    /// Publisher state: per layer sequence numbers, a picture id and TL0PICIDX per layer.
    final class Publisher {
        let h: RoomHarness
        let peer: RoomHarness.Peer
        var frame = 0
        var seqs: [UInt16] = [100, 20000, 40000]
        var pictureIDs: [UInt16] = [10, 5000, 32000]
        var tl0s: [UInt8] = [0, 100, 250]
        /// L1T3 pattern: TID 0, 2, 1, 2; layer sync on the first TL1 and TL2 frames after a TL0.
        var temporalLayers = true
        /// Layers currently sent.
        var sending: Set<Int> = [0, 1, 2]

        init(h: RoomHarness, peer: RoomHarness.Peer) {
            self.h = h
            self.peer = peer
        }

        /// One frame on every sending layer (keyframe on `keyframes`) and an audio packet; one 10 ms step... at 100 fps.
        func step(keyframes: Set<Int> = []) {
            let tid: UInt8 = temporalLayers ? [0, 2, 1, 2][frame % 4] : 0
            for layer in sending.sorted() {
                let key = keyframes.contains(layer)
                if tid == 0 || key { tl0s[layer] &+= 1 }
                var packet = RTPPacket(payloadType: 96, sequenceNumber: seqs[layer],
                                       timestamp: SimulcastTests.timestampBases[layer] &+ UInt32(frame) * 3000, ssrc: SimulcastTests.layerSSRCs[layer],
                                       marker: true,
                                       payload: layeredVP8(keyframe: key, pictureID: pictureIDs[layer], tl0: tl0s[layer], tid: key ? 0 : tid,
                                                           sync: tid != 0 && frame % 4 != 3, fill: UInt8(0xA0 + layer)))
                try? packet.setExtensions([RTPHeaderExtension(id: RoomHarness.ridExtensionID, value: Array(SimulcastTests.rids[layer].utf8)),
                                           RTPHeaderExtension(id: ClientSDP.midExtensionID, value: Array("1".utf8))])
                h.sendRTP(peer, packet)
                seqs[layer] &+= 1
                pictureIDs[layer] = (pictureIDs[layer] &+ 1) & 0x7FFF
            }
            h.sendRTP(peer, RTPPacket(payloadType: 111, sequenceNumber: 5000 &+ UInt16(frame), timestamp: 48_000 &+ UInt32(frame) * 480,
                                      ssrc: SimulcastTests.audioSSRC, payload: [0x78] + [UInt8](repeating: 1, count: 60)))
            frame += 1
            h.run()
        }

        /// Sender reports for every layer mapping the same instant (frame `frame`) to each layer's timestamp.
        func senderReports() {
            let ntp = (UInt64(3_900_000_000) << 32) + UInt64(frame) * (UInt64(1) << 32) / 100
            let reports = (0..<3).map { layer in
                RTCPPacket.senderReport(SenderReport(ssrc: SimulcastTests.layerSSRCs[layer], ntpTime: ntp,
                                                     rtpTime: SimulcastTests.timestampBases[layer] &+ UInt32(frame) * 3000, packetCount: 1, octetCount: 1))
            }
            _ = peer.publisher?.sendRTCP(reports)
            h.run()
        }
    }

    static func room() throws -> (RoomHarness, Publisher, RoomHarness.Peer, String) {
        let h = try RoomHarness()
        let sub = try h.join("sub")
        let pubPeer = try h.join("pub")
        h.publishSimulcast(pubPeer, audioSSRC: audioSSRC, rids: rids)
        try #require(h.connectAll(), "transports did not connect")
        var video: String?
        for case .trackPublished(let peer, let track) in sub.signals where peer == pubPeer.info.peerID && track.kind == .video {
            video = track.trackID
            #expect(track.simulcast)
        }
        return (h, Publisher(h: h, peer: pubPeer), sub, try #require(video))
    }

    static func consumer(_ h: RoomHarness, _ sub: RoomHarness.Peer, track: String) throws -> Consumer {
        let participant = try #require(h.room.participant(sub.info.peerID))
        return try #require(participant.subscriber?.slots.compactMap(\.consumer).first { $0.producer.trackID == track })
    }

    /// A room whose subscriber has switched to the top layer (2) at its keyframe and received 5 more frames.
    static func roomOnTheTopLayer() throws -> (RoomHarness, Publisher, RoomHarness.Peer, String, Consumer) {
        let (h, pub, sub, track) = try room()
        pub.step(keyframes: [0, 1, 2])
        let c = try consumer(h, sub, track: track)
        c.setTarget(spatial: 2, temporal: 3, nowNanos: h.now)
        pub.step(keyframes: [2])
        for _ in 0..<5 { pub.step() }
        #expect(c.currentSpatial == 2)
        return (h, pub, sub, track, c)
    }

    /// The forwarded video packets, parsed: layer (from the filler byte), seq, timestamp, picture id, TL0PICIDX, TID.
    struct Out {
        var layer: Int
        var seq: UInt16
        var timestamp: UInt32
        var pictureID: UInt16
        var tl0: UInt8
        var tid: UInt8
        var keyframe: Bool
    }

    static func received(_ sub: RoomHarness.Peer, _ ssrc: UInt32) throws -> [Out] {
        try (sub.received[ssrc] ?? []).map { bytes in
            let p = try RTPPacket(parsing: bytes)
            let d = try p.payload.withUnsafeBytes { try VP8Descriptor(parsing: $0) }
            return Out(layer: Int(p.payload.last ?? 0) - 0xA0, seq: p.sequenceNumber, timestamp: p.timestamp, pictureID: d.pictureID ?? 0,
                       tl0: d.tl0PicIdx ?? 0, tid: d.temporalLayer ?? 0, keyframe: p.payload[d.length] & 1 == 0)
        }
    }

    @Test func theAnswerAsksForEveryRidAndTheStreamsAreLearnedFromTheRidExtension() throws {
        let (h, pub, sub, track) = try Self.room()
        let answer = try #require(pub.peer.signals.compactMap { if case .publisherAnswer(let sdp) = $0 { return sdp } else { return nil } }.last)
        #expect(answer.contains("a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f"))
        #expect(answer.contains("a=extmap:\(RoomHarness.ridExtensionID) \(RTPExtensionURI.rtpStreamID)"))
        pub.step(keyframes: [0, 1, 2])
        for _ in 0..<30 { pub.step() }
        let producer = try #require(h.room.participant(pub.peer.info.peerID)?.producers.first { $0.trackID == track })
        #expect(producer.streams.map(\.ssrc) == Self.layerSSRCs.map { Optional($0) })
        #expect(producer.streams.map(\.rid) == Self.rids.map { Optional($0) })
        // Without an estimate yet the subscriber starts on the lowest layer, from its keyframe.
        let ssrc = try #require(sub.ssrc(peer: pub.peer.info.peerID, track: track)).ssrc
        let out = try Self.received(sub, ssrc)
        #expect(out.count >= 25)
        #expect(out.allSatisfy { $0.layer == 0 })
        #expect(out.first?.keyframe == true)
    }

    @Test func switchingLayersKeepsSequenceTimestampPictureIDAndTL0Continuous() throws {
        let (h, pub, sub, track) = try Self.room()
        pub.step(keyframes: [0, 1, 2])
        pub.senderReports()  // (the layers' SSRCs are known from their first packets)
        // 400 ms: past the spacing of keyframe requests after the one sent at the start.
        for _ in 0..<40 { pub.step() }
        let c = try Self.consumer(h, sub, track: track)
        let plisBefore = pub.peer.publisherRTCP.filter { if case .pli(let p) = $0 { return p.mediaSSRC == Self.layerSSRCs[2] } else { return false } }.count
        c.setTarget(spatial: 2, temporal: 3, nowNanos: h.now)
        for _ in 0..<3 { pub.step() }
        // The server asked the publisher for a keyframe of the top layer.
        let plis = pub.peer.publisherRTCP.filter { if case .pli(let p) = $0 { return p.mediaSSRC == Self.layerSSRCs[2] } else { return false } }.count
        #expect(plis > plisBefore)
        // It keeps forwarding the low layer until the top layer's keyframe comes.
        pub.step(keyframes: [2])
        for _ in 0..<20 { pub.step() }
        c.setTarget(spatial: 0, temporal: 3, nowNanos: h.now)
        for _ in 0..<4 { pub.step() }
        pub.step(keyframes: [0])
        for _ in 0..<20 { pub.step() }

        let ssrc = try #require(sub.ssrc(peer: pub.peer.info.peerID, track: track)).ssrc
        let out = try Self.received(sub, ssrc)
        // The step with the top layer's keyframe carries the low layer's frame too (sent first):
        // both go out, the keyframe one tick later.
        #expect(out.count == 1 + 40 + 3 + 2 + 20 + 4 + 1 + 20)
        #expect(c.layerSwitches == 2)
        // Layers in order: low, then top from its keyframe on, then low from its keyframe on.
        let layers = out.map(\.layer)
        let firstTop = try #require(layers.firstIndex(of: 2))
        #expect(out[firstTop].keyframe)
        #expect(layers[..<firstTop].allSatisfy { $0 == 0 })
        let back = try #require(layers[firstTop...].firstIndex(of: 0))
        #expect(out[back].keyframe)
        #expect(layers[firstTop..<back].allSatisfy { $0 == 2 })
        #expect(layers[back...].allSatisfy { $0 == 0 })
        // One continuous stream for the subscriber.
        for (i, (a, b)) in zip(out, out.dropFirst()).enumerated() {
            #expect(b.seq == a.seq &+ 1, "sequence \(a.seq) -> \(b.seq)")
            #expect(b.pictureID == (a.pictureID &+ 1) & 0x7FFF, "picture id \(a.pictureID) -> \(b.pictureID)")
            // TL0PICIDX goes up by one at each base-layer frame and never jumps.
            let step = b.tl0 &- a.tl0
            #expect(step == (b.tid == 0 ? 1 : 0), "TL0PICIDX \(a.tl0) -> \(b.tl0) (tid \(b.tid))")
            let tsStep = Int32(bitPattern: b.timestamp &- a.timestamp)
            if i + 1 == firstTop {
                // Same capture instant on both layers: the keyframe follows one tick later.
                #expect(tsStep == 1)
            } else {
                // Elsewhere (the switch down included, aligned through the SRs) one frame = 3000 ticks.
                #expect(tsStep == 3000, "timestamp step \(tsStep) at \(i): layer \(a.layer) -> \(b.layer)")
            }
        }
    }

    @Test func temporalLayersAreDroppedWithoutGapsAndComeBackAtALayerSyncFrame() throws {
        let (h, pub, sub, track) = try Self.room()
        pub.step(keyframes: [0, 1, 2])
        for _ in 0..<7 { pub.step() }
        let c = try Self.consumer(h, sub, track: track)
        c.setTarget(spatial: 0, temporal: 0, nowNanos: h.now)
        for _ in 0..<16 { pub.step() }
        c.setTarget(spatial: 0, temporal: 2, nowNanos: h.now)
        for _ in 0..<8 { pub.step() }
        let ssrc = try #require(sub.ssrc(peer: pub.peer.info.peerID, track: track)).ssrc
        let out = try Self.received(sub, ssrc)
        // 8 frames with every layer, 16 at TL0 only (4 frames), then back to all layers.
        #expect(out.count == 8 + 4 + 8, "got \(out.count)")
        #expect(out[8..<12].allSatisfy { $0.tid == 0 })
        #expect(out[12...].contains { $0.tid == 2 })
        for (a, b) in zip(out, out.dropFirst()) {
            #expect(b.seq == a.seq &+ 1)
            #expect(b.pictureID == (a.pictureID &+ 1) & 0x7FFF, "picture ids of dropped frames leave no gap")
            #expect(Int32(bitPattern: b.timestamp &- a.timestamp) > 0)
        }
        #expect(c.currentTemporal == 2)
    }

    @Test func setLayerCapsTheSubscriptionAtTheNextKeyframeOfTheLowLayer() throws {
        let (h, pub, sub, track, c) = try Self.roomOnTheTopLayer()
        #expect(h.room.setLayer(peerID: sub.info.peerID, trackID: track, maxSpatial: 0, maxTemporal: nil, nowNanos: h.now))
        #expect(c.targetSpatial == 0 && c.maxSpatial == 0)
        pub.step()
        #expect(c.currentSpatial == 2, "no switch before the low layer's keyframe")
        pub.step(keyframes: [0])
        #expect(c.currentSpatial == 0)
        // The allocator now keeps it there whatever the estimate (the cap), and the route shows it.
        for _ in 0..<30 { pub.step() }
        #expect(c.currentSpatial == 0)
        let snapshot = try #require(h.room.snapshot(nowNanos: h.now).first { $0.peer.peerID == sub.info.peerID })
        let subscription = try #require(snapshot.subscriptions.first { $0.trackID == track })
        #expect(subscription.spatialLayer == 0 && subscription.targetSpatialLayer == 0 && subscription.maxSpatial == 0)
        #expect(subscription.layerSwitches == 2)
        #expect(!h.room.setLayer(peerID: sub.info.peerID, trackID: "tr_nope", maxSpatial: 0, maxTemporal: nil, nowNanos: h.now))
    }

    /// After a switch, a NACK for a packet of the stream left behind is not answered (its frames
    /// will not be decoded, and at a switch down the resends would crowd the bottleneck and the new
    /// layer's keyframe); one for the new stream is.
    @Test func nacksForTheStreamLeftBehindAreNotAnswered() throws {
        let (h, pub, sub, track, c) = try Self.roomOnTheTopLayer()
        c.setTarget(spatial: 0, temporal: 3, nowNanos: h.now)
        pub.step(keyframes: [0])
        for _ in 0..<3 { pub.step() }
        #expect(c.currentSpatial == 0)
        let ssrcs = try #require(sub.ssrc(peer: pub.peer.info.peerID, track: track))
        let rtxSSRC = try #require(ssrcs.rtx)
        let out = try Self.received(sub, ssrcs.ssrc)
        let old = try #require(out.last { $0.layer == 2 }).seq
        let new = try #require(out.last { $0.layer == 0 }).seq
        // (Probe padding goes on the RTX SSRC too: only resends carry a payload.)
        func resent() throws -> [RTPPacket] {
            try (sub.received[rtxSSRC] ?? []).map { try RTPPacket(parsing: $0) }.filter { $0.payload.count > 2 }
        }
        let before = try resent().count
        sub.subscriber?.sendRTCP([.nack(GenericNACK(senderSSRC: 1, mediaSSRC: ssrcs.ssrc, lost: [old, new]))])
        h.run(steps: 2)
        let rtx = try resent().dropFirst(before)
        #expect(rtx.count == 1)
        #expect(rtx.first.map { Array($0.payload.prefix(2)) } == [UInt8(new >> 8), UInt8(new & 0xFF)])
        #expect(c.retransmissionsSkipped == 1)
        // Rebuilt from the producer's copy as this subscriber got it: its picture id and TL0PICIDX
        // (continued across the switch, not the layer's own), timestamp and marker.
        let original = try #require(try (sub.received[ssrcs.ssrc] ?? []).map { try RTPPacket(parsing: $0) }.last { $0.sequenceNumber == new })
        #expect(rtx.first.map { Array($0.payload.dropFirst(2)) } == original.payload)
        #expect(rtx.first?.timestamp == original.timestamp)
        #expect(rtx.first?.marker == original.marker)
    }

    @Test func aLayerThatStopsIsLeftForOneThatSends() throws {
        let (h, pub, sub, track) = try Self.room()
        pub.step(keyframes: [0, 1, 2])
        let c = try Self.consumer(h, sub, track: track)
        let producer = c.producer
        for _ in 0..<10 { pub.step() }
        #expect(producer.streams.allSatisfy { $0.isActive(nowNanos: h.now) })
        // The publisher's uplink drops the top layer: within a second it is inactive.
        pub.sending = [0, 1]
        for _ in 0..<100 { pub.step() }
        #expect(!producer.streams[2].isActive(nowNanos: h.now))
        #expect(producer.streams[1].isActive(nowNanos: h.now))
        let subscriber = try #require(h.room.participant(sub.info.peerID)?.subscriber)
        let bitrates = subscriber.layerBitrates(c, nowNanos: h.now)
        #expect(bitrates[2] == [nil])
        #expect(bitrates[1].allSatisfy { $0 != nil } && bitrates[1].count == 3, "three temporal layers measured: \(bitrates[1])")
    }

    /// A track that resumes starts on its cheapest layer; that is not a downgrade, so the climb from
    /// there is not held back for the 4 s upgrade hold (the tiny-downlink E2E saw 8 fps for 4 s).
    @Test func aResumedTrackClimbsWithoutTheUpgradeHold() throws {
        let h = try RoomHarness()
        let sub = try h.join("sub")
        sub.omitsTransportCC = true
        let pubPeer = try h.join("pub")
        h.publishSimulcast(pubPeer, audioSSRC: Self.audioSSRC, rids: Self.rids)
        try #require(h.connectAll(), "transports did not connect")
        var track = ""
        for case .trackPublished(_, let t) in sub.signals where t.kind == .video { track = t.trackID }
        let pub = Publisher(h: h, peer: pubPeer)
        pub.step(keyframes: [0, 1, 2])
        for _ in 0..<350 { pub.step() }  // past the warm-up
        let c = try Self.consumer(h, sub, track: track)
        let remb = { (bps: UInt64) in
            _ = sub.subscriber?.sendRTCP([.remb(ReceiverEstimatedMaximumBitrate(senderSSRC: 9, bitrate: bps, ssrcs: []))])
        }
        remb(5_000_000)
        for _ in 0..<100 { pub.step(keyframes: pub.frame % 50 == 0 ? [0, 1, 2] : []) }
        #expect(c.targetSpatial == 2)
        // The downlink collapses, beyond what the upgrade hold after this downgrade lasts.
        remb(30_000)
        for _ in 0..<500 { pub.step() }
        #expect(c.allocationPaused)
        // The downlink comes back slowly, as after a tbf limit is lifted: first just enough for the
        // low layer, then plenty.
        remb(250_000)
        var resumedAt: Int?
        for i in 0..<400 {
            pub.step(keyframes: i % 50 == 0 ? [0, 1, 2] : [])
            if resumedAt == nil, !c.allocationPaused {
                resumedAt = i
                #expect(c.targetSpatial == 0, "resumes on the low layer")
                remb(5_000_000)
            }
            if let r = resumedAt, i - r == 150 { break }
        }
        try #require(resumedAt != nil, "did not resume")
        // 1.5 s after the resume, with 5 Mbit/s to spend, it is on the top layer.
        #expect(c.targetSpatial == 2, "1.5 s after resuming: target \(c.targetSpatial)/\(c.targetTemporal)")
    }

    /// Without transport-cc the subscriber's REMB is the estimate: video it cannot afford is paused
    /// (and the client told), audio keeps flowing, and video resumes at a keyframe when it can.
    @Test func videoTheDownlinkCannotCarryIsPausedAndResumed() throws {
        let h = try RoomHarness()
        let sub = try h.join("sub")
        sub.omitsTransportCC = true
        let pubPeer = try h.join("pub")
        h.publish(pubPeer, streams: [.init(kind: .audio, ssrc: Self.audioSSRC), .init(kind: .video, ssrc: 0x2222_2222, rtxSSRC: 0x3333_3333)])
        try #require(h.connectAll())
        var video = ""
        for case .trackPublished(_, let t) in sub.signals where t.kind == .video { video = t.trackID }
        var seq: UInt16 = 1
        func frames(_ n: Int, keyframe: Bool = false) {
            for i in 0..<n {
                h.sendRTP(pubPeer, RTPPacket(payloadType: 96, sequenceNumber: seq, timestamp: UInt32(seq) * 3000, ssrc: 0x2222_2222, marker: true,
                                             payload: vp8Payload(keyframe: keyframe && i == 0, size: 1000)))
                h.sendRTP(pubPeer, RTPPacket(payloadType: 111, sequenceNumber: seq, timestamp: UInt32(seq) * 480, ssrc: Self.audioSSRC,
                                             payload: [0x78] + [UInt8](repeating: 1, count: 60)))
                seq &+= 1
                h.run()
            }
        }
        frames(350, keyframe: true)  // 3.5 s: past the warm-up (no pause on the start estimate); ~800 kbit/s of video
        let ssrcs = try #require(sub.ssrc(peer: pubPeer.info.peerID, track: video))
        let before = sub.received[ssrcs.ssrc]?.count ?? 0
        #expect(before > 100)
        _ = sub.subscriber?.sendRTCP([.remb(ReceiverEstimatedMaximumBitrate(senderSSRC: 9, bitrate: 100_000, ssrcs: [ssrcs.ssrc]))])
        frames(50)
        #expect(sub.signals.contains(.trackPaused(peerID: pubPeer.info.peerID, trackID: video)))
        #expect(h.room.participant(sub.info.peerID)?.subscriber?.downlinkEstimate == 100_000)
        let paused = sub.received[ssrcs.ssrc]?.count ?? 0
        frames(100)
        #expect(sub.received[ssrcs.ssrc]?.count == paused, "nothing forwarded while paused")
        let audioSSRC = try #require(sub.ssrc(peer: pubPeer.info.peerID, track: sub.signals.compactMap {
            if case .trackPublished(_, let t) = $0, t.kind == .audio { return t.trackID } else { return nil }
        }.first ?? "")).ssrc
        let audioBefore = sub.received[audioSSRC]?.count ?? 0
        frames(20)
        #expect((sub.received[audioSSRC]?.count ?? 0) >= audioBefore + 18, "audio keeps flowing")
        let metrics = h.room.counters()
        #expect(metrics.tracksPaused == 1)
        // The downlink grows: after the upgrade hold the video resumes, from a keyframe.
        _ = sub.subscriber?.sendRTCP([.remb(ReceiverEstimatedMaximumBitrate(senderSSRC: 9, bitrate: 3_000_000, ssrcs: [ssrcs.ssrc]))])
        frames(500)
        #expect(sub.signals.contains(.trackResumed(peerID: pubPeer.info.peerID, trackID: video)))
        frames(1, keyframe: true)
        frames(10)
        let after = try (sub.received[ssrcs.ssrc] ?? []).dropFirst(paused).map { try RTPPacket(parsing: $0) }
        #expect(after.count == 11)
        #expect(after.first.map { $0.payload[1] & 1 == 0 } == true, "resumes at a keyframe")
        #expect(h.room.counters().tracksPaused == 0)
    }
}

@Suite("Layer bitrates")
struct RateMeterTests {
    /// A keyframe second counts half toward the rate the allocator sees, so a subscriber that just
    /// affords a layer is not switched down for every keyframe (the loopback E2E left the top layer
    /// for 4 s that way); a stream that stops counts zero at once.
    @Test func aKeyframeSecondCountsHalfAndSilenceAtOnce() {
        var m = RateMeter()
        var now: Int64 = 0
        func second(_ bytes: Int) {
            for _ in 0..<10 {
                m.add(bytes / 10, nowNanos: now)
                now += 100_000_000
            }
            m.roll(nowNanos: now)
        }
        second(125_000)  // 1 Mbit/s
        #expect(m.bitsPerSecond == 1_000_000 && m.smoothedBitsPerSecond == 1_000_000)
        second(250_000)  // a keyframe doubles one second
        #expect(m.bitsPerSecond == 2_000_000)
        #expect(m.smoothedBitsPerSecond == 1_500_000)
        second(125_000)
        #expect(m.smoothedBitsPerSecond == 1_250_000)
        second(0)
        #expect(m.smoothedBitsPerSecond == 0)
    }
}
