import RTP
import Testing
@testable import SFU

@Suite("Sender report schedule: when, in which compounds, and the round trip back")
struct SenderReportScheduleTests {
    static func stream(_ ssrc: UInt32, ntpSeconds: UInt64) -> SenderReportSchedule.Stream {
        .init(report: SenderReport(ssrc: ssrc, ntpTime: ntpSeconds << 32 | 0x8000_0000, rtpTime: 0, packetCount: 1, octetCount: 1), cname: "sfu-pe_\(ssrc)")
    }

    @Test func reportsGoOutOnceAnInterval() {
        var s = SenderReportSchedule(ssrc: 42)
        let second = SenderReportSchedule.intervalNanos
        #expect(s.compounds([Self.stream(1, ntpSeconds: 1)], nowNanos: second) != nil)
        #expect(s.nextNanos == 2 * second)
        #expect(s.compounds([Self.stream(1, ntpSeconds: 1)], nowNanos: 2 * second - 1) == nil)
        #expect(s.compounds([Self.stream(1, ntpSeconds: 2)], nowNanos: 2 * second) != nil)
        #expect(s.sent.count == 2)
    }

    @Test func tenReportsACompoundEachWithItsOwnSDES() {
        var s = SenderReportSchedule(ssrc: 42)
        let streams = (1...25).map { Self.stream(UInt32($0), ntpSeconds: 100) }
        let compounds = s.compounds(streams, nowNanos: 5_000_000_000) ?? []
        #expect(compounds.map(\.count) == [20, 20, 10])
        for (i, compound) in compounds.enumerated() {
            let srs = compound.compactMap { if case .senderReport(let r) = $0 { r.ssrc } else { nil } }
            let names = compound.compactMap { if case .sourceDescription(let d) = $0 { d.chunks } else { nil } }
            #expect(srs == Array(UInt32(i * 10 + 1)...UInt32(min(i * 10 + 10, 25))))
            #expect(names.allSatisfy { $0.count == 1 }, "one chunk an SDES packet")
            #expect(names.map { $0[0].ssrc } == srs)
            #expect(names.map { String(decoding: $0[0].items[0].value, as: UTF8.self) } == srs.map { "sfu-pe_\($0)" })
            // Every compound fits a datagram.
            var bytes: [UInt8] = []
            for packet in compound { packet.serialize(into: &bytes) }
            #expect(bytes.count < 1200)
        }
    }

    @Test func noStreamIsAnEmptyReceiverReport() {
        var s = SenderReportSchedule(ssrc: 42)
        let compounds = s.compounds([], nowNanos: 1_000_000_000)
        #expect(compounds == [[.receiverReport(ReceiverReport(ssrc: 42))]])
    }

    @Test func roundTripFromTheEchoedReport() throws {
        var s = SenderReportSchedule(ssrc: 42)
        let sentAt: Int64 = 10_000_000_000
        _ = s.compounds([Self.stream(7, ntpSeconds: 0x1234)], nowNanos: sentAt)
        let middle = UInt32(truncatingIfNeeded: (UInt64(0x1234) << 32 | 0x8000_0000) >> 16)
        // Held 100 ms by the client, answered 160 ms after the SR left: 60 ms round trip.
        let held = UInt32(100 * 65536 / 1000)
        let rtt = try #require(s.roundTrip(ReceptionReport(ssrc: 7, lastSR: middle, delaySinceLastSR: held), nowNanos: sentAt + 160_000_000))
        #expect(abs(rtt - 60_000_000) < 100_000)
        #expect(s.roundTrip(ReceptionReport(ssrc: 7, lastSR: 0, delaySinceLastSR: 0), nowNanos: sentAt + 1) == nil, "no SR echoed")
        #expect(s.roundTrip(ReceptionReport(ssrc: 7, lastSR: middle &+ 1, delaySinceLastSR: 0), nowNanos: sentAt + 1) == nil, "not ours")
        #expect(s.roundTrip(ReceptionReport(ssrc: 7, lastSR: middle, delaySinceLastSR: held), nowNanos: sentAt) == nil, "negative")
        #expect(s.roundTrip(ReceptionReport(ssrc: 7, lastSR: middle, delaySinceLastSR: 0), nowNanos: sentAt + 6_000_000_000) == nil, "beyond 5 s")
    }

    @Test func onlyTheNewestReportsAreRemembered() {
        var s = SenderReportSchedule(ssrc: 42)
        for i in 1...10 {
            _ = s.compounds((0..<10).map { Self.stream(UInt32($0), ntpSeconds: UInt64(i * 10 + $0)) }, nowNanos: Int64(i) * 1_000_000_000)
        }
        #expect(s.sent.count == SenderReportSchedule.rememberedReports)
        #expect(s.sent.last?.nanos == 10_000_000_000)
    }
}
