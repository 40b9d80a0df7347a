import Foundation

/// The composite's media work, sans-IO: assembled frames in (already placed on the recording's
/// timeline), one WebM out. Video frames are queued per source still encoded and decoded when the
/// output clock reaches them (every frame, in order, so references stay intact), which keeps one
/// decoded picture per source in memory; audio is decoded as it comes and placed in the mixer.
/// ``advance(toNanos:)`` composes and encodes every output frame (1/fps) and every 20 ms of audio
/// up to a time, in time order, and returns the bytes for the file.
///
/// Not thread-safe: it runs on the composite's processing queue (``CompositeRecording``), never on
/// a media worker's loop.
final class CompositeEngine {
    struct Options: Sendable, Equatable {
        var width = 1280
        var height = 720
        var fps = 30
        var videoBitrateBps = 1_500_000
        var audioBitrateBps = 64000
        /// libvpx real-time speed (VP8Encoder.Configuration.cpuUsed): 12 rather than 8 takes the
        /// encoder from 0.33 to 0.23 of a core at 1280x720/30 (composite-bench), for the 0.5-core budget.
        var cpuUsed = 12
        var layout: CompositeLayout.Kind = .grid
        var fontPath = NameTileRenderer.defaultFontPath
        /// A camera whose last picture is older than this shows its name instead (muted, stopped, frozen).
        var staleNanos: Int64 = 1_500_000_000
    }

    /// Who is in the call at a time (the room side sends one whenever it changes).
    struct RosterEntry: Sendable, Equatable {
        var peerID: String
        var name: String
        /// The VP8 camera and screen producers (nil: none, or a codec the recorder cannot decode).
        var camera: String?
        var screen: String?
    }

    struct TileSize: Sendable, Equatable {
        var width: Int
        var height: Int
    }

    struct VideoSource {
        var queue: [(nanos: Int64, frame: AssembledFrame)] = []
        var decoder: VP8Decoder?
        var picture: I420Image?
        var pictureNanos: Int64 = .min
        /// Where the current picture is on the canvas already (a picture repeated over several output
        /// frames is scaled once; nil after a new picture).
        var drawn: Rect?
    }

    struct AudioSource {
        var decoder: OpusDecoder?
        var nextSample: Int64?
        var lastRTP: UInt32?
        /// How long the last packet lasted (samples at 48 kHz), to tell a lost packet from a longer frame.
        var lastSamples: Int64 = 960
    }

    struct Stats: Sendable, Equatable {
        var videoFramesIn = 0
        var videoFramesDecoded = 0
        var videoFramesUndecodable = 0
        var audioFramesIn = 0
        var audioFramesConcealed = 0
        var outputVideoFrames = 0
        var outputAudioFrames = 0
        /// Output video frames not composed or encoded because the output lagged (catching up).
        var outputVideoFramesSkipped = 0
        /// Source frames not decoded while catching up: they came before a keyframe that was
        /// itself before the catch-up point, so no picture shown and no reference needed them.
        var videoFramesSkipped = 0
        /// CPU time of the engine's thread per stage (not wall time: on a busy machine the
        /// queue's thread is preempted, and the split should say what the work costs).
        var decodeNanos: Int64 = 0
        var composeNanos: Int64 = 0
        var encodeNanos: Int64 = 0
        var mixNanos: Int64 = 0
        /// Per video source, the widths of the pictures decoded, each once per change (the
        /// simulcast layers it went through).
        var decodedWidths: [String: [Int]] = [:]
    }

