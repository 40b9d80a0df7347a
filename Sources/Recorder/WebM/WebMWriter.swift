/// A WebM (Matroska subset) muxer for one participant's recording: VP8 video and Opus audio in
/// SimpleBlocks, sans-IO. It hands back the bytes to append to the file as each cluster closes,
/// so a file cut off at any point is playable up to its last complete cluster; `finish()` adds the
/// Cues and returns the two in-place patches (Segment size, Duration) that make it seekable.
///
/// The Segment is written with the "unknown" size and the Info's Duration as a placeholder, both
/// patched at the end. Clusters start at every video keyframe and at least every second; a cue points
/// at each cluster that starts with a keyframe (or at every cluster of an audio-only file).
public final class WebMWriter {
    public enum Track: Sendable, Equatable { case video, audio }

    public struct Configuration: Sendable, Equatable {
        public var video: (width: Int, height: Int)?
        public var audio: (channels: Int, sampleRate: Int)?
        public var muxingApp = "sfu"
        public init(video: (width: Int, height: Int)?, audio: (channels: Int, sampleRate: Int)?) {
            self.video = video
            self.audio = audio
        }
        public static func == (a: Configuration, b: Configuration) -> Bool {
            a.video?.width == b.video?.width && a.video?.height == b.video?.height
                && a.audio?.channels == b.audio?.channels && a.audio?.sampleRate == b.audio?.sampleRate && a.muxingApp == b.muxingApp
        }
    }

    public let configuration: Configuration
    /// Bytes handed out so far (the file's size once appended).
    public private(set) var size = 0
    /// Frames written, by track.
    public private(set) var videoFrames = 0
    public private(set) var audioFrames = 0
    public private(set) var lastTimestampMs: Int64 = 0
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

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    var videoTrackNumber: UInt64? { configuration.video == nil ? nil : 1 }
    var audioTrackNumber: UInt64? { configuration.audio == nil ? nil : (configuration.video == nil ? 1 : 2) }

    /// The EBML header, the Segment start, Info and Tracks.
    public func start() -> [UInt8] {
        precondition(!started)
        started = true
        var out: [UInt8] = []
        EBML.master(MKV.ebml, to: &out) { e in
            EBML.uint(MKV.ebmlVersion, 1, to: &e)
            EBML.uint(MKV.ebmlReadVersion, 1, to: &e)
            EBML.uint(MKV.ebmlMaxIDLength, 4, to: &e)
            EBML.uint(MKV.ebmlMaxSizeLength, 8, to: &e)
            EBML.string(MKV.docType, "webm", to: &e)
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
        EBML.master(MKV.tracks, to: &out) { t in
            if let video = configuration.video, let number = videoTrackNumber {
                EBML.master(MKV.trackEntry, to: &t) { e in
                    EBML.uint(MKV.trackNumber, number, to: &e)
                    EBML.uint(MKV.trackUID, number, to: &e)
                    EBML.uint(MKV.trackType, 1, to: &e)
                    EBML.uint(MKV.flagLacing, 0, to: &e)
                    EBML.string(MKV.codecID, "V_VP8", to: &e)
                    EBML.master(MKV.video, to: &e) { v in
                        EBML.uint(MKV.pixelWidth, UInt64(video.width), to: &v)
                        EBML.uint(MKV.pixelHeight, UInt64(video.height), to: &v)
                    }
                }
            }
            if let audio = configuration.audio, let number = audioTrackNumber {
                EBML.master(MKV.trackEntry, to: &t) { e in
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
        }
        size = out.count
        return out
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
    public func add(_ track: Track, timestampMs: Int64, keyframe: Bool, data: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(started)
        guard let number = track == .video ? videoTrackNumber : audioTrackNumber else { return [] }
        // Never back in time within a track (players require increasing timestamps per stream).
        let timestampMs = max(timestampMs, track == .video ? lastVideoMs : lastAudioMs)
        if track == .video { lastVideoMs = timestampMs } else { lastAudioMs = timestampMs }
        var out: [UInt8] = []
        let startNew = !clusterOpen || (track == .video && keyframe) || timestampMs - clusterTimecode >= Self.maxClusterMs
        if startNew, clusterOpen, !(cluster.isEmpty) { out = closeCluster() }
        if !clusterOpen {
            clusterOpen = true
            clusterTimecode = timestampMs
            clusterStartsWithKeyframe = track == .video && keyframe
        }
        // Relative to the cluster: signed, so a frame of the other track a little older than the
        // cluster's first frame keeps its own time.
        let relative = Int16(clamping: timestampMs - clusterTimecode)
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
    public var durationMs: Int64 { videoFrames + audioFrames == 0 ? 0 : lastTimestampMs + (configuration.video != nil ? 33 : 20) }

    /// Closes the last cluster and writes the Cues.
    /// - Returns: bytes to append, then patches `(file offset, bytes)` to write over what is there.
    public func finish() -> (append: [UInt8], patches: [(offset: Int, bytes: [UInt8])]) {
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
