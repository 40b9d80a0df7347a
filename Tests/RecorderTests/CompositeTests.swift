import Foundation
import Testing
@testable import Recorder

@Suite("Composite: layout, scaler, mixer, name tiles")
struct CompositeTests {
    typealias P = CompositeLayout.Participant
    typealias T = CompositeLayout.Tile

    struct LayoutCase: CustomTestStringConvertible, Sendable {
        var name: String
        var participants: [P]
        var kind: CompositeLayout.Kind
        var tiles: [T]
        var testDescription: String { name }
    }

    static let layoutCases: [LayoutCase] = [
        LayoutCase(name: "grid, alone", participants: [P(id: "a")], kind: .grid,
                   tiles: [T(.camera("a"), Rect(x: 2, y: 2, width: 1276, height: 716))]),
        LayoutCase(name: "grid, two side by side", participants: [P(id: "a"), P(id: "b")], kind: .grid,
                   tiles: [T(.camera("a"), Rect(x: 2, y: 2, width: 636, height: 716)), T(.camera("b"), Rect(x: 642, y: 2, width: 636, height: 716))]),
        LayoutCase(name: "grid, three: 2x2 with the last row centred", participants: [P(id: "a"), P(id: "b"), P(id: "c")], kind: .grid,
                   tiles: [T(.camera("a"), Rect(x: 2, y: 2, width: 636, height: 356)), T(.camera("b"), Rect(x: 642, y: 2, width: 636, height: 356)),
                           T(.camera("c"), Rect(x: 322, y: 362, width: 636, height: 356))]),
        LayoutCase(name: "speaker, alone", participants: [P(id: "a", isSpeaking: true)], kind: .speaker,
                   tiles: [T(.camera("a"), Rect(x: 2, y: 2, width: 1276, height: 716))]),
        LayoutCase(name: "speaker, b speaks: b large, the others in the strip", participants: [P(id: "a"), P(id: "b", isSpeaking: true), P(id: "c")], kind: .speaker,
                   tiles: [T(.camera("b"), Rect(x: 2, y: 2, width: 1276, height: 536)), T(.camera("a"), Rect(x: 322, y: 542, width: 316, height: 176)),
                           T(.camera("c"), Rect(x: 642, y: 542, width: 316, height: 176))]),
        LayoutCase(name: "speaker, nobody speaks: the first is large", participants: [P(id: "a"), P(id: "b")], kind: .speaker,
                   tiles: [T(.camera("a"), Rect(x: 2, y: 2, width: 1276, height: 536)), T(.camera("b"), Rect(x: 482, y: 542, width: 316, height: 176))]),
        LayoutCase(name: "grid, c shares its screen: the screen takes the main area", participants: [P(id: "a"), P(id: "b"), P(id: "c", sharesScreen: true)], kind: .grid,
                   tiles: [T(.screen("c"), Rect(x: 2, y: 2, width: 1276, height: 536)), T(.camera("a"), Rect(x: 162, y: 542, width: 316, height: 176)),
                           T(.camera("b"), Rect(x: 482, y: 542, width: 316, height: 176)), T(.camera("c"), Rect(x: 802, y: 542, width: 316, height: 176))]),
        LayoutCase(name: "speaker, a shares while b speaks: the screen still wins", participants: [P(id: "a", sharesScreen: true), P(id: "b", isSpeaking: true)], kind: .speaker,
                   tiles: [T(.screen("a"), Rect(x: 2, y: 2, width: 1276, height: 536)), T(.camera("a"), Rect(x: 322, y: 542, width: 316, height: 176)),
                           T(.camera("b"), Rect(x: 642, y: 542, width: 316, height: 176))]),
        LayoutCase(name: "nobody", participants: [], kind: .grid, tiles: []),
    ]

