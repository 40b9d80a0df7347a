import Testing
import TestSupport
@testable import RTP

/// RFC 6184 depacketization (single NAL unit, STAP-A, FU-A), the AVC forms and SPS sizes.
@Suite("H.264 payloads")
struct H264Tests {
    static let sps: [UInt8] = [0x67, 0x42, 0xC0, 0x1F, 0xAA]
    static let pps: [UInt8] = [0x68, 0xCE, 0x3C, 0x80]
    static let idr: [UInt8] = [0x65] + (0..<40).map { UInt8($0) }
    static let slice: [UInt8] = [0x41, 0x9A, 0x01, 0x02]

    static func stapA(_ units: [[UInt8]]) -> [UInt8] {
        [0x78] + units.flatMap { [UInt8($0.count >> 8), UInt8($0.count & 0xFF)] + $0 }
    }

    /// FU-A fragments of `unit` (header dropped, F/NRI in the indicator), `size` bytes of it each.
    static func fuA(_ unit: [UInt8], size: Int) -> [[UInt8]] {
        let body = Array(unit.dropFirst())
        var out: [[UInt8]] = []
        var offset = 0
        while offset < body.count {
            let end = min(body.count, offset + size)
            let header = (offset == 0 ? 0x80 : 0) | (end == body.count ? 0x40 : 0) | (unit[0] & 0x1F)
            out.append([(unit[0] & 0xE0) | 28, header] + body[offset..<end])
            offset = end
        }
        return out
    }

    struct Case: Sendable, CustomStringConvertible {
        var description: String
        var packets: [[UInt8]]
        var result: Result<[[UInt8]], H264Depacketizer.Failure>
    }

    static let cases: [Case] = [
        Case(description: "single NAL units", packets: [slice, slice], result: .success([slice, slice])),
        Case(description: "STAP-A then FU-A", packets: [stapA([sps, pps])] + fuA(idr, size: 10), result: .success([sps, pps, idr])),
        Case(description: "FU-A in one start+end fragment", packets: fuA(idr, size: 100), result: .success([idr])),
        Case(description: "FU-A without its start", packets: Array(fuA(idr, size: 10).dropFirst()), result: .failure(.fragmentWithoutStart)),
        Case(description: "FU-A without its end", packets: Array(fuA(idr, size: 10).dropLast()), result: .failure(.unfinishedFragment)),
        Case(description: "a second FU-A start inside one", packets: [fuA(idr, size: 10)[0], fuA(idr, size: 10)[0]], result: .failure(.unfinishedFragment)),
        Case(description: "STAP-A size past the end", packets: [[0x78, 0x00, 0x09, 0x67, 0x42]], result: .failure(.badAggregate)),
        Case(description: "STAP-A with a zero size", packets: [[0x78, 0x00, 0x00]], result: .failure(.badAggregate)),
        Case(description: "STAP-B (interleaved mode)", packets: [[0x79, 0, 0, 0, 1, 0x41]], result: .failure(.unsupportedType(25))),
        Case(description: "empty payload", packets: [[]], result: .failure(.empty)),
    ]

    @Test(arguments: cases)
    func depacketizes(_ c: Case) {
        var d = H264Depacketizer()
        var result: Result<[[UInt8]], H264Depacketizer.Failure>
        do throws(H264Depacketizer.Failure) {
            for p in c.packets {
                let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: p.count, alignment: 1)
                defer { raw.deallocate() }
                raw.copyBytes(from: p)
                try d.push(UnsafeRawBufferPointer(raw))
            }
            result = .success(try d.finish())
        } catch {
            result = .failure(error)
        }
        #expect(result == c.result)
    }

    @Test func accessUnitStarts() {
        let table: [([UInt8], Bool)] = [
            (Self.slice, true), (Self.stapA([Self.sps, Self.pps]), true),
            (Self.fuA(Self.idr, size: 10)[0], true), (Self.fuA(Self.idr, size: 10)[1], false), ([], false),
        ]
        for (payload, starts) in table {
            #expect(payload.withUnsafeBytes { H264.canStartAccessUnit(payload: $0) } == starts, "\(payload.prefix(2))")
        }
    }

    @Test func avcFormsRoundTrip() throws {
        let frame = H264.avcFrame([Self.sps, Self.pps, Self.idr])
        #expect(Array(frame.prefix(4)) == [0, 0, 0, 5] && frame.count == 12 + 5 + 4 + 41)
        #expect(H264.nalUnits(avcFrame: frame) == [Self.sps, Self.pps, Self.idr])
        #expect(H264.nalUnits(avcFrame: Array(frame.dropLast())) == nil)
        let avcC = try #require(H264.avcDecoderConfiguration(sps: Self.sps, pps: Self.pps))
        #expect(avcC == [1, 0x42, 0xC0, 0x1F, 0xFF, 0xE1, 0, 5] + Self.sps + [1, 0, 4] + Self.pps)
    }

    /// SPSs written by x264 (ffmpeg -c:v libx264): baseline with cropping (180 is not a multiple of
    /// 16), high profile (chroma format and scaling fields), both with emulation prevention bytes.
    @Test func spsSizes() throws {
        let baseline320x180 = [UInt8](hex: "6742c00dd901419f9f011000000300100000030 3c0f142a480")
        let high640x360 = [UInt8](hex: "6764001eacd940a02ff9701100000300010000030032 0f162d96")
        let a = try #require(H264SPS(nal: baseline320x180))
        #expect(a.width == 320 && a.height == 180 && a.profileIDC == 66, "\(a)")
        let b = try #require(H264SPS(nal: high640x360))
        #expect(b.width == 640 && b.height == 360 && b.profileIDC == 100, "\(b)")
        #expect(H264SPS(nal: Self.pps) == nil)
        #expect(H264SPS(nal: Array(high640x360.prefix(6))) == nil)
    }
}
