import COpus
import CVPX

/// Versions of the codec libraries used by the composite recorder.
package enum CodecLibraries {
    package static var opusVersion: String { String(cString: opus_get_version_string()) }
    package static var vpxVersion: String { String(cString: vpx_codec_version_str()) }
}
