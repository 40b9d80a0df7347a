import CPNG
import CTurboJPEG

/// A snapshot's image file format.
package enum SnapshotFormat: String, Sendable, CaseIterable, Codable {
    case jpeg, png

    package var fileExtension: String { self == .jpeg ? "jpg" : "png" }
    package var contentType: String { self == .jpeg ? "image/jpeg" : "image/png" }
}

/// Encodes a decoded picture as JPEG (libjpeg-turbo's TurboJPEG from the I420 planes, moved from
/// limited to JFIF's full range, 4:2:0 like the source) or PNG (libpng's simplified API, after a BT.601
/// conversion to RGB).
package enum SnapshotImage {
    package struct EncodeError: Error, CustomStringConvertible {
        package let description: String
    }

    package static func encode(_ image: I420Image, as format: SnapshotFormat, jpegQuality: Int = 90) throws -> [UInt8] {
        switch format {
        case .jpeg: try jpeg(image, quality: jpegQuality)
        case .png: try png(image)
        }
    }

    package static func jpeg(_ image: I420Image, quality: Int = 90) throws -> [UInt8] {
        guard let handle = tjInitCompress() else { throw EncodeError(description: "tjInitCompress failed") }
        defer { tjDestroy(handle) }
        var output: UnsafeMutablePointer<UInt8>?
        var size: UInt = 0
        let strides: [Int32] = [Int32(image.width), Int32(image.chromaWidth), Int32(image.chromaWidth)]
        // JFIF's YCbCr is full range; VP8's is BT.601 limited range (Y 16-235, Cb/Cr 16-240).
        let luma = image.y.map { Self.fullRangeLuma[Int($0)] }, cb = image.u.map { Self.fullRangeChroma[Int($0)] }
        let cr = image.v.map { Self.fullRangeChroma[Int($0)] }
        let status = luma.withUnsafeBufferPointer { y in
            cb.withUnsafeBufferPointer { u in
                cr.withUnsafeBufferPointer { v in
                    var planes: [UnsafePointer<UInt8>?] = [y.baseAddress, u.baseAddress, v.baseAddress]
                    return tjCompressFromYUVPlanes(handle, &planes, Int32(image.width), strides, Int32(image.height), Int32(TJSAMP_420.rawValue),
                                                   &output, &size, Int32(max(1, min(100, quality))), 0)
                }
            }
        }
        defer { if let output { tjFree(output) } }
        guard status == 0, let output, size > 0 else {
            throw EncodeError(description: "JPEG encoding failed: \(String(cString: tjGetErrorStr2(handle)))")
        }
        return Array(UnsafeBufferPointer(start: output, count: Int(size)))
    }

    static let fullRangeLuma: [UInt8] = (0..<256).map { (v: Int) -> UInt8 in
        let scaled: Int = ((v - 16) * 255 + 109) / 219
        return UInt8(max(0, min(255, scaled)))
    }
    static let fullRangeChroma: [UInt8] = (0..<256).map { (v: Int) -> UInt8 in
        let d: Int = (v - 128) * 255
        let scaled: Int = 128 + (d + (d >= 0 ? 112 : -112)) / 224
        return UInt8(max(0, min(255, scaled)))
    }

    package static func png(_ image: I420Image) throws -> [UInt8] {
        let rgb = self.rgb(image)
        var info = png_image()
        info.version = UInt32(PNG_IMAGE_VERSION)
        info.width = UInt32(image.width)
        info.height = UInt32(image.height)
        info.format = UInt32(PNG_FORMAT_RGB)
        var size = 0
        // First call: the size it needs.
        let sized = rgb.withUnsafeBytes { png_image_write_to_memory(&info, nil, &size, 0, $0.baseAddress, 0, nil) }
        guard sized != 0, size > 0 else { throw EncodeError(description: "PNG encoding failed: \(pngMessage(&info))") }
        var out = [UInt8](repeating: 0, count: size)
        let written = out.withUnsafeMutableBytes { dst in
            rgb.withUnsafeBytes { png_image_write_to_memory(&info, dst.baseAddress, &size, 0, $0.baseAddress, 0, nil) }
        }
        guard written != 0 else { throw EncodeError(description: "PNG encoding failed: \(pngMessage(&info))") }
        return Array(out.prefix(size))
    }

    private static func pngMessage(_ info: inout png_image) -> String {
        withUnsafeBytes(of: &info.message) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// Packed RGB from I420, BT.601 limited range (what VP8 carries), in integer arithmetic.
    package static func rgb(_ image: I420Image) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: image.width * image.height * 3)
        let cw = image.chromaWidth
        @inline(__always) func clamp(_ v: Int) -> UInt8 { UInt8(max(0, min(255, v))) }
        for row in 0..<image.height {
            for col in 0..<image.width {
                let c = (row / 2) * cw + col / 2
                let y = 298 * (Int(image.y[row * image.width + col]) - 16)
                let u = Int(image.u[c]) - 128, v = Int(image.v[c]) - 128
                let o = (row * image.width + col) * 3
                out[o] = clamp((y + 409 * v + 128) >> 8)
                out[o + 1] = clamp((y - 100 * u - 208 * v + 128) >> 8)
                out[o + 2] = clamp((y + 516 * u + 128) >> 8)
            }
        }
        return out
    }
}
