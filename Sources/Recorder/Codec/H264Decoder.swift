import CAVCodec
import RTP

/// Decodes one H.264 keyframe to a picture with FFmpeg's libavcodec, for snapshots. The recorder
/// never decodes H.264 otherwise: per-participant files keep the publisher's bitstream as it came
/// (Matroska), and the composite shows an H.264 publisher as a name tile.
///
/// One call, one decoder: the access unit must carry its SPS and PPS (FrameAssembler's H.264
/// keyframes do), so nothing from an earlier frame is needed, and a stateless call cannot be fed a
/// stream whose references it does not have.
package enum H264Decoder {
    package struct DecodeError: Error, CustomStringConvertible {
        package let description: String
    }

    /// Decodes `avcFrame` (an access unit in AVC form, 4-byte big-endian lengths before each NAL
    /// unit, as ``FrameAssembler`` gives H.264 frames) to an 8-bit 4:2:0 picture in limited range.
    package static func decodeKeyframe(_ avcFrame: [UInt8]) throws(DecodeError) -> I420Image {
        guard let units = H264.nalUnits(avcFrame: avcFrame), !units.isEmpty else {
            throw DecodeError(description: "not an access unit in AVC form")
        }
        // libavcodec's H.264 parser reads Annex B (start codes); its input needs zeroed padding.
        var annexB: [UInt8] = []
        annexB.reserveCapacity(avcFrame.count + Int(AV_INPUT_BUFFER_PADDING_SIZE))
        for unit in units {
            annexB += [0, 0, 0, 1]
            annexB += unit
        }
        let size = annexB.count
        annexB += [UInt8](repeating: 0, count: Int(AV_INPUT_BUFFER_PADDING_SIZE))

        _ = Self.quietLogging
        guard let codec = avcodec_find_decoder(AV_CODEC_ID_H264) else { throw DecodeError(description: "libavcodec has no H.264 decoder") }
        var allocatedContext = avcodec_alloc_context3(codec)
        var allocatedPacket = av_packet_alloc()
        var allocatedFrame = av_frame_alloc()
        defer {
            avcodec_free_context(&allocatedContext)
            av_packet_free(&allocatedPacket)
            av_frame_free(&allocatedFrame)
        }
        guard let context = allocatedContext, let packet = allocatedPacket, let frame = allocatedFrame else {
            throw DecodeError(description: "libavcodec: out of memory")
        }
        context.pointee.thread_count = 1
        var status = avcodec_open2(context, codec, nil)
        guard status == 0 else { throw DecodeError(description: "avcodec_open2: \(Self.message(status))") }
        status = annexB.withUnsafeMutableBufferPointer { buffer in
            // Not reference-counted: libavcodec copies the bytes before this returns.
            packet.pointee.data = buffer.baseAddress
            packet.pointee.size = Int32(size)
            defer {
                packet.pointee.data = nil
                packet.pointee.size = 0
            }
            return avcodec_send_packet(context, packet)
        }
        guard status == 0 else { throw DecodeError(description: "the keyframe did not decode: \(Self.message(status))") }
        // End of stream: the picture comes out now, not after the decoder's reordering delay.
        _ = avcodec_send_packet(context, nil)
        status = avcodec_receive_frame(context, frame)
        guard status == 0 else { throw DecodeError(description: "the keyframe gave no picture: \(Self.message(status))") }
        defer { av_frame_unref(frame) }
        return try Self.copy(frame.pointee)
    }

    /// Copies a decoded 4:2:0 picture (strided planes) into a packed I420Image; full range (the
    /// `yuvj420p` of a JPEG-range stream) is moved to the limited range the rest of the recorder uses.
    static func copy(_ f: AVFrame) throws(DecodeError) -> I420Image {
        let w = Int(f.width), h = Int(f.height)
        let format = f.format
        let full = format == AV_PIX_FMT_YUVJ420P.rawValue || f.color_range == AVCOL_RANGE_JPEG
        guard format == AV_PIX_FMT_YUV420P.rawValue || format == AV_PIX_FMT_YUVJ420P.rawValue else {
            throw DecodeError(description: "unsupported picture format \(format) (8-bit 4:2:0 only)")
        }
        guard w > 0, h > 0, let py = f.data.0, let pu = f.data.1, let pv = f.data.2 else {
            throw DecodeError(description: "an empty picture")
        }
        let cw = (w + 1) / 2, ch = (h + 1) / 2
        return I420Image(width: w, height: h,
                         y: I420Image.packedPlane(py, stride: Int(f.linesize.0), width: w, height: h, map: full ? Self.limitedLuma : nil),
                         u: I420Image.packedPlane(pu, stride: Int(f.linesize.1), width: cw, height: ch, map: full ? Self.limitedChroma : nil),
                         v: I420Image.packedPlane(pv, stride: Int(f.linesize.2), width: cw, height: ch, map: full ? Self.limitedChroma : nil))
    }

    /// libavcodec's own log (stderr) off, once for the process.
    private static let quietLogging: Void = av_log_set_level(AV_LOG_QUIET)

    /// Full range (0-255) to BT.601 limited range: luma 16-235, chroma 16-240.
    static let limitedLuma: [UInt8] = (0..<256).map { UInt8(16 + ($0 * 219 + 127) / 255) }
    static let limitedChroma: [UInt8] = (0..<256).map { UInt8(16 + ($0 * 224 + 127) / 255) }

    static func message(_ status: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: 128)
        _ = av_strerror(status, &buffer, buffer.count)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) + " (\(status))"
    }
}