    /// The calling thread's CPU clock. Each stage is timed inside one call, on one thread (the
    /// encoder and decoders run single-threaded), so the difference is that stage's CPU time.
    static func threadCPUNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    let options: Options
    /// Time 0 of the file, on the recording's timeline (the room's monotonic clock).
    let originNanos: Int64
    private let encoder: VP8Encoder
    private let opus: OpusEncoder
    private let names: NameTileRenderer?
    private let writer: WebMWriter
    private var mixer = AudioMixer()
    private var video: [String: VideoSource] = [:]
    private var audio: [String: AudioSource] = [:]
    private var rosters: [(nanos: Int64, entries: [RosterEntry])] = []
    private var canvas: I420Image
    private var nextVideoIndex: Int64 = 0
    private var nextAudioIndex: Int64 = 0
    private var lastTiles: [CompositeLayout.Tile] = []
    private var forceKeyframe = false
    /// Active speaker: smoothed audio level per participant, who speaks, and for how many audio frames another has been louder.
    private var loudness: [String: Float] = [:]
    private(set) var speaker: String?
    private var challenger: (id: String, frames: Int)?
    private(set) var stats = Stats()
    /// Producers whose decoder waits for a keyframe (the room side asks the publisher).
    private(set) var keyframesWanted: Set<String> = []
    /// The size each video source is drawn at in the current layout (0 x 0: not shown), so the
    /// room side takes the simulcast layer that fits (``Producer/setTapSize(_:width:height:nowNanos:)``).
    private(set) var tileSizes: [String: TileSize] = [:]
    private var lastEntries: [RosterEntry] = []
    private var started = false

    init(options: Options, originNanos: Int64) throws {
        self.options = options
        self.originNanos = originNanos
        encoder = try VP8Encoder(.init(width: options.width, height: options.height, fps: options.fps, bitrateBps: options.videoBitrateBps, cpuUsed: options.cpuUsed))
        opus = try OpusEncoder(channels: 2, bitrateBps: options.audioBitrateBps)
        names = try? NameTileRenderer(fontPath: options.fontPath)
        writer = WebMWriter(configuration: .init(video: (options.width, options.height), audio: (2, 48000)))
        canvas = I420Image(width: options.width, height: options.height)
    }

    /// The first bytes of the file (header and tracks).
    func start() -> [UInt8] {
        started = true
        return writer.start()
    }

    func roster(_ entries: [RosterEntry], atNanos: Int64) {
        rosters.append((atNanos, entries))
    }

    /// A VP8 frame of producer `source` at `nanos`.
    func video(source: String, nanos: Int64, frame: AssembledFrame) {
        stats.videoFramesIn += 1
        video[source, default: VideoSource()].queue.append((nanos, frame))
    }

    /// An Opus packet of participant `peerID`'s microphone at `nanos`, with its RTP timestamp (48 kHz)
    /// to tell a lost packet (concealed) from a pause (silence).
    func audio(peerID: String, nanos: Int64, frame: AssembledFrame) {
        stats.audioFramesIn += 1
        var s = audio[peerID] ?? AudioSource()
        if s.decoder == nil { s.decoder = try? OpusDecoder(channels: 2) }
        guard let decoder = s.decoder else { return }
        let t0 = Self.threadCPUNanos()
        let at = (nanos - originNanos) * 48 / 1_000_000
        var position = at
        if let expected = s.nextSample, let lastRTP = s.lastRTP {
            let rtpGap = Int64(Int32(bitPattern: frame.rtpTimestamp &- lastRTP))
            // Packets lost in between: the RTP clock moved further than the last packet lasted (up to 60 ms, concealed).
            let lostSamples = rtpGap > s.lastSamples && rtpGap - s.lastSamples <= 2880 ? rtpGap - s.lastSamples : 0
            // Continuous stream: keep it sample-exact where the sender's clock puts this packet
            // within 20 ms of the end of the last one plus what was lost (a re-anchored SR moves a
            // track by a few samples, which would click). Further than that the sender's SR moved
            // its audio against its clock (its capture stalled, say, and the video did not): follow
            // it, or the composite's lip sync would be off by that much for the rest of the call.
            if (at - (expected + lostSamples)).magnitude < 960 {
                position = expected
                if lostSamples >= 960 {
                    var filled: Int64 = 0
                    while filled < lostSamples {
                        let pcm = decoder.conceal(samples: 960)
                        mixer.add(source: peerID, at: position + filled, pcm: pcm, channels: 2)
                        filled += Int64(pcm.count / 2)
                        stats.audioFramesConcealed += 1
                    }
                    position += filled
                }
            }
        }
        let pcm = (try? decoder.decode(frame.data)) ?? decoder.conceal()
        mixer.add(source: peerID, at: position, pcm: pcm, channels: 2)
        s.nextSample = position + Int64(pcm.count / 2)
        s.lastSamples = Int64(pcm.count / 2)
        s.lastRTP = frame.rtpTimestamp
        audio[peerID] = s
        stats.decodeNanos += Int64(Self.threadCPUNanos() - t0)
    }

