import Foundation
import RTP
import Testing
import TestSupport
@testable import SFU

/// Issue 20: pausing video for bandwidth is the last resort. It needs evidence that the path cannot
/// carry the lowest layer (a REMB saying so, or with transport-cc a congestion cut), and a paused
/// track comes back as soon as the downlink allows, not after the 4 s upgrade hold.
@Suite("Pausing video for bandwidth, in memory")
struct PausePolicyTests {
    /// Non-simulcast video of ~800 kbit/s (1000-byte frames every 10 ms) and audio, `steps` x 10 ms.
    static func frames(_ h: RoomHarness, _ pub: RoomHarness.Peer, _ seq: inout UInt16, _ steps: Int, keyframeEvery: Int = 0) {
        for i in 0..<steps {
            let key = keyframeEvery > 0 && i % keyframeEvery == 0
            h.sendRTP(pub, RTPPacket(payloadType: 96, sequenceNumber: seq, timestamp: UInt32(seq) * 3000, ssrc: RoomTests.videoSSRC, marker: true,
                                     payload: vp8Payload(keyframe: key, size: 1000)))
            h.sendRTP(pub, RTPPacket(payloadType: 111, sequenceNumber: seq, timestamp: UInt32(seq) * 480, ssrc: RoomTests.audioSSRC,
                                     payload: [0x78] + [UInt8](repeating: 1, count: 60)))
            seq &+= 1
            h.run()
        }
    }

    /// A REMB subscriber whose downlink collapses and comes back 300 ms later: the video resumes
    /// about a second after the pause (the resume hold), not 4 s after it.
    @Test func aPausedTrackResumesWithinASecondAndAHalf() throws {
        let h = try RoomHarness()
        let sub = try h.join("sub")
        sub.omitsTransportCC = true
        let pub = try h.join("pub")
        h.publish(pub, streams: [.init(kind: .audio, ssrc: RoomTests.audioSSRC), .init(kind: .video, ssrc: RoomTests.videoSSRC, rtxSSRC: RoomTests.rtxSSRC)])
        try #require(h.connectAll())
        var video = ""
        for case .trackPublished(_, let t) in sub.signals where t.kind == .video { video = t.trackID }
        var seq: UInt16 = 1
        Self.frames(h, pub, &seq, 350, keyframeEvery: 100)  // past the warm-up
        let remb = { (bps: UInt64) in _ = sub.subscriber?.sendRTCP([.remb(ReceiverEstimatedMaximumBitrate(senderSSRC: 9, bitrate: bps, ssrcs: []))]) }
        remb(100_000)
        var pausedAt: Int?
        for i in 0..<100 {
            Self.frames(h, pub, &seq, 1)
            if sub.signals.contains(.trackPaused(peerID: pub.info.peerID, trackID: video)) { pausedAt = i; break }
        }
        let paused = try #require(pausedAt, "not paused at 100 kbit/s")
        Self.frames(h, pub, &seq, 30)
        remb(3_000_000)
        var resumedAfter: Int?
        for i in 0..<500 {
            Self.frames(h, pub, &seq, 1, keyframeEvery: 0)
            if sub.signals.contains(.trackResumed(peerID: pub.info.peerID, trackID: video)) { resumedAfter = 30 + i + 1; break }
        }
        let resumed = try #require(resumedAfter, "not resumed in 5 s at 3 Mbit/s")
        #expect(resumed <= 150, "resumed \(resumed * 10) ms after the pause (at step \(paused))")
    }

    /// A transport-cc subscriber whose estimate is low without any congestion signal (here capped at
    /// 100 kbit/s: nothing is lost or delayed on the harness's path) keeps the lowest layer rather
    /// than losing its video: a low estimate alone is no evidence the path cannot carry it.
    @Test func aLowEstimateWithoutCongestionKeepsTheVideo() throws {
        let (h, pub, subs, tracks) = try RoomTests.room(subscribers: 1)
        subs[0].sendsTransportCC = true
        let subscriber = try #require(h.room.participant(subs[0].info.peerID)?.subscriber)
        var configuration = BandwidthEstimator.Configuration()
        configuration.maxBitrate = 100_000
        configuration.startBitrate = 100_000
        subscriber.downlink.estimator = BandwidthEstimator(configuration: configuration)
        var seq: UInt16 = 1
        Self.frames(h, pub, &seq, 600, keyframeEvery: 100)  // 6 s: past the 3 s warm-up
        #expect(subscriber.downlinkEstimate.map { $0 <= 100_000 } == true)
        #expect(subscriber.downlink.estimator.lastCongestionNanos == nil)
        #expect(!subs[0].signals.contains(.trackPaused(peerID: pub.info.peerID, trackID: tracks.video)))
        let ssrcs = try #require(subs[0].ssrc(peer: pub.info.peerID, track: tracks.video))
        let before = subs[0].received[ssrcs.ssrc]?.count ?? 0
        Self.frames(h, pub, &seq, 100)
        #expect((subs[0].received[ssrcs.ssrc]?.count ?? 0) >= before + 90, "the video keeps flowing")
    }

