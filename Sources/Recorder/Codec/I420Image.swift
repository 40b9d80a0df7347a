/// A picture in I420 (YUV 4:2:0 planar, 8 bits): what the VP8 decoder gives and the encoder takes,
/// and what the composite canvas is drawn in. Rows are packed (stride = width for luma,
/// (width + 1) / 2 for chroma).
package struct I420Image: Sendable, Equatable {
    package let width: Int
    package let height: Int
    package var y: [UInt8]
    package var u: [UInt8]
    package var v: [UInt8]

    package var chromaWidth: Int { (width + 1) / 2 }
    package var chromaHeight: Int { (height + 1) / 2 }

    /// A picture filled with one colour.
    package init(width: Int, height: Int, fill: YUV = .black) {
        precondition(width > 0 && height > 0)
        self.width = width
        self.height = height
        let cw = (width + 1) / 2, ch = (height + 1) / 2
        y = [UInt8](repeating: fill.y, count: width * height)
        u = [UInt8](repeating: fill.u, count: cw * ch)
        v = [UInt8](repeating: fill.v, count: cw * ch)
    }

    /// A picture from packed planes (sizes checked by the caller: width*height and the chroma size).
    package init(width: Int, height: Int, y: [UInt8], u: [UInt8], v: [UInt8]) {
        precondition(y.count == width * height && u.count == ((width + 1) / 2) * ((height + 1) / 2) && v.count == u.count)
        self.width = width
        self.height = height
        self.y = y
        self.u = u
        self.v = v
    }

    /// A packed plane (`width` x `height`) copied from a decoder's strided one, each sample through
    /// `map` when given.
    static func packedPlane(_ src: UnsafePointer<UInt8>, stride: Int, width: Int, height: Int, map: [UInt8]? = nil) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: width * height) { buf, count in
            guard let dst = buf.baseAddress else { return }
            for row in 0..<height {
                let from = src + row * stride, to = dst + row * width
                if let map {
                    for x in 0..<width { to[x] = map[Int(from[x])] }
                } else {
                    to.update(from: from, count: width)
                }
            }
            count = width * height
        }
    }

    /// The colour at a pixel (chroma of its 2x2 block).
    package func pixel(x: Int, y py: Int) -> YUV {
        let c = (py / 2) * chromaWidth + x / 2
        return YUV(y: y[py * width + x], u: u[c], v: v[c])
    }

    /// Fills a rectangle (clipped to the picture). Chroma covers the 2x2 blocks the rectangle touches
    /// from its even-aligned origin, so rectangles on even coordinates never bleed into neighbours.
    package mutating func fill(_ rect: Rect, with colour: YUV) {
        let r = rect.clipped(width: width, height: height)
        guard r.width > 0, r.height > 0 else { return }
        for row in r.y..<(r.y + r.height) {
            let base = row * width
            for col in r.x..<(r.x + r.width) { y[base + col] = colour.y }
        }
        let cw = chromaWidth
        for row in (r.y / 2)..<((r.y + r.height + 1) / 2) {
            let base = row * cw
            for col in (r.x / 2)..<((r.x + r.width + 1) / 2) {
                u[base + col] = colour.u
                v[base + col] = colour.v
            }
        }
    }
}

/// One 8-bit YUV colour (BT.601 limited range, as VP8 and browsers use).
package struct YUV: Sendable, Equatable, Hashable {
    package var y: UInt8
    package var u: UInt8
    package var v: UInt8
    package init(y: UInt8, u: UInt8, v: UInt8) {
        self.y = y
        self.u = u
        self.v = v
    }

    package static let black = YUV(y: 16, u: 128, v: 128)

    /// BT.601 limited-range conversion of an sRGB colour.
    package init(r: Int, g: Int, b: Int) {
        func clamp(_ x: Int) -> UInt8 { UInt8(max(0, min(255, x))) }
        y = clamp(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16)
        u = clamp(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128)
        v = clamp(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128)
    }
}

/// An integer rectangle in pixels.
package struct Rect: Sendable, Equatable, Hashable, CustomStringConvertible {
    package var x: Int
    package var y: Int
    package var width: Int
    package var height: Int
    package init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    package var description: String { "(\(x),\(y) \(width)x\(height))" }

    package func clipped(width w: Int, height h: Int) -> Rect {
        let x0 = max(0, x), y0 = max(0, y)
        let x1 = min(w, x + width), y1 = min(h, y + height)
        return Rect(x: x0, y: y0, width: max(0, x1 - x0), height: max(0, y1 - y0))
    }

    package func contains(x px: Int, y py: Int) -> Bool { px >= x && px < x + width && py >= y && py < y + height }
}
