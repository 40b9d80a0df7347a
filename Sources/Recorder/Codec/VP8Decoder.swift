import CSFUShim
import CVPX

/// A libvpx VP8 decoder: whole VP8 frames (RTP payload descriptors already stripped, as the
/// FrameAssembler gives them) in, I420 pictures out. Not thread-safe: one owner at a time.
///
/// It tracks whether it can decode what comes next: before the first keyframe, and after a frame
/// libvpx rejects or reports corrupt (a reference frame was lost), it refuses inter frames and says
/// `needsKeyframe`, so the caller asks the sender for one instead of showing smeared pictures.
package final class VP8Decoder {
    package enum Output: Equatable {
        /// A decoded picture.
        case picture(I420Image)
        /// The frame was not decoded: the decoder waits for a keyframe (ask the sender for one).
        case needsKeyframe
    }

    package struct InitError: Error, CustomStringConvertible {
        package let description: String
    }

    private let context: UnsafeMutablePointer<vpx_codec_ctx_t>
    package private(set) var needsKeyframe = true
    package private(set) var framesDecoded = 0
    package private(set) var framesRejected = 0

    /// - Parameter threads: decoder threads (1 keeps the composite's CPU use predictable).
    package init(threads: Int = 1) throws {
        context = .allocate(capacity: 1)
        context.initialize(to: vpx_codec_ctx_t())
        var cfg = vpx_codec_dec_cfg_t(threads: UInt32(max(1, threads)), w: 0, h: 0)
        let err = sfu_vpx_codec_dec_init(context, vpx_codec_vp8_dx(), &cfg, 0)
        guard err == VPX_CODEC_OK else {
            context.deallocate()
            throw InitError(description: "vpx_codec_dec_init: \(String(cString: vpx_codec_err_to_string(err)))")
        }
    }

    deinit {
        vpx_codec_destroy(context)
        context.deallocate()
    }

    /// Whether a VP8 frame is a keyframe (RFC 6386 9.1: bit 0 of the frame tag is 0).
    package static func isKeyframe(_ frame: some Collection<UInt8>) -> Bool {
        guard let first = frame.first, frame.count >= 10 else { return false }
        return first & 0x01 == 0
    }

    /// Decodes one frame.
    package func decode(_ frame: [UInt8]) -> Output {
        let key = Self.isKeyframe(frame)
        if needsKeyframe && !key {
            framesRejected += 1
            return .needsKeyframe
        }
        let err = frame.withUnsafeBufferPointer { vpx_codec_decode(context, $0.baseAddress, UInt32($0.count), nil, 0) }
        guard err == VPX_CODEC_OK else { return reject() }
        var corrupt: Int32 = 0
        if sfu_vpx_codec_control_int_ptr(context, Int32(VP8D_GET_FRAME_CORRUPTED.rawValue), &corrupt) == VPX_CODEC_OK, corrupt != 0 {
            return reject()
        }
        var iterator: vpx_codec_iter_t? = nil
        var picture: I420Image?
        while let img = vpx_codec_get_frame(context, &iterator) {
            picture = Self.copy(img.pointee)
        }
        guard let picture else { return reject() }
        needsKeyframe = false
        framesDecoded += 1
        return .picture(picture)
    }

    private func reject() -> Output {
        needsKeyframe = true
        framesRejected += 1
        return .needsKeyframe
    }

    /// Copies a libvpx picture (strided planes) into a packed I420Image.
    static func copy(_ img: vpx_image_t) -> I420Image? {
        let w = Int(img.d_w), h = Int(img.d_h)
        guard w > 0, h > 0, img.fmt == VPX_IMG_FMT_I420,
              let py = img.planes.0, let pu = img.planes.1, let pv = img.planes.2 else { return nil }
        let cw = (w + 1) / 2, ch = (h + 1) / 2
        return I420Image(width: w, height: h,
                         y: I420Image.packedPlane(py, stride: Int(img.stride.0), width: w, height: h),
                         u: I420Image.packedPlane(pu, stride: Int(img.stride.1), width: cw, height: ch),
                         v: I420Image.packedPlane(pv, stride: Int(img.stride.2), width: cw, height: ch))
    }
}
