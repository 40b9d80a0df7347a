import RTP
import Testing
import TestSupport
@testable import SFU

/// Sender reports from a hostile or broken publisher: arithmetic that cannot trap, and a mapping
/// that does not follow a report disagreeing with our clock.
/// Offers `report` to `filter` (a mutating call cannot sit inside #expect).
func offer(_ filter: inout SenderReportFilter, _ report: SenderReportFilter.Report, clockRate: Int) -> Bool {
    filter.offer(report, clockRate: clockRate)
}

@Suite("Sender reports, hostile and broken", .serialized)
struct SenderReportTests {
    static let second: Int64 = 1_000_000_000
    static let ntpBase: UInt64 = 3_900_000_000 << 32

    static func report(_ seconds: Double, rtp: UInt32, at arrival: Int64) -> SenderReportFilter.Report {
        (ntpBase &+ UInt64(bitPattern: Int64(seconds * 4_294_967_296)), rtp, arrival)
    }

    @Test func reportsThatFollowOurClockAreTakenWithJitter() {
        var f = SenderReportFilter()
        #expect(offer(&f, Self.report(0, rtp: 1000, at: 0), clockRate: 90000) == true)
        // 1 s later by both clocks, the SR 200 ms late on the network.
        #expect(offer(&f, Self.report(1, rtp: 91000, at: 1_200_000_000), clockRate: 90000) == true)
        #expect(offer(&f, Self.report(2, rtp: 181_000, at: 2 * Self.second), clockRate: 90000) == true)
        #expect(f.rejected == 0)
    }

    @Test(arguments: [
        // (NTP seconds after the last SR, RTP ticks after it) with our clock 1 s later
        (1e6, UInt32(90000)),           // NTP a million seconds ahead
        (-3600.0, UInt32(90000)),       // an hour back
        (1.0, UInt32(90000 * 60)),      // RTP a minute ahead of NTP
        (1.0, UInt32(bitPattern: -90000 * 5)),  // RTP 5 s back
    ])
    func aReportThatDisagreesIsNotTaken(ntpSeconds: Double, rtpTicks: UInt32) {
        var f = SenderReportFilter()
        _ = f.offer(Self.report(0, rtp: 1000, at: 0), clockRate: 90000)
        #expect(offer(&f, Self.report(ntpSeconds, rtp: 1000 &+ rtpTicks, at: Self.second), clockRate: 90000) == false)
        #expect(f.accepted?.rtp == 1000)
        #expect(f.rejected == 1)
    }

    @Test func aClockStepThatPersistsIsTakenAfterThreeReports() {
        var f = SenderReportFilter()
        _ = f.offer(Self.report(0, rtp: 0, at: 0), clockRate: 48000)
        // The publisher's wall clock jumps 2 hours ahead (sleep/wake, NTP resync) and stays there.
        let step = 7200.0
        #expect(offer(&f, Self.report(step + 1, rtp: 48000, at: Self.second), clockRate: 48000) == false)
        #expect(offer(&f, Self.report(step + 2, rtp: 96000, at: 2 * Self.second), clockRate: 48000) == false)
        #expect(offer(&f, Self.report(step + 3, rtp: 144_000, at: 3 * Self.second), clockRate: 48000) == true)
        #expect(f.accepted?.rtp == 144_000)
        // Isolated wild reports in between never add up to a step.
        var g = SenderReportFilter()
        _ = g.offer(Self.report(0, rtp: 0, at: 0), clockRate: 48000)
        for i in 1...6 {
            #expect(offer(&g, Self.report(Double(i) * 1e5, rtp: 48000 * UInt32(i), at: Int64(i) * Self.second), clockRate: 48000) == false)
        }
    }

    /// Two simulcast layers whose SRs carry NTP times 2^62 apart, then a layer switch: the mapping
    /// through both SRs used to overflow Int64 and trap (one RTCP packet took down every room).
    @Test func farApartLayerReportsDoNotTrapALayerSwitch() throws {
        let (h, pub, sub, track) = try SimulcastTests.room()
        pub.step(keyframes: [0, 1, 2])
        let reports = (0..<3).map { layer in
            RTCPPacket.senderReport(SenderReport(ssrc: SimulcastTests.layerSSRCs[layer], ntpTime: layer == 2 ? 1 << 62 : UInt64.max - (1 << 61),
                                                 rtpTime: SimulcastTests.timestampBases[layer], packetCount: 1, octetCount: 1))
        }
        _ = pub.peer.publisher?.sendRTCP(reports)
        h.run()
        for _ in 0..<40 { pub.step() }
        let c = try SimulcastTests.consumer(h, sub, track: track)
        c.setTarget(spatial: 2, temporal: 3, nowNanos: h.now)
        pub.step(keyframes: [2])
        for _ in 0..<5 { pub.step() }
        #expect(c.currentSpatial == 2)
        // Placed by arrival time instead: the output timestamps keep moving forward by about a frame.
        let ssrc = try #require(sub.ssrc(peer: pub.peer.info.peerID, track: track)).ssrc
        let out = try SimulcastTests.received(sub, ssrc)
        for (a, b) in zip(out, out.dropFirst()) {
            let step = Int32(bitPattern: b.timestamp &- a.timestamp)
            #expect(step > 0 && step <= 3000, "timestamp step \(step)")
        }
    }

    /// Our sender report to a subscriber a day and a half after the publisher's last SR: the RTP
    /// time projected from it used to overflow (`elapsed * clockRate` beyond ~28 h at 90 kHz).
    @Test func aSenderReportFromAnOldMappingDoesNotTrap() throws {
        let (h, pub, sub, track) = try SimulcastTests.room()
        pub.step(keyframes: [0, 1, 2])
        pub.senderReports()
        for _ in 0..<5 { pub.step() }
        let c = try SimulcastTests.consumer(h, sub, track: track)
        let stream = c.producer.streams[c.currentSpatial ?? 0]
        let sr = try #require(stream.senderReport)
        let later = sr.arrivalNanos + 36 * 3600 * Self.second
        let report = try #require(c.senderReport(nowNanos: later))
        let expectedRTP = sr.rtp &+ UInt32(truncatingIfNeeded: Int64(36 * 3600) * 90000) &+ c.timestampOffset
        #expect(report.rtpTime == expectedRTP)
        #expect(report.ntpTime == sr.ntp &+ (UInt64(36 * 3600) << 32))
    }

    /// A publisher's receiver-report echo (LSR) follows the last SR received even when it was not
    /// taken as the mapping: the publisher's RTT must not break because its clock stepped.
    @Test func receiverReportsEchoTheLastSRReceived() throws {
        let (_, pub, _, _) = try SimulcastTests.room()
        pub.step(keyframes: [0, 1, 2])
        pub.senderReports()
        for _ in 0..<100 { pub.step() }
        let wild: UInt64 = 1 << 40
        _ = pub.peer.publisher?.sendRTCP([.senderReport(SenderReport(ssrc: SimulcastTests.layerSSRCs[0], ntpTime: wild, rtpTime: 0, packetCount: 1, octetCount: 1))])
        for _ in 0..<150 { pub.step() }
        let lsrs = pub.peer.publisherRTCP.flatMap { packet -> [UInt32] in
            if case .receiverReport(let rr) = packet { return rr.reports.filter { $0.ssrc == SimulcastTests.layerSSRCs[0] }.map(\.lastSR) }
            return []
        }
        #expect(lsrs.last == UInt32(truncatingIfNeeded: wild >> 16))
    }
}
