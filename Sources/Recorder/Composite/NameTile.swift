import CFreeType

/// Draws a participant's name with FreeType (anti-aliased glyphs from a TrueType font, DejaVu Sans
/// from Debian's fonts-dejavu-core by default) for the tiles of participants without video.
/// Not thread-safe: one owner at a time (FreeType's library object is not).
package final class NameTileRenderer {
    package static let defaultFontPath = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    package static let background = YUV(y: 48, u: 128, v: 128)
    package static let textLuma: UInt8 = 235

    private var library: FT_Library?
    private var face: FT_Face?
    /// Tiles already drawn, by name and size (a tile is redrawn only when its layout changes).
    private var cache: [String: I420Image] = [:]

    package struct FontError: Error, CustomStringConvertible {
        package let description: String
    }

    package init(fontPath: String = NameTileRenderer.defaultFontPath) throws {
        var lib: FT_Library?
        guard FT_Init_FreeType(&lib) == 0, let lib else { throw FontError(description: "FT_Init_FreeType failed") }
        library = lib
        var f: FT_Face?
        let err = FT_New_Face(lib, fontPath, 0, &f)
        guard err == 0, let f else {
            FT_Done_FreeType(lib)
            library = nil
            throw FontError(description: "cannot load the font \(fontPath) (FreeType error \(err))")
        }
        face = f
    }

    deinit {
        if let face { FT_Done_Face(face) }
        if let library { FT_Done_FreeType(library) }
    }

    /// A `width` x `height` tile with `name` centred in white on dark grey, shrunk to fit.
    package func tile(name: String, width: Int, height: Int) -> I420Image {
        let key = "\(width)x\(height):\(name)"
        if let cached = cache[key] { return cached }
        var img = I420Image(width: max(2, width), height: max(2, height), fill: Self.background)
        var text = name.isEmpty ? "?" : name
        var pixels = max(8, min(height / 6, 64))
        // Shrink until the text fits in 90% of the width; then shorten it (with an ellipsis).
        while pixels > 8, measure(text, pixels: pixels) > width * 9 / 10 { pixels -= 2 }
        while text.count > 1, measure(text, pixels: pixels) > width * 9 / 10 { text = String(text.dropLast(text.hasSuffix("\u{2026}") ? 2 : 1)) + "\u{2026}" }
        render(text, pixels: pixels, into: &img)
        if cache.count > 64 { cache.removeAll() }
        cache[key] = img
        return img
    }

    /// The advance width of `text` in pixels at `pixels` per em.
    func measure(_ text: String, pixels: Int) -> Int {
        guard let face, FT_Set_Pixel_Sizes(face, 0, FT_UInt(pixels)) == 0 else { return 0 }
        var total = 0
        for scalar in text.unicodeScalars {
            guard FT_Load_Char(face, FT_ULong(scalar.value), FT_Int32(Self.loadDefault)) == 0, let glyph = face.pointee.glyph else { continue }
            total += Int(glyph.pointee.advance.x >> 6)
        }
        return total
    }

    static let loadDefault: Int32 = 0
    static let loadRender: Int32 = 1 << 2  // FT_LOAD_RENDER

    private func render(_ text: String, pixels: Int, into img: inout I420Image) {
        guard let face, FT_Set_Pixel_Sizes(face, 0, FT_UInt(pixels)) == 0 else { return }
        let width = measure(text, pixels: pixels)
        var penX = (img.width - width) / 2
        // Baseline: the text's cap height centred vertically.
        let ascender = Int(face.pointee.size.pointee.metrics.ascender >> 6)
        let descender = Int(face.pointee.size.pointee.metrics.descender >> 6)
        let baseline = (img.height + ascender + descender) / 2
        for scalar in text.unicodeScalars {
            guard FT_Load_Char(face, FT_ULong(scalar.value), FT_Int32(Self.loadRender)) == 0, let glyph = face.pointee.glyph else { continue }
            let bitmap = glyph.pointee.bitmap
            let left = penX + Int(glyph.pointee.bitmap_left)
            let top = baseline - Int(glyph.pointee.bitmap_top)
            if let buffer = bitmap.buffer {
                for row in 0..<Int(bitmap.rows) {
                    let y = top + row
                    guard y >= 0, y < img.height else { continue }
                    for col in 0..<Int(bitmap.width) {
                        let x = left + col
                        guard x >= 0, x < img.width else { continue }
                        let alpha = Int(buffer[row * Int(bitmap.pitch) + col])
                        guard alpha > 0 else { continue }
                        let i = y * img.width + x
                        img.y[i] = UInt8((Int(img.y[i]) * (255 - alpha) + Int(Self.textLuma) * alpha) / 255)
                    }
                }
            }
            penX += Int(glyph.pointee.advance.x >> 6)
        }
    }
}
