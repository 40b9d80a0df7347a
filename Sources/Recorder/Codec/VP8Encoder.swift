import CSFUShim
import CVPX

/// A libvpx VP8 encoder in real-time mode (the composite's output): I420 pictures in, VP8 frames
/// out, one per picture (no lag), constant bitrate. Not thread-safe: one owner at a time.
package final class VP8Encoder {
    package struct Configuration: Sendable, Equatable {
        package var width: Int
        package var height: Int
        package var fps: Int
        package var bitrateBps: Int
        /// At most this many frames between keyframes (players seek to keyframes).
        package var keyframeInterval: Int
        /// libvpx speed/quality trade-off, 0...16 in real-time mode; 8 is fast enough for 720p30 on one core.
        package var cpuUsed: Int
        package var threads: Int

        package init(width: Int, height: Int, fps: Int = 30, bitrateBps: Int = 1_500_000, keyframeInterval: Int? = nil,
                    cpuUsed: Int = 8, threads: Int = 1) {
            self.width = width
            self.height = height
            self.fps = fps
            self.bitrateBps = bitrateBps
            self.keyframeInterval = keyframeInterval ?? fps * 2
            self.cpuUsed = cpuUsed
            self.threads = threads
        }
    }

    package struct Frame: Sendable, Equatable {
        package var data: [UInt8]
        package var keyframe: Bool
        /// The presentation time given to ``encode(_:pts:forceKeyframe:)``, in frame periods.
        package var pts: Int64
    }

    package struct EncoderError: Error, CustomStringConvertible {
        package let description: String
    }

    package let configuration: Configuration
    private let context: UnsafeMutablePointer<vpx_codec_ctx_t>
    private let image: UnsafeMutablePointer<vpx_image_t>
    package private(set) var framesEncoded = 0

    package init(_ configuration: Configuration) throws {
        guard configuration.width > 0, configuration.height > 0, configuration.width % 2 == 0, configuration.height % 2 == 0,
              configuration.fps > 0, configuration.bitrateBps >= 1000 else {
            throw EncoderError(description: "bad encoder configuration \(configuration)")
        }
        self.configuration = configuration
        guard let iface = vpx_codec_vp8_cx() else { throw EncoderError(description: "no VP8 encoder in libvpx") }
        var cfg = vpx_codec_enc_cfg_t()
        guard vpx_codec_enc_config_default(iface, &cfg, 0) == VPX_CODEC_OK else { throw EncoderError(description: "vpx_codec_enc_config_default") }
        cfg.g_w = UInt32(configuration.width)
        cfg.g_h = UInt32(configuration.height)
        cfg.g_timebase = vpx_rational(num: 1, den: Int32(configuration.fps))
        cfg.g_threads = UInt32(max(1, configuration.threads))
        cfg.g_lag_in_frames = 0
        cfg.g_error_resilient = 0  // a file, not a lossy link
        cfg.g_pass = VPX_RC_ONE_PASS
        cfg.rc_end_usage = VPX_CBR
        cfg.rc_target_bitrate = UInt32(max(1, configuration.bitrateBps / 1000))
        cfg.rc_min_quantizer = 4
        cfg.rc_max_quantizer = 56
        cfg.rc_undershoot_pct = 95
        cfg.rc_overshoot_pct = 15
        cfg.rc_buf_sz = 1000
        cfg.rc_buf_initial_sz = 500
        cfg.rc_buf_optimal_sz = 600
        cfg.rc_dropframe_thresh = 0  // a dropped frame would break the output frame rate
        cfg.kf_mode = VPX_KF_AUTO
        cfg.kf_min_dist = 0
        cfg.kf_max_dist = UInt32(max(1, configuration.keyframeInterval))
        context = .allocate(capacity: 1)
        context.initialize(to: vpx_codec_ctx_t())
        image = .allocate(capacity: 1)
        image.initialize(to: vpx_image_t())
        let err = sfu_vpx_codec_enc_init(context, iface, &cfg, 0)
        guard err == VPX_CODEC_OK else {
            context.deallocate()
            image.deallocate()
            throw EncoderError(description: "vpx_codec_enc_init: \(String(cString: vpx_codec_err_to_string(err)))")
        }
        _ = sfu_vpx_codec_control_int(context, Int32(VP8E_SET_CPUUSED.rawValue), Int32(configuration.cpuUsed))
        _ = sfu_vpx_codec_control_int(context, Int32(VP8E_SET_STATIC_THRESHOLD.rawValue), 1)
        _ = sfu_vpx_codec_control_int(context, Int32(VP8E_SET_NOISE_SENSITIVITY.rawValue), 0)
        guard vpx_img_alloc(image, VPX_IMG_FMT_I420, UInt32(configuration.width), UInt32(configuration.height), 32) != nil else {
            vpx_codec_destroy(context)
            context.deallocate()
            image.deallocate()
            throw EncoderError(description: "vpx_img_alloc")
        }
    }

    deinit {
        vpx_img_free(image)
        vpx_codec_destroy(context)
        context.deallocate()
        image.deallocate()
    }

    /// Reference flags for a frame of temporal layer `layer` in the three-layer pattern of Chromium's
    /// VP8 simulcast (layers 0, 2, 1, 2 repeating after a keyframe), so that a receiver given only
    /// layer 0, or layers 0 and 1, still decodes what it gets:
    /// - layer 0 predicts from LAST and updates LAST;
    /// - layer 1 predicts from LAST (layer 0) and updates GOLDEN only;
    /// - layer 2 predicts from LAST and GOLDEN and updates nothing.
    /// No frame uses ALTREF, and frames above layer 0 leave the entropy context alone (a dropped frame
    /// would otherwise change how the next one is read).
    package static func temporalLayerFlags(_ layer: UInt8) -> vpx_enc_frame_flags_t {
        let noRefGolden = vpx_enc_frame_flags_t(VP8_EFLAG_NO_REF_GF), noRefAlt = vpx_enc_frame_flags_t(VP8_EFLAG_NO_REF_ARF)
        let noUpdLast = vpx_enc_frame_flags_t(VP8_EFLAG_NO_UPD_LAST), noUpdGolden = vpx_enc_frame_flags_t(VP8_EFLAG_NO_UPD_GF)
        let noUpdAlt = vpx_enc_frame_flags_t(VP8_EFLAG_NO_UPD_ARF), noUpdEntropy = vpx_enc_frame_flags_t(VP8_EFLAG_NO_UPD_ENTROPY)
        switch layer {
        case 0: return noRefGolden | noRefAlt | noUpdGolden | noUpdAlt
        case 1: return noRefGolden | noRefAlt | noUpdLast | noUpdAlt | noUpdEntropy
        default: return noRefAlt | noUpdLast | noUpdGolden | noUpdAlt | noUpdEntropy
        }
    }

    /// Encodes one picture of the configured size.
    /// - Parameters:
    ///   - pts: its time in frame periods (1/fps), increasing.
    ///   - forceKeyframe: makes this frame a keyframe.
    ///   - temporalLayer: the frame's layer in the three-layer pattern (``temporalLayerFlags(_:)``);
    ///     nil without temporal layers.
    /// - Returns: the frames produced (one in real-time mode).
    package func encode(_ picture: I420Image, pts: Int64, forceKeyframe: Bool = false, temporalLayer: UInt8? = nil) throws -> [Frame] {
        guard picture.width == configuration.width, picture.height == configuration.height else {
            throw EncoderError(description: "picture \(picture.width)x\(picture.height) is not \(configuration.width)x\(configuration.height)")
        }
        let img = image.pointee
        guard let py = img.planes.0, let pu = img.planes.1, let pv = img.planes.2 else { throw EncoderError(description: "no image planes") }
        func fill(_ dst: UnsafeMutablePointer<UInt8>, stride: Int32, from src: [UInt8], width: Int, height: Int) {
            src.withUnsafeBufferPointer { s in
                guard let base = s.baseAddress else { return }
                for row in 0..<height { (dst + row * Int(stride)).update(from: base + row * width, count: width) }
            }
        }
        fill(py, stride: img.stride.0, from: picture.y, width: picture.width, height: picture.height)
        fill(pu, stride: img.stride.1, from: picture.u, width: picture.chromaWidth, height: picture.chromaHeight)
        fill(pv, stride: img.stride.2, from: picture.v, width: picture.chromaWidth, height: picture.chromaHeight)
        var flags: vpx_enc_frame_flags_t = forceKeyframe ? 1 : 0  // VPX_EFLAG_FORCE_KF
        if let temporalLayer, !forceKeyframe { flags |= Self.temporalLayerFlags(temporalLayer) }
        let err = vpx_codec_encode(context, image, pts, 1, flags, UInt(VPX_DL_REALTIME))
        guard err == VPX_CODEC_OK else { throw EncoderError(description: "vpx_codec_encode: \(String(cString: vpx_codec_err_to_string(err)))") }
        framesEncoded += 1
        return collect()
    }

    /// Frames still inside the encoder (none in real-time mode with no lag, but libvpx asks for the call).
    package func flush() -> [Frame] {
        guard vpx_codec_encode(context, nil, -1, 1, 0, UInt(VPX_DL_REALTIME)) == VPX_CODEC_OK else { return [] }
        return collect()
    }

    private func collect() -> [Frame] {
        var out: [Frame] = []
        var iterator: vpx_codec_iter_t? = nil
        while let pkt = vpx_codec_get_cx_data(context, &iterator) {
            guard pkt.pointee.kind == VPX_CODEC_CX_FRAME_PKT else { continue }
            let f = pkt.pointee.data.frame
            guard let buf = f.buf, f.sz > 0 else { continue }
            let data = [UInt8](UnsafeRawBufferPointer(start: buf, count: Int(f.sz)))
            out.append(Frame(data: data, keyframe: (f.flags & UInt32(VPX_FRAME_IS_KEY)) != 0, pts: f.pts))
        }
        return out
    }
}
