/// Draws one picture into a rectangle of another, aspect-fit (letterboxed): bilinear filtering in
/// 16.16 fixed point, with the source coordinates of each output column and row computed once per
/// call. The letterbox bars are filled with `background`.
package enum Scaler {
    /// The largest rectangle with the aspect ratio `width:height` centred in `rect`, on even
    /// coordinates (so chroma, one sample per 2x2 block, stays inside it).
    package static func fit(width: Int, height: Int, in rect: Rect) -> Rect {
        guard width > 0, height > 0, rect.width > 0, rect.height > 0 else { return Rect(x: rect.x, y: rect.y, width: 0, height: 0) }
        var w = rect.width, h = rect.height
        if width * rect.height > height * rect.width {
            h = rect.width * height / width
        } else {
            w = rect.height * width / height
        }
        w &= ~1
        h &= ~1
        let x = (rect.x + (rect.width - w) / 2) & ~1
        let y = (rect.y + (rect.height - h) / 2) & ~1
        return Rect(x: x, y: y, width: max(0, w), height: max(0, h))
    }

    /// Draws `src` aspect-fit into `rect` of `dst` (clipped to `dst`), bars in `background`.
    /// - Returns: where the picture went.
    @discardableResult
    package static func draw(_ src: I420Image, into dst: inout I420Image, rect: Rect, background: YUV? = .black) -> Rect {
        let target = fit(width: src.width, height: src.height, in: rect)
        if let background {
            // Bars only: the picture covers the rest.
            let r = rect
            if target.y > r.y { dst.fill(Rect(x: r.x, y: r.y, width: r.width, height: target.y - r.y), with: background) }
            if target.y + target.height < r.y + r.height {
                dst.fill(Rect(x: r.x, y: target.y + target.height, width: r.width, height: r.y + r.height - target.y - target.height), with: background)
            }
            if target.x > r.x { dst.fill(Rect(x: r.x, y: target.y, width: target.x - r.x, height: target.height), with: background) }
            if target.x + target.width < r.x + r.width {
                dst.fill(Rect(x: target.x + target.width, y: target.y, width: r.x + r.width - target.x - target.width, height: target.height), with: background)
            }
        }
        let clip = target.clipped(width: dst.width, height: dst.height)
        guard clip.width > 0, clip.height > 0 else { return target }
        scalePlane(src.y, srcWidth: src.width, srcHeight: src.height, into: &dst.y, dstStride: dst.width,
                   target: target, clip: clip)
        let ct = Rect(x: target.x / 2, y: target.y / 2, width: target.width / 2, height: target.height / 2)
        let cc = Rect(x: clip.x / 2, y: clip.y / 2, width: clip.width / 2, height: clip.height / 2)
        scalePlane(src.u, srcWidth: src.chromaWidth, srcHeight: src.chromaHeight, into: &dst.u, dstStride: dst.chromaWidth, target: ct, clip: cc)
        scalePlane(src.v, srcWidth: src.chromaWidth, srcHeight: src.chromaHeight, into: &dst.v, dstStride: dst.chromaWidth, target: ct, clip: cc)
        return target
    }

    /// One plane: `src` (packed) scaled to `target`, written where `target` meets `clip`.
    static func scalePlane(_ src: [UInt8], srcWidth: Int, srcHeight: Int, into dst: inout [UInt8], dstStride: Int, target: Rect, clip: Rect) {
        guard target.width > 0, target.height > 0, clip.width > 0, clip.height > 0 else { return }
        // Source position of each output pixel centre, 16.16: (i + 0.5) * src / dst - 0.5, clamped.
        // Per output position: the two source indices and the 8-bit weight of the second.
        func positions(_ n: Int, _ srcN: Int) -> (index: [Int], next: [Int], frac: [Int]) {
            var index = [Int](repeating: 0, count: n), next = index, frac = index
            let step = (srcN << 16) / n
            for i in 0..<n {
                let p = max(0, min((srcN - 1) << 16, (i * step) + step / 2 - (1 << 15)))
                index[i] = p >> 16
                next[i] = min(index[i] + 1, srcN - 1)
                frac[i] = (p & 0xFFFF) >> 8
            }
            return (index, next, frac)
        }
        let xs = positions(target.width, srcWidth)
        let ys = positions(target.height, srcHeight)
        let x0 = clip.x - target.x, x1 = x0 + clip.width
        let y0 = clip.y - target.y, y1 = y0 + clip.height
        src.withUnsafeBufferPointer { s in
            dst.withUnsafeMutableBufferPointer { d in
                guard let sb = s.baseAddress, let db = d.baseAddress else { return }
                xs.index.withUnsafeBufferPointer { xi in
                    xs.next.withUnsafeBufferPointer { xn in
                        xs.frac.withUnsafeBufferPointer { xf in
                            for oy in y0..<y1 {
                                let fy = ys.frac[oy]  // 8-bit weights keep the products in range
                                let r0 = sb + ys.index[oy] * srcWidth
                                let r1 = sb + ys.next[oy] * srcWidth
                                let out = db + (target.y + oy) * dstStride + target.x
                                for ox in x0..<x1 {
                                    let a = xi[ox], b = xn[ox], fx = xf[ox]
                                    let top = Int(r0[a]) &* (256 &- fx) &+ Int(r0[b]) &* fx
                                    let bottom = Int(r1[a]) &* (256 &- fx) &+ Int(r1[b]) &* fx
                                    out[ox] = UInt8(truncatingIfNeeded: (top &* (256 &- fy) &+ bottom &* fy &+ (1 << 15)) >> 16)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Copies `src` unscaled to (x, y) of `dst` (clipped); both origins even.
    package static func blit(_ src: I420Image, into dst: inout I420Image, x: Int, y: Int) {
        let clip = Rect(x: x, y: y, width: src.width, height: src.height).clipped(width: dst.width, height: dst.height)
        guard clip.width > 0, clip.height > 0 else { return }
        func copy(_ s: [UInt8], sw: Int, into d: inout [UInt8], dw: Int, sx: Int, sy: Int, dx: Int, dy: Int, w: Int, h: Int) {
            s.withUnsafeBufferPointer { sp in
                d.withUnsafeMutableBufferPointer { dp in
                    guard let sb = sp.baseAddress, let db = dp.baseAddress else { return }
                    for row in 0..<h { (db + (dy + row) * dw + dx).update(from: sb + (sy + row) * sw + sx, count: w) }
                }
            }
        }
        copy(src.y, sw: src.width, into: &dst.y, dw: dst.width, sx: clip.x - x, sy: clip.y - y, dx: clip.x, dy: clip.y, w: clip.width, h: clip.height)
        let cx = clip.x / 2, cy = clip.y / 2, cw = (clip.width + 1) / 2, ch = (clip.height + 1) / 2
        let scx = (clip.x - x) / 2, scy = (clip.y - y) / 2
        let w = min(cw, src.chromaWidth - scx, dst.chromaWidth - cx), h = min(ch, src.chromaHeight - scy, dst.chromaHeight - cy)
        guard w > 0, h > 0 else { return }
        copy(src.u, sw: src.chromaWidth, into: &dst.u, dw: dst.chromaWidth, sx: scx, sy: scy, dx: cx, dy: cy, w: w, h: h)
        copy(src.v, sw: src.chromaWidth, into: &dst.v, dw: dst.chromaWidth, sx: scx, sy: scy, dx: cx, dy: cy, w: w, h: h)
    }
}
