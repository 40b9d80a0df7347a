/// A WebM (Matroska subset) muxer for one participant's recording: VP8 video and Opus audio in
/// SimpleBlocks, sans-IO. With H.264 video the file is Matroska (DocType "matroska",
/// `V_MPEG4/ISO/AVC`, frames in AVC form): its CodecPrivate (avcC, from the first keyframe's SPS
/// and PPS) is not known when the header is written, so the header reserves room for it, patched
/// by ``setCodecPrivate(_:)``. It hands back the bytes to append to the file as each cluster closes,
/// so a file cut off at any point is playable up to its last complete cluster; `finish()` adds the
/// Cues and returns the two in-place patches (Segment size, Duration) that make it seekable.
///
/// The Segment is written with the "unknown" size and the Info's Duration as a placeholder, both
/// patched at the end. Clusters start at every video keyframe and at least every second; a cue points
/// at each cluster that starts with a keyframe (or at every cluster of an audio-only file).
package final class WebMWriter {
    package enum Track: Sendable, Equatable { case video, audio }
    package enum VideoCodec: Sendable, Equatable { case vp8, h264 }

    package struct Configuration: Sendable, Equatable {
        package var video: (width: Int, height: Int)?
        package var audio: (channels: Int, sampleRate: Int)?
        package var videoCodec: VideoCodec
        package var muxingApp = "sfu"
        package init(video: (width: Int, height: Int)?, audio: (channels: Int, sampleRate: Int)?, videoCodec: VideoCodec = .vp8) {
            self.video = video
            self.audio = audio
            self.videoCodec = videoCodec
        }
        package static func == (a: Configuration, b: Configuration) -> Bool {
            a.video?.width == b.video?.width && a.video?.height == b.video?.height && a.videoCodec == b.videoCodec
                && a.audio?.channels == b.audio?.channels && a.audio?.sampleRate == b.audio?.sampleRate && a.muxingApp == b.muxingApp
        }
        /// Matroska (H.264 video) rather than WebM.
        package var isMatroska: Bool { video != nil && videoCodec == .h264 }
    }

    /// Bytes reserved in the video TrackEntry for the CodecPrivate of H.264 (a Void until patched).
    static let reservedCodecPrivate = 512
    /// File offset of the reserved bytes (0: none).
    private var codecPrivateOffset = 0
    package private(set) var hasCodecPrivate = false

    package let configuration: Configuration
    /// Bytes handed out so far (the file's size once appended).
    package private(set) var size = 0
    /// Frames written, by track.
    package private(set) var videoFrames = 0
    package private(set) var audioFrames = 0
    package private(set) var lastTimestampMs: Int64 = 0
    private var lastVideoMs: Int64 = 0
    private var lastAudioMs: Int64 = 0
    private var segmentDataStart = 0
    private var segmentSizeOffset = 0
    private var durationOffset = 0
    private var cluster: [UInt8] = []
    private var clusterTimecode: Int64 = 0
    private var clusterOpen = false
    private var clusterStartsWithKeyframe = false
    private var cues: [(time: Int64, position: Int)] = []
    private var started = false
    static let maxClusterMs: Int64 = 1000

    package init(configuration: Configuration) {
        self.configuration = configuration
    }

    var videoTrackNumber: UInt64? { configuration.video == nil ? nil : 1 }
    var audioTrackNumber: UInt64? { configuration.audio == nil ? nil : (configuration.video == nil ? 1 : 2) }

    /// The EBML header, the Segment start, Info and Tracks.
    package func start() -> [UInt8] {
        precondition(!started)
        started = true
        var out: [UInt8] = []
        EBML.master(MKV.ebml, to: &out) { e in
            EBML.uint(MKV.ebmlVersion, 1, to: &e)
            EBML.uint(MKV.ebmlReadVersion, 1, to: &e)
            EBML.uint(MKV.ebmlMaxIDLength, 4, to: &e)
            EBML.uint(MKV.ebmlMaxSizeLength, 8, to: &e)
            EBML.string(MKV.docType, configuration.isMatroska ? "matroska" : "webm", to: &e)
            EBML.uint(MKV.docTypeVersion, 4, to: &e)
            EBML.uint(MKV.docTypeReadVersion, 2, to: &e)
        }
        EBML.appendID(MKV.segment, to: &out)
        segmentSizeOffset = out.count
        out += EBML.unknownSize
        segmentDataStart = out.count
        // Info, with the Duration's 8 float bytes at a known offset.
        var info: [UInt8] = []
        EBML.uint(MKV.timecodeScale, 1_000_000, to: &info)  // 1 ms
        EBML.string(MKV.muxingApp, configuration.muxingApp, to: &info)
        EBML.string(MKV.writingApp, configuration.muxingApp, to: &info)
        let durationStartInInfo = info.count
        EBML.float(MKV.duration, 0, to: &info)
        EBML.appendID(MKV.info, to: &out)
        EBML.appendSize(UInt64(info.count), to: &out)
        durationOffset = out.count + durationStartInInfo + 3  // id (2 bytes) + size (1 byte)
        out += info
        var tracksBody: [UInt8] = []
        if let video = configuration.video, let number = videoTrackNumber {
            var e: [UInt8] = []
            EBML.uint(MKV.trackNumber, number, to: &e)
            EBML.uint(MKV.trackUID, number, to: &e)
            EBML.uint(MKV.trackType, 1, to: &e)
            EBML.uint(MKV.flagLacing, 0, to: &e)
            EBML.string(MKV.codecID, configuration.videoCodec == .h264 ? "V_MPEG4/ISO/AVC" : "V_VP8", to: &e)
            EBML.master(MKV.video, to: &e) { v in
                EBML.uint(MKV.pixelWidth, UInt64(video.width), to: &v)
                EBML.uint(MKV.pixelHeight, UInt64(video.height), to: &v)
            }
            var reservedAt: Int?
            if configuration.videoCodec == .h264 {
                reservedAt = e.count
                e += Self.void(Self.reservedCodecPrivate)
            }
            EBML.appendID(MKV.trackEntry, to: &tracksBody)
            EBML.appendSize(UInt64(e.count), to: &tracksBody)
            if let reservedAt { codecPrivateOffset = tracksBody.count + reservedAt }
            tracksBody += e
        }
        if let audio = configuration.audio, let number = audioTrackNumber {
            EBML.master(MKV.trackEntry, to: &tracksBody) { e in
                EBML.uint(MKV.trackNumber, number, to: &e)
                EBML.uint(MKV.trackUID, number, to: &e)
                EBML.uint(MKV.trackType, 2, to: &e)
                EBML.uint(MKV.flagLacing, 0, to: &e)
                EBML.string(MKV.codecID, "A_OPUS", to: &e)
                EBML.element(MKV.codecPrivate, Self.opusHead(channels: audio.channels, sampleRate: audio.sampleRate), to: &e)
                EBML.uint(MKV.codecDelay, 6_500_000, to: &e)  // the 312-sample pre-skip, ns
                EBML.uint(MKV.seekPreRoll, 80_000_000, to: &e)
                EBML.master(MKV.audio, to: &e) { a in
                    EBML.float(MKV.samplingFrequency, Double(audio.sampleRate), to: &a)
                    EBML.uint(MKV.channels, UInt64(audio.channels), to: &a)
                }
            }
        }
        EBML.appendID(MKV.tracks, to: &out)
        EBML.appendSize(UInt64(tracksBody.count), to: &out)
        if codecPrivateOffset > 0 { codecPrivateOffset += out.count }
        out += tracksBody
        size = out.count
        return out
    }

    /// A Void element of exactly `total` bytes (id, an 8-byte size, zeros).
    static func void(_ total: Int) -> [UInt8] {
        var out: [UInt8] = []
        EBML.appendID(MKV.void, to: &out)
        EBML.appendSize(UInt64(total - 9), to: &out, width: 8)
        return out + [UInt8](repeating: 0, count: total - 9)
    }

    /// The H.264 track's CodecPrivate (an avcC record), written over the room the header reserved:
    /// CodecPrivate, then a Void for what is left. Once only.
    /// - Returns: the patch `(file offset, bytes)`, or nil when there is no such room or it is too small.
    package func setCodecPrivate(_ bytes: [UInt8]) -> (offset: Int, bytes: [UInt8])? {
        guard started, codecPrivateOffset > 0, !hasCodecPrivate else { return nil }
        var patch: [UInt8] = []
        EBML.appendID(MKV.codecPrivate, to: &patch)
        EBML.appendSize(UInt64(bytes.count), to: &patch, width: 8)
        patch += bytes
        let left = Self.reservedCodecPrivate - patch.count
        guard left >= 9 else { return nil }
        patch += Self.void(left)
        hasCodecPrivate = true
        return (codecPrivateOffset, patch)
    }

    /// RFC 7845 5.1 identification header.
    static func opusHead(channels: Int, sampleRate: Int) -> [UInt8] {
        var h = Array("OpusHead".utf8)
        h.append(1)
        h.append(UInt8(channels))
        h += [0x38, 0x01]  // pre-skip 312, little endian
        let rate = UInt32(sampleRate)
        h += [UInt8(truncatingIfNeeded: rate), UInt8(truncatingIfNeeded: rate >> 8), UInt8(truncatingIfNeeded: rate >> 16), UInt8(truncatingIfNeeded: rate >> 24)]
        h += [0, 0, 0]  // output gain, mapping family 0
        return h
    }

    /// Adds one frame at `timestampMs` (non-decreasing across tracks: the caller interleaves).
    /// - Returns: the bytes of a cluster that closed, to append to the file (often empty).
    package func add(_ track: Track, timestampMs: Int64, keyframe: Bool, data: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(started)
        guard let number = track == .video ? videoTrackNumber : audioTrackNumber else { return [] }
        // Never back in time within a track (players require increasing timestamps per stream).
        let timestampMs = max(timestampMs, track == .video ? lastVideoMs : lastAudioMs)
        if track == .video { lastVideoMs = timestampMs } else { lastAudioMs = timestampMs }
        var out: [UInt8] = []
        // A frame whose time does not fit the cluster's signed 16-bit relative timecode (one track
        // more than 32 s behind the other) starts a cluster of its own rather than being written
        // at a clamped, wrong time.
        let fits = timestampMs - clusterTimecode >= Int64(Int16.min)
        let startNew = !clusterOpen || !fits || (track == .video && keyframe) || timestampMs - clusterTimecode >= Self.maxClusterMs
        if startNew, clusterOpen, !(cluster.isEmpty) { out = closeCluster() }
        if !clusterOpen {
            clusterOpen = true
            clusterTimecode = timestampMs
            clusterStartsWithKeyframe = track == .video && keyframe
        }
        // Relative to the cluster: signed, so a frame of the other track a little older than the
        // cluster's first frame keeps its own time.
        let relative = Int16(truncatingIfNeeded: timestampMs - clusterTimecode)  // in range: see `fits`
        // SimpleBlock: track number (vint), relative timecode (int16), flags, frame.
        EBML.appendID(MKV.simpleBlock, to: &cluster)
        EBML.appendSize(UInt64(1 + 2 + 1 + data.count), to: &cluster)
        cluster.append(0x80 | UInt8(number))
        cluster.append(UInt8(truncatingIfNeeded: UInt16(bitPattern: relative) >> 8))
        cluster.append(UInt8(truncatingIfNeeded: UInt16(bitPattern: relative)))
        cluster.append(keyframe || track == .audio ? 0x80 : 0x00)
        cluster.append(contentsOf: data)
        lastTimestampMs = max(lastTimestampMs, timestampMs)
        if track == .video { videoFrames += 1 } else { audioFrames += 1 }
        return out
    }

    private func closeCluster() -> [UInt8] {
        guard clusterOpen else { return [] }
        clusterOpen = false
        if clusterStartsWithKeyframe || configuration.video == nil {
            cues.append((clusterTimecode, size - segmentDataStart))
        }
        var timecode: [UInt8] = []
        EBML.uint(MKV.timecode, UInt64(max(0, clusterTimecode)), to: &timecode)
        var out: [UInt8] = []
        EBML.appendID(MKV.cluster, to: &out)
        EBML.appendSize(UInt64(timecode.count + cluster.count), to: &out)
        out += timecode
        out += cluster
        cluster.removeAll(keepingCapacity: true)
        size += out.count
        return out
    }

    /// The recording's duration: the last frame's time plus one frame.
    package var durationMs: Int64 { videoFrames + audioFrames == 0 ? 0 : lastTimestampMs + (configuration.video != nil ? 33 : 20) }

    /// Closes the last cluster and writes the Cues.
    /// - Returns: bytes to append, then patches `(file offset, bytes)` to write over what is there.
    package func finish() -> (append: [UInt8], patches: [(offset: Int, bytes: [UInt8])]) {
        var out = closeCluster()  // counted in `size` already
        let cuesStart = out.count
        if !cues.isEmpty {
            var body: [UInt8] = []
            for cue in cues {
                EBML.master(MKV.cuePoint, to: &body) { p in
                    EBML.uint(MKV.cueTime, UInt64(max(0, cue.time)), to: &p)
                    EBML.master(MKV.cueTrackPositions, to: &p) { t in
                        EBML.uint(MKV.cueTrack, videoTrackNumber ?? audioTrackNumber ?? 1, to: &t)
                        EBML.uint(MKV.cueClusterPosition, UInt64(cue.position), to: &t)
                    }
                }
            }
            EBML.appendID(MKV.cues, to: &out)
            EBML.appendSize(UInt64(body.count), to: &out)
            out += body
        }
        size += out.count - cuesStart
        var segmentSize: [UInt8] = []
        EBML.appendSize(UInt64(size - segmentDataStart), to: &segmentSize, width: 8)
        let duration = Double(durationMs).bitPattern
        let durationBytes = (0..<8).map { UInt8(truncatingIfNeeded: duration >> (8 * UInt64(7 - $0))) }
        return (out, [(segmentSizeOffset, segmentSize), (durationOffset, durationBytes)])
    }
}
