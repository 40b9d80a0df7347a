import COpus
import CSFUShim

/// A libopus decoder at 48 kHz: one Opus packet in, interleaved 16-bit PCM out; a lost packet is
/// concealed (PLC) so a gap does not click. Not thread-safe: one owner at a time.
package final class OpusDecoder {
    package struct CodecError: Error, CustomStringConvertible {
        package let description: String
    }

    package static let sampleRate = 48000
    /// 120 ms: the longest Opus packet, per channel.
    static let maxSamples = 5760
    package let channels: Int
    private let decoder: OpaquePointer
    private var lastPacketSamples = 960

    package init(channels: Int = 2) throws {
        guard channels == 1 || channels == 2 else { throw CodecError(description: "channels must be 1 or 2") }
        self.channels = channels
        var error: Int32 = 0
        guard let d = opus_decoder_create(Int32(Self.sampleRate), Int32(channels), &error), error == OPUS_OK else {
            throw CodecError(description: "opus_decoder_create: \(String(cString: opus_strerror(error)))")
        }
        decoder = d
    }

    deinit { opus_decoder_destroy(decoder) }

    /// Decodes one packet. - Returns: `samples per channel * channels` interleaved samples.
    package func decode(_ packet: [UInt8]) throws -> [Int16] {
        guard !packet.isEmpty else { return conceal() }
        var pcm = [Int16](repeating: 0, count: Self.maxSamples * channels)
        let n = packet.withUnsafeBufferPointer { p in opus_decode(decoder, p.baseAddress, Int32(p.count), &pcm, Int32(Self.maxSamples), 0) }
        guard n >= 0 else { throw CodecError(description: "opus_decode: \(String(cString: opus_strerror(n)))") }
        lastPacketSamples = Int(n)
        pcm.removeLast(pcm.count - Int(n) * channels)
        return pcm
    }

    /// Packet loss concealment for one lost packet.
    /// - Parameter samples: samples per channel to make up (the lost packet's duration; the last one's by default).
    package func conceal(samples: Int? = nil) -> [Int16] {
        // libopus wants a multiple of 2.5 ms.
        let want = min(Self.maxSamples, max(120, (samples ?? lastPacketSamples) / 120 * 120))
        var pcm = [Int16](repeating: 0, count: want * channels)
        let n = opus_decode(decoder, nil, 0, &pcm, Int32(want), 0)
        guard n > 0 else { return [Int16](repeating: 0, count: want * channels) }
        pcm.removeLast(pcm.count - Int(n) * channels)
        return pcm
    }
}

/// A libopus encoder at 48 kHz with 20 ms frames (960 samples per channel), full-band music/speech
/// mode. Not thread-safe: one owner at a time.
package final class OpusEncoder {
    package static let sampleRate = 48000
    package static let frameSamples = 960
    package let channels: Int
    /// Samples per channel the encoder delays its output by (the file's pre-skip).
    package let lookahead: Int
    private let encoder: OpaquePointer

    package init(channels: Int = 2, bitrateBps: Int = 64000, complexity: Int = 5) throws {
        guard channels == 1 || channels == 2 else { throw OpusDecoder.CodecError(description: "channels must be 1 or 2") }
        self.channels = channels
        var error: Int32 = 0
        guard let e = opus_encoder_create(Int32(Self.sampleRate), Int32(channels), OPUS_APPLICATION_AUDIO, &error), error == OPUS_OK else {
            throw OpusDecoder.CodecError(description: "opus_encoder_create: \(String(cString: opus_strerror(error)))")
        }
        encoder = e
        _ = sfu_opus_encoder_set_bitrate(e, Int32(bitrateBps))
        _ = sfu_opus_encoder_set_complexity(e, Int32(complexity))
        var la: Int32 = 312
        _ = sfu_opus_encoder_get_lookahead(e, &la)
        lookahead = Int(la)
    }

    deinit { opus_encoder_destroy(encoder) }

    /// Encodes one 20 ms frame (`frameSamples * channels` interleaved samples).
    package func encode(_ pcm: [Int16]) throws -> [UInt8] {
        guard pcm.count == Self.frameSamples * channels else {
            throw OpusDecoder.CodecError(description: "an Opus frame is \(Self.frameSamples * channels) samples, got \(pcm.count)")
        }
        var out = [UInt8](repeating: 0, count: 4000)
        let n = opus_encode(encoder, pcm, Int32(Self.frameSamples), &out, 4000)
        guard n > 0 else { throw OpusDecoder.CodecError(description: "opus_encode: \(String(cString: opus_strerror(n)))") }
        out.removeLast(out.count - Int(n))
        return out
    }
}
