import COpus
import CSFUShim
import CVPX
import Foundation
import Recorder
import Testing

@Suite("C library link: libopus and libvpx")
struct CodecSmokeTests {
    @Test func opusEncoderEncodesAFrame() throws {
        #expect(CodecLibraries.opusVersion.hasPrefix("libopus 1."))
        var error: Int32 = 0
        let encoder = try #require(opus_encoder_create(48000, 2, OPUS_APPLICATION_VOIP, &error))
        defer { opus_encoder_destroy(encoder) }
        #expect(error == OPUS_OK)
        #expect(sfu_opus_encoder_set_bitrate(encoder, 32000) == OPUS_OK)
        var bitrate: Int32 = 0
        #expect(sfu_opus_encoder_get_bitrate(encoder, &bitrate) == OPUS_OK)
        #expect(bitrate == 32000)
        // 20 ms of a 440 Hz tone, stereo.
        var pcm = [Int16](repeating: 0, count: 960 * 2)
        for i in 0..<960 {
            let phase: Double = 2 * Double.pi * 440 * Double(i) / 48000
            let sample = Int16(8000 * sin(phase))
            pcm[2 * i] = sample
            pcm[2 * i + 1] = sample
        }
        var packet = [UInt8](repeating: 0, count: 1500)
        let size = opus_encode(encoder, pcm, 960, &packet, 1500)
        #expect(size > 1)
        // The TOC byte's config is a CELT or hybrid/SILK mode at 20 ms: frames count code 0..3 is valid.
        #expect(opus_packet_get_nb_samples(packet, size, 48000) == 960)
    }

    @Test func vp8EncoderMakesAKeyframe() throws {
        #expect(!CodecLibraries.vpxVersion.isEmpty)
        let iface = try #require(vpx_codec_vp8_cx())
        var cfg = vpx_codec_enc_cfg_t()
        #expect(vpx_codec_enc_config_default(iface, &cfg, 0) == VPX_CODEC_OK)
        cfg.g_w = 160
        cfg.g_h = 120
        cfg.rc_target_bitrate = 200
        var codec = vpx_codec_ctx_t()
        #expect(sfu_vpx_codec_enc_init(&codec, iface, &cfg, 0) == VPX_CODEC_OK)
        defer { vpx_codec_destroy(&codec) }
        #expect(sfu_vpx_codec_control_int(&codec, Int32(VP8E_SET_CPUUSED.rawValue), 8) == VPX_CODEC_OK)
        var image = vpx_image_t()
        let allocated = try #require(vpx_img_alloc(&image, VPX_IMG_FMT_I420, 160, 120, 16))
        defer { vpx_img_free(allocated) }
        let planeSize = Int(image.stride.0) * 120
        image.planes.0?.initialize(repeating: 128, count: planeSize)
        #expect(vpx_codec_encode(&codec, &image, 0, 1, 0, UInt(VPX_DL_REALTIME)) == VPX_CODEC_OK)
        var iterator: vpx_codec_iter_t? = nil
        var sawKeyframe = false
        while let pkt = vpx_codec_get_cx_data(&codec, &iterator) {
            if pkt.pointee.kind == VPX_CODEC_CX_FRAME_PKT {
                sawKeyframe = sawKeyframe || (pkt.pointee.data.frame.flags & UInt32(VPX_FRAME_IS_KEY)) != 0
            }
        }
        #expect(sawKeyframe)
    }
}