    /// A producer that ended (unpublished) or a participant that left, at `nanos`: its decoder
    /// goes once the output passes that time (what it sent before is still composed).
    func retire(source: String?, peerID: String?, nanos: Int64) {
        if let source { retiredVideo[source] = nanos }
        if let peerID { retiredAudio[peerID] = nanos }
    }
    private var retiredVideo: [String: Int64] = [:]
    private var retiredAudio: [String: Int64] = [:]

    /// Frames still queued for decoding, by source (the room side's backlog bound).
    var backlog: [String: Int] { video.mapValues { $0.queue.count } }

    func takeKeyframeRequests() -> Set<String> {
        defer { keyframesWanted.removeAll() }
        return keyframesWanted
    }

    var videoPeriodNanos: Int64 { 1_000_000_000 / Int64(options.fps) }
    /// The time (timeline) of the next output video frame.
    private var nextVideoNanos: Int64 { originNanos + nextVideoIndex * 1_000_000_000 / Int64(options.fps) }

    /// Writes every output frame whose time is before `toNanos` (timeline). Video output frames that
    /// end before `skipVideoBefore` are not composed or encoded (the sources are still decoded up to
    /// them): the output is behind and catches up; audio is always written.
    /// - Returns: bytes to append to the file.
    func advance(toNanos: Int64, skipVideoBefore: Int64 = .min) -> [UInt8] {
        precondition(started)
        var out: [UInt8] = []
        if skipVideoBefore > nextVideoNanos {
            for id in Array(video.keys) { skipToKeyframe(id, before: skipVideoBefore) }
        }
        while true {
            let videoAt = nextVideoNanos
            let audioAt = originNanos + nextAudioIndex * 20_000_000
            // A frame goes out once its whole duration is behind the horizon.
            if audioAt <= videoAt {
                guard audioAt + 20_000_000 <= toNanos else { break }
                out += emitAudio()
            } else {
                guard videoAt + videoPeriodNanos <= toNanos else { break }
                out += emitVideo(atNanos: videoAt, encode: videoAt + videoPeriodNanos > skipVideoBefore)
            }
        }
        return out
    }

    private func emitAudio() -> [UInt8] {
        let at = originNanos + nextAudioIndex * 20_000_000
        for (peer, nanos) in retiredAudio where nanos < at {
            audio[peer] = nil
            mixer.remove(source: peer)
            loudness[peer] = nil
            retiredAudio[peer] = nil
        }
        let t0 = Self.threadCPUNanos()
        let pcm = mixer.mix(from: nextAudioIndex * 960, count: 960)
        updateSpeaker(mixer.levels)
        let t1 = Self.threadCPUNanos()
        let ms = nextAudioIndex * 20
        nextAudioIndex += 1
        stats.mixNanos += Int64(t1 - t0)
        guard let packet = try? opus.encode(pcm) else { return [] }
        stats.encodeNanos += Int64(Self.threadCPUNanos() - t1)
        stats.outputAudioFrames += 1
        return packet.withUnsafeBytes { writer.add(.audio, timestampMs: ms, keyframe: true, data: $0) }
    }