    @Test(arguments: layoutCases) func layout(_ c: LayoutCase) {
        #expect(CompositeLayout.tiles(c.participants, kind: c.kind, width: 1280, height: 720) == c.tiles)
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 9, 10], CompositeLayout.Kind.allCases) func tilesAreInsideAndApart(count: Int, kind: CompositeLayout.Kind) {
        let ps = (0..<count).map { P(id: "p\($0)", isSpeaking: $0 == 1) }
        let tiles = CompositeLayout.tiles(ps, kind: kind, width: 1280, height: 720)
        #expect(tiles.count == count)
        for (i, t) in tiles.enumerated() {
            #expect(t.rect.x >= 0 && t.rect.y >= 0 && t.rect.x + t.rect.width <= 1280 && t.rect.y + t.rect.height <= 720)
            #expect(t.rect.x % 2 == 0 && t.rect.y % 2 == 0 && t.rect.width % 2 == 0 && t.rect.height % 2 == 0)
            for u in tiles[(i + 1)...] {
                let apart = t.rect.x + t.rect.width <= u.rect.x || u.rect.x + u.rect.width <= t.rect.x
                    || t.rect.y + t.rect.height <= u.rect.y || u.rect.y + u.rect.height <= t.rect.y
                #expect(apart, "\(t.rect) overlaps \(u.rect)")
            }
        }
    }

    // MARK: scaler

    struct FitCase: Sendable {
        var source: (Int, Int)
        var rect: Rect
        var expected: Rect
    }

    @Test(arguments: [
        FitCase(source: (640, 480), rect: Rect(x: 0, y: 0, width: 1280, height: 360), expected: Rect(x: 400, y: 0, width: 480, height: 360)),
        FitCase(source: (1280, 720), rect: Rect(x: 0, y: 0, width: 640, height: 480), expected: Rect(x: 0, y: 60, width: 640, height: 360)),
        FitCase(source: (1280, 720), rect: Rect(x: 642, y: 2, width: 636, height: 716), expected: Rect(x: 642, y: 182, width: 636, height: 356)),
        FitCase(source: (320, 240), rect: Rect(x: 10, y: 10, width: 320, height: 240), expected: Rect(x: 10, y: 10, width: 320, height: 240)),
    ])
    func fitKeepsAspect(_ c: FitCase) {
        let r = Scaler.fit(width: c.source.0, height: c.source.1, in: c.rect)
        #expect(r == c.expected)
        // Within 1% of the source's aspect ratio.
        let a = Double(r.width) / Double(r.height), b = Double(c.source.0) / Double(c.source.1)
        #expect(abs(a - b) / b < 0.01)
    }

    @Test func drawLetterboxesAndKeepsColours() {
        let red = YUV(r: 220, g: 20, b: 20), blue = YUV(r: 20, g: 20, b: 220)
        var src = I420Image(width: 320, height: 240, fill: red)
        src.fill(Rect(x: 160, y: 0, width: 160, height: 240), with: blue)
        var dst = I420Image(width: 1280, height: 720, fill: YUV(r: 0, g: 255, b: 0))
        let placed = Scaler.draw(src, into: &dst, rect: Rect(x: 0, y: 0, width: 1280, height: 360))
        #expect(placed == Rect(x: 400, y: 0, width: 480, height: 360))
        #expect(dst.pixel(x: 500, y: 180) == red)
        #expect(dst.pixel(x: 780, y: 180) == blue)
        #expect(dst.pixel(x: 100, y: 180) == .black)  // bar
        #expect(dst.pixel(x: 1200, y: 100) == .black)  // bar
        #expect(dst.pixel(x: 640, y: 500) == YUV(r: 0, g: 255, b: 0))  // outside the rect: untouched
        // Downscaling keeps the edge between the halves near the middle.
        var small = I420Image(width: 64, height: 48)
        Scaler.draw(src, into: &small, rect: Rect(x: 0, y: 0, width: 64, height: 48))
        #expect(small.pixel(x: 30, y: 24) == red && small.pixel(x: 34, y: 24) == blue)
    }

    // MARK: mixer

    static func constant(_ v: Int16, frames: Int, channels: Int = 2) -> [Int16] { [Int16](repeating: v, count: frames * channels) }

    @Test func mixerSumsOverlappingSources() {
        var m = AudioMixer()
        m.add(source: "a", at: 0, pcm: Self.constant(1000, frames: 960), channels: 2)
        m.add(source: "b", at: 480, pcm: Self.constant(2000, frames: 960, channels: 1), channels: 1)
        let out = m.mix(from: 0, count: 960)
        #expect(out.count == 1920)
        #expect(abs(Int(out[0]) - 1000) <= 1 && abs(Int(out[1]) - 1000) <= 1)
        #expect(abs(Int(out[2 * 600]) - 3000) <= 1 && abs(Int(out[2 * 600 + 1]) - 3000) <= 1)  // mono goes to both sides
        let next = m.mix(from: 960, count: 960)
        #expect(abs(Int(next[2 * 100]) - 2000) <= 1)
        #expect(next[2 * 500] == 0)  // b ended at 1440
        #expect(m.levels["b"] ?? 0 > 0)
    }

    @Test func mixerFillsGapsWithSilenceAndDropsLateSamples() {
        var m = AudioMixer()
        m.add(source: "a", at: 0, pcm: Self.constant(500, frames: 960), channels: 2)
        m.add(source: "a", at: 1920, pcm: Self.constant(700, frames: 960), channels: 2)
        let out = m.mix(from: 0, count: 2880)
        #expect(abs(Int(out[2 * 10]) - 500) <= 1)
        #expect(out[2 * 1000] == 0 && out[2 * 1900] == 0)
        #expect(abs(Int(out[2 * 2000]) - 700) <= 1)
        // A packet for a window already mixed.
        m.add(source: "a", at: 2400, pcm: Self.constant(900, frames: 960), channels: 2)
        #expect(m.lateSamples == 480)
        let after = m.mix(from: 2880, count: 960)
        #expect(abs(Int(after[0]) - 900) <= 1 && after[2 * 600] == 0)
        // A source with nothing is silence, not an error.
        #expect(m.mix(from: 3840, count: 960).allSatisfy { $0 == 0 })
    }

    struct LimitCase: Sendable {
        var inputs: [Int16]
        var low: Int
        var high: Int
    }

    @Test(arguments: [
        LimitCase(inputs: [10000, 10000], low: 19999, high: 20001),  // below the knee: exact
        LimitCase(inputs: [20000, 20000], low: 24576, high: 32766),  // over: compressed, no clipping
        LimitCase(inputs: [32767, 32767, 32767, 32767], low: 30000, high: 32766),
        LimitCase(inputs: [-32768, -32768, -32768], low: -32766, high: -30000),
        LimitCase(inputs: [30000, -30000], low: -1, high: 1),
    ])
    func mixerLimitsSoftly(_ c: LimitCase) {
        var m = AudioMixer()
        for (i, v) in c.inputs.enumerated() { m.add(source: "s\(i)", at: 0, pcm: Self.constant(v, frames: 960), channels: 2) }
        let out = m.mix(from: 0, count: 960)
        #expect(Int(out[100]) >= c.low && Int(out[100]) <= c.high, "\(out[100])")
    }

    @Test func limiterIsMonotonicAndContinuous() {
        var last: Float = -2
        for i in 0...4000 {
            let x = Float(i) / 1000 - 2
            let y = AudioMixer.limit(x)
            #expect(y >= last && abs(y) < 1)
            last = y
        }
        #expect(abs(AudioMixer.limit(AudioMixer.knee + 0.0001) - AudioMixer.knee) < 0.001)
    }

    // MARK: name tiles

    @Test func nameTileDrawsTextWithFreeType() throws {
        let r = try NameTileRenderer()
        let tile = r.tile(name: "Dr. Alice", width: 316, height: 176)
        #expect(tile.width == 316 && tile.height == 176)
        let bright = tile.y.filter { $0 > 200 }.count
        #expect(bright > 100)  // glyph pixels
        #expect(tile.pixel(x: 2, y: 2) == NameTileRenderer.background)
        // Text is centred: bright pixels only in the middle band.
        for row in 0..<30 { #expect(tile.y[row * 316 + 150] == NameTileRenderer.background.y) }
        // A long name is shrunk to fit.
        let long = r.tile(name: String(repeating: "W", count: 40), width: 200, height: 120)
        for row in 0..<120 {
            #expect(long.y[row * 200] == NameTileRenderer.background.y && long.y[row * 200 + 199] == NameTileRenderer.background.y)
        }
        #expect(throws: NameTileRenderer.FontError.self) { try NameTileRenderer(fontPath: "/nonexistent.ttf") }
    }
}
