/// Where each participant goes on the composite canvas: a pure function of who is there, who
/// speaks and whether a screen is shared.
///
/// - `grid`: equal cells, as square a grid as the count allows (2 -> 2x1, 3-4 -> 2x2, 5-6 -> 3x2, ...).
/// - `speaker`: the active speaker (or the first participant) in the main area, everyone else in a
///   strip along the bottom.
/// - An active screen share takes the main area in both: the screen on top, every participant in
///   the strip.
///
/// Cells are rectangles on even coordinates with a small gap; the picture inside keeps its aspect
/// ratio (``Scaler/draw(_:into:rect:background:)`` letterboxes it).
package enum CompositeLayout {
    package enum Kind: String, Sendable, CaseIterable, Codable { case grid, speaker }

    package struct Participant: Sendable, Equatable {
        package var id: String
        package var isSpeaking: Bool
        package var sharesScreen: Bool
        package init(id: String, isSpeaking: Bool = false, sharesScreen: Bool = false) {
            self.id = id
            self.isSpeaking = isSpeaking
            self.sharesScreen = sharesScreen
        }
    }

    package enum Content: Sendable, Equatable, Hashable {
        case camera(String)
        case screen(String)
    }

    package struct Tile: Sendable, Equatable {
        package var content: Content
        package var rect: Rect
        package init(_ content: Content, _ rect: Rect) {
            self.content = content
            self.rect = rect
        }
    }

    /// Gap between cells, pixels (even).
    static let gap = 4

    /// The tiles, in drawing order.
    /// - Parameters:
    ///   - participants: in join order (the order of the grid).
    ///   - width, height: the canvas.
    package static func tiles(_ participants: [Participant], kind: Kind, width: Int, height: Int) -> [Tile] {
        guard !participants.isEmpty else { return [] }
        let canvas = Rect(x: 0, y: 0, width: width, height: height)
        // The first participant sharing (a second share waits its turn: one main area).
        if let sharer = participants.first(where: \.sharesScreen) {
            let (main, strip) = split(canvas)
            return [Tile(.screen(sharer.id), main)] + row(participants.map { .camera($0.id) }, in: strip)
        }
        switch kind {
        case .grid:
            return grid(participants.map { .camera($0.id) }, in: canvas)
        case .speaker:
            guard participants.count > 1 else { return [Tile(.camera(participants[0].id), inset(canvas))] }
            let speaker = participants.first(where: \.isSpeaking) ?? participants[0]
            let (main, strip) = split(canvas)
            return [Tile(.camera(speaker.id), main)] + row(participants.filter { $0.id != speaker.id }.map { .camera($0.id) }, in: strip)
        }
    }

    /// Main area (top three quarters) and strip (the bottom quarter).
    static func split(_ canvas: Rect) -> (main: Rect, strip: Rect) {
        let stripHeight = even(canvas.height / 4)
        let main = inset(Rect(x: canvas.x, y: canvas.y, width: canvas.width, height: canvas.height - stripHeight))
        let strip = Rect(x: canvas.x, y: canvas.y + canvas.height - stripHeight, width: canvas.width, height: stripHeight)
        return (main, strip)
    }

    /// Equal cells in one row, each at most a quarter of the strip's width so a small number of
    /// participants does not get stretched cells; centred.
    static func row(_ contents: [Content], in strip: Rect) -> [Tile] {
        guard !contents.isEmpty else { return [] }
        let cellWidth = even(strip.width / max(contents.count, 4))
        let total = cellWidth * contents.count
        let x0 = even(strip.x + (strip.width - total) / 2)
        return contents.enumerated().map { i, c in
            Tile(c, inset(Rect(x: x0 + i * cellWidth, y: strip.y, width: cellWidth, height: strip.height)))
        }
    }

    static func grid(_ contents: [Content], in canvas: Rect) -> [Tile] {
        let n = contents.count
        var columns = 1
        while columns * columns < n { columns += 1 }
        let rows = (n + columns - 1) / columns
        let cellWidth = even(canvas.width / columns), cellHeight = even(canvas.height / rows)
        var tiles: [Tile] = []
        for (i, c) in contents.enumerated() {
            let r = i / columns
            // The last row, when short, is centred.
            let inRow = r == rows - 1 ? n - r * columns : columns
            let x0 = even(canvas.x + (canvas.width - inRow * cellWidth) / 2)
            let col = i - r * columns
            tiles.append(Tile(c, inset(Rect(x: x0 + col * cellWidth, y: canvas.y + even((canvas.height - rows * cellHeight) / 2) + r * cellHeight,
                                            width: cellWidth, height: cellHeight))))
        }
        return tiles
    }

    static func inset(_ r: Rect) -> Rect {
        let g = gap / 2
        return Rect(x: even(r.x + g), y: even(r.y + g), width: even(max(0, r.width - gap)), height: even(max(0, r.height - gap)))
    }

    static func even(_ v: Int) -> Int { v & ~1 }
}