    /// libwebrtc's maximum bitrates by layer size (what a browser's top layer may use).
    @Test func nominalBitratesFollowTheLayerSize() {
        #expect(DownlinkController.nominalBitrate(width: 1920, height: 1080) == 5_000_000)
        #expect(DownlinkController.nominalBitrate(width: 1280, height: 720) == 2_500_000)
        #expect(DownlinkController.nominalBitrate(width: 960, height: 540) == 1_200_000)
        #expect(DownlinkController.nominalBitrate(width: 640, height: 480) == 700_000)
        #expect(DownlinkController.nominalBitrate(width: 320, height: 180) == 200_000)
        #expect(DownlinkController.nominalBitrate(width: 160, height: 90) == 200_000)
        // Without a keyframe's size: by position, as before.
        #expect(DownlinkController.nominalBitrate(spatial: 2, of: 3) == 1_500_000)
    }

    /// A subscriber probes for what a 1280x720 top layer may need (2.5 Mbit/s with the upgrade
    /// headroom), not for a fixed 1.5 Mbit/s: issue 20's estimate never went above ~2 Mbit/s.
    @Test func probingAimsAtTheTopLayersNominalRateForItsSize() throws {
        let (h, pub0, sub, track) = try SimulcastTests.room()
        _ = track
        let pub = TapLayerTests.Publisher(h: h, peer: pub0.peer)
        for i in 0..<150 { pub.step(keyframes: i % 50 == 0 ? [0, 1, 2] : []) }
        let subscriber = try #require(h.room.participant(sub.info.peerID)?.subscriber)
        #expect(subscriber.downlink.estimator.desiredBitrate >= 2_500_000 * 1.15, "desired \(subscriber.downlink.estimator.desiredBitrate)")
    }
}

@Suite("Upgrade hold after downgrades")
struct UpgradeHoldTests {
    static let s: Int64 = 1_000_000_000

    @Test func oneDowngradeHoldsForTheBase() {
        var hold = UpgradeHold(baseNanos: 4 * Self.s)
        #expect(!hold.holds(at: 0))
        hold.downgraded(at: 10 * Self.s)
        #expect(hold.holds(at: 13 * Self.s))
        #expect(!hold.holds(at: 14 * Self.s))
    }

    /// Down, up, down, up... with an estimate hovering at a threshold: each further downgrade within
    /// a minute of the last hold's end doubles the hold (4, 8, 16, 32, 64 s), so once it has settled a minute has at
    /// most one switch down and one up (a fixed 4 s hold: a dozen of each).
    @Test func repeatedDowngradesDoubleTheHoldUpToAMinute() {
        var hold = UpgradeHold(baseNanos: 4 * Self.s)
        var t: Int64 = 0
        var switches: [Int64] = []
        // The allocator goes up as soon as allowed and comes down 1 s later, for five minutes.
        while t < 300 * Self.s {
            hold.downgraded(at: t)
            switches.append(t)
            var up = t
            while hold.holds(at: up) { up += Self.s / 4 }
            switches.append(up)
            t = up + Self.s
        }
        #expect(hold.holdNanos == 64 * Self.s)
        let lastTwoMinutes = switches.filter { $0 >= 180 * Self.s && $0 < 300 * Self.s }.count
        #expect(lastTwoMinutes <= 4, "\(lastTwoMinutes) switches in the last two minutes: \(switches.map { $0 / Self.s })")
    }

    /// A minute without a downgrade after the hold ended forgets the earlier ones: the base again.
    @Test func aQuietMinuteResetsTheHold() {
        var hold = UpgradeHold(baseNanos: 4 * Self.s)
        hold.downgraded(at: 0)
        hold.downgraded(at: 5 * Self.s)
        #expect(hold.holdNanos == 8 * Self.s)
        hold.downgraded(at: 50 * Self.s)  // within a minute of the 8 s hold's end (13 s)
        #expect(hold.holdNanos == 16 * Self.s)
        hold.downgraded(at: 127 * Self.s)  // 61 s after that hold ended (66 s)
        #expect(hold.holdNanos == 4 * Self.s)
        #expect(!hold.holds(at: 131 * Self.s))
    }

    /// The path changed (the estimate is 1.5x what it was at the downgrade: a limit was lifted): the
    /// climb back does not wait for a doubled hold.
    @Test func aMuchHigherEstimateLiftsTheHold() {
        var hold = UpgradeHold(baseNanos: 4 * Self.s)
        hold.downgraded(at: 0, estimate: 900_000)
        hold.downgraded(at: 5 * Self.s, estimate: 900_000)
        hold.downgraded(at: 14 * Self.s, estimate: 850_000)
        #expect(hold.holdNanos == 16 * Self.s)
        #expect(hold.holds(at: 20 * Self.s, estimate: 1_000_000))
        #expect(!hold.holds(at: 20 * Self.s, estimate: 2_000_000))
        #expect(hold.holds(at: 20 * Self.s))
    }
}