    /// Speaker changes need the other participant louder for a second, so short sounds do not flip the layout.
    private func updateSpeaker(_ levels: [String: Float]) {
        for (id, level) in levels { loudness[id, default: 0] += (level - loudness[id, default: 0]) * 0.1 }
        guard let (loudest, level) = loudness.max(by: { $0.value < $1.value }), level > 0.003 else { return }
        if speaker == nil || loudness[speaker ?? ""] == nil {
            speaker = loudest
            challenger = nil
        } else if loudest != speaker {
            if challenger?.id == loudest { challenger?.frames += 1 } else { challenger = (loudest, 1) }
            if let c = challenger, c.frames >= 50 {
                speaker = loudest
                challenger = nil
            }
        } else {
            challenger = nil
        }
    }

    func roster(atNanos: Int64) -> [RosterEntry] {
        rosters.last(where: { $0.nanos <= atNanos })?.entries ?? []
    }

    private func emitVideo(atNanos t: Int64, encode: Bool = true) -> [UInt8] {
        // Older rosters are no longer needed once a newer one applies.
        if let index = rosters.lastIndex(where: { $0.nanos <= t }), index > 0 { rosters.removeFirst(index) }
        let entries = roster(atNanos: t)
        let t0 = Self.threadCPUNanos()
        // Decode every source up to t (all sources, shown or not: references must stay whole).
        // Each source frame goes to the output frame nearest its time, not the next one: the output
        // frame at t shows what was captured up to half a period after t (otherwise every picture
        // is on average half an output period late against the audio, 17 ms at 30 fps).
        for id in Array(video.keys) { decode(id, upTo: t + videoPeriodNanos / 2) }
        for (id, nanos) in retiredVideo where nanos < t {
            video[id] = nil
            retiredVideo[id] = nil
        }
        let t1 = Self.threadCPUNanos()
        guard encode else {
            stats.decodeNanos += Int64(t1 - t0)
            stats.outputVideoFramesSkipped += 1
            nextVideoIndex += 1
            return []
        }
        let participants = entries.map { e in
            CompositeLayout.Participant(id: e.peerID, isSpeaking: e.peerID == speaker, sharesScreen: e.screen.map { hasPicture($0, at: t) } ?? false)
        }
        let tiles = CompositeLayout.tiles(participants, kind: options.layout, width: options.width, height: options.height)
        let relayout = tiles != lastTiles
        if relayout {
            canvas = I420Image(width: options.width, height: options.height)
            lastTiles = tiles
        }
        if relayout || entries != lastEntries {
            lastEntries = entries
            tileSizes = Self.tileSizes(entries, tiles)
        }
        for tile in tiles {
            switch tile.content {
            case .screen(let peer):
                guard let id = entries.first(where: { $0.peerID == peer })?.screen else { continue }
                drawVideo(id, tile: tile.rect, force: relayout)
            case .camera(let peer):
                guard let entry = entries.first(where: { $0.peerID == peer }) else { continue }
                if let id = entry.camera, hasPicture(id, at: t) {
                    drawVideo(id, tile: tile.rect, force: relayout)
                } else if let names {
                    let img = names.tile(name: entry.name, width: tile.rect.width, height: tile.rect.height)
                    Scaler.blit(img, into: &canvas, x: tile.rect.x, y: tile.rect.y)
                    if let id = entry.camera { video[id]?.drawn = nil }
                } else {
                    canvas.fill(tile.rect, with: NameTileRenderer.background)
                }
            }
        }
        let t2 = Self.threadCPUNanos()
        let index = nextVideoIndex
        nextVideoIndex += 1
        let key = forceKeyframe || relayout && index > 0
        forceKeyframe = false
        let frames = (try? encoder.encode(canvas, pts: index, forceKeyframe: key)) ?? []
        let t3 = Self.threadCPUNanos()
        stats.decodeNanos += Int64(t1 - t0)
        stats.composeNanos += Int64(t2 - t1)
        stats.encodeNanos += Int64(t3 - t2)
        var out: [UInt8] = []
        for f in frames {
            let ms = f.pts * 1000 / Int64(options.fps)
            stats.outputVideoFrames += 1
            out += f.data.withUnsafeBytes { writer.add(.video, timestampMs: ms, keyframe: f.keyframe, data: $0) }
        }
        return out
    }

    /// Every camera and screen of `entries` with the size of its tile in `tiles` (0 x 0 without one).
    static func tileSizes(_ entries: [RosterEntry], _ tiles: [CompositeLayout.Tile]) -> [String: TileSize] {
        var sizes: [String: TileSize] = [:]
        for e in entries {
            if let camera = e.camera { sizes[camera] = TileSize(width: 0, height: 0) }
            if let screen = e.screen { sizes[screen] = TileSize(width: 0, height: 0) }
        }
        for tile in tiles {
            let source: String?
            switch tile.content {
            case .camera(let peer): source = entries.first { $0.peerID == peer }?.camera
            case .screen(let peer): source = entries.first { $0.peerID == peer }?.screen
            }
            if let source { sizes[source] = TileSize(width: tile.rect.width, height: tile.rect.height) }
        }
        return sizes
    }

    private func hasPicture(_ id: String, at t: Int64) -> Bool {
        guard let s = video[id], s.picture != nil else { return false }
        return t - s.pictureNanos <= options.staleNanos
    }

    /// Catching up: a source's queued frames before its latest keyframe at or before `limit` are
    /// dropped undecoded (their output frames are skipped, and nothing after the keyframe refers to them).
    private func skipToKeyframe(_ id: String, before limit: Int64) {
        guard var s = video[id],
              let k = s.queue.lastIndex(where: { $0.nanos <= limit && $0.frame.keyframe }), k > 0 else { return }
        s.queue.removeFirst(k)
        stats.videoFramesSkipped += k
        video[id] = s
    }

    private func decode(_ id: String, upTo t: Int64) {
        guard var s = video[id] else { return }
        var count = 0
        while count < s.queue.count, s.queue[count].nanos <= t { count += 1 }
        guard count > 0 else { return }
        if s.decoder == nil { s.decoder = try? VP8Decoder() }
        for (nanos, frame) in s.queue.prefix(count) {
            guard let decoder = s.decoder else { break }
            switch decoder.decode(frame.data) {
            case .picture(let p):
                s.picture = p
                s.pictureNanos = nanos
                s.drawn = nil
                stats.videoFramesDecoded += 1
                if stats.decodedWidths[id]?.last != p.width { stats.decodedWidths[id, default: []].append(p.width) }
            case .needsKeyframe:
                stats.videoFramesUndecodable += 1
                keyframesWanted.insert(id)
            }
        }
        s.queue.removeFirst(count)
        video[id] = s
    }

    /// Draws source `id`'s picture into `rect`, rescaling only when the picture or the rect changed.
    private func drawVideo(_ id: String, tile rect: Rect, force: Bool) {
        guard var s = video[id], let picture = s.picture else {
            canvas.fill(rect, with: .black)
            return
        }
        if s.drawn == rect, !force { return }  // unchanged: the canvas has it
        Scaler.draw(picture, into: &canvas, rect: rect)
        s.drawn = rect
        video[id] = s
    }

    /// Writes what is left up to `endNanos`, closes the file's last cluster and returns the bytes
    /// and in-place patches.
    func finish(endNanos: Int64) -> (append: [UInt8], patches: [(offset: Int, bytes: [UInt8])]) {
        var out = advance(toNanos: endNanos)
        for f in encoder.flush() {
            out += f.data.withUnsafeBytes { writer.add(.video, timestampMs: f.pts * 1000 / Int64(options.fps), keyframe: f.keyframe, data: $0) }
        }
        let (tail, patches) = writer.finish()
        return (out + tail, patches)
    }

    var fileSize: Int { writer.size }
    var durationMs: Int64 { writer.durationMs }
    var videoFramesWritten: Int { writer.videoFrames }
    var audioFramesWritten: Int { writer.audioFrames }
}
