import Foundation
import RTP
import SFU

/// What a finished participant file is, for the metadata.
package struct RecordedFile: Sendable, Equatable {
    package var id: String
    package var peerID: String
    package var userID: String
    package var fileName: String
    package var path: String
    /// What the file shows: "camera" (with the microphone) or "screen" (a screen share, video only).
    package var source: String
    /// "webm", or "mkv" for H.264 video (Matroska).
    package var format: String
    package var videoCodec: String?
    package var audioCodec: String?
    package var trackKinds: [String]
    package var width: Int?
    package var height: Int?
    package var sizeBytes: Int
    package var durationMs: Int64
    package var videoFrames: Int
    package var audioFrames: Int
}

/// One participant's file of one source: its camera and microphone, or its screen share (video
/// only). Taps those producers, assembles frames
/// (jitter buffer per track), places them on one timeline from the publisher's RTCP sender reports
/// (NTP), interleaves them and hands clusters to the file sink. Confined to the room's loop.
final class ParticipantRecording: ProducerTap {
    let peer: PeerInfo
    /// `.camera` (camera and microphone) or `.screen`.
    let source: TrackSource
    let fileID: String
    let directory: String
    private(set) var path: String
    private(set) var fileName: String
    /// Opened at the first write: a participant that never sends leaves no empty file (nor an fd).
    private var sink: FileSink?
    private var writer: WebMWriter?
    private var video: (producer: Producer, assembler: FrameAssembler)?
    /// The video codec of the file: VP8 in WebM, H.264 in Matroska (fixed when the file starts).
    private var videoCodec: FrameAssembler.Codec = .vp8
    private var audio: (producer: Producer, assembler: FrameAssembler)?
    /// Per track: RTP time -> timeline nanoseconds (publisher NTP, or our clock).
    private var videoMapping: Mapping?
    /// The SSRC of the video stream recorded (a simulcast producer can move the recorder to another).
    private var videoSSRC: UInt32?
    private var audioMapping: Mapping?
    /// The file's time base: `.sr` places tracks by their sender reports; `.arrival` by our clock.
    private var mode: Mode?
    /// Publisher NTP minus our clock, from the first SR seen (to place an SR-less track in `.sr` mode).
    private var clockOffsetNanos: Int64?
    /// Added to every SR's NTP time after the publisher's clock stepped (NTP resync, sleep/wake, a
    /// forged SR the filter had to accept after 3 agreeing reports): keeps the file's timeline on
    /// the time base it started with instead of jumping with the step.
    private var stepCorrectionNanos: Int64 = 0
    /// An SR that disagrees with the current mapping by more than this is a clock step, not drift
    /// (drift between two SRs a few seconds apart is microseconds).
    static let clockStepToleranceNanos: Int64 = 100_000_000
    private var originNanos: Int64?
    /// Frames waiting for their track's mapping, and mapped frames waiting to be interleaved.
    private var unmapped: [(WebMWriter.Track, AssembledFrame)] = []
    private var pending: [(nanos: Int64, track: WebMWriter.Track, frame: AssembledFrame)] = []
    private var latestNanos: Int64 = .min
    private var firstFrameNanos: Int64?
    private(set) var size: (width: Int, height: Int)?
    private(set) var finished = false
    static let holdMs: Int64 = 400
    static let mappingWaitNanos: Int64 = 2_000_000_000

    enum Mode { case sr, arrival }
    struct Mapping {
        var rtp: UInt32
        var nanos: Int64
        var clockRate: Int
        /// The SR it came from (nil: arrival-based).
        var srNTP: UInt64?
        func nanos(_ ts: UInt32) -> Int64 { nanos + Int64(Int32(bitPattern: ts &- rtp)) * 1_000_000_000 / Int64(clockRate) }
        /// Whether an SR that puts `ts` at `srNanos` disagrees with this mapping by more than
        /// ``ParticipantRecording/clockStepToleranceNanos``: a clock step (NTP resync, sleep/wake, a
        /// forged SR), not drift.
        func isClockStep(_ ts: UInt32, at srNanos: Int64) -> Bool {
            let disagreement = srNanos.subtractingReportingOverflow(nanos(ts))
            return disagreement.overflow || disagreement.partialValue.magnitude > UInt64(ParticipantRecording.clockStepToleranceNanos)
        }
    }

    /// `part`: the how-manyth file of this participant and source in the recording (a second one
    /// after a withdrawn and renewed consent).
    init(peer: PeerInfo, source: TrackSource, directory: String, fileID: String, part: Int = 1) {
        self.peer = peer
        self.source = source == .screen ? .screen : .camera
        self.fileID = fileID
        self.directory = directory
        self.part = part
        fileName = Self.fileName(peer: peer, source: self.source, format: "webm", part: part)
        path = (directory as NSString).appendingPathComponent(fileName)
    }
    private let part: Int

    /// `<user_id>-<peer_id>.webm` for the camera, `<user_id>-<peer_id>-screen.webm` for a screen
    /// share; `-2`, `-3`... before the extension for a participant's later files of the same source.
    static func fileName(peer: PeerInfo, source: TrackSource, format: String, part: Int = 1) -> String {
        let safeUser = String(peer.userID.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) || $0 == "-" || $0 == "_" ? Character($0) : "_" }.prefix(64))
        return "\(safeUser)-\(peer.peerID)\(source == .screen ? "-screen" : "")\(part > 1 ? "-\(part)" : "").\(format)"
    }

    /// The file a producer of `source` is recorded in: the microphone goes with the camera.
    static func fileSource(of producer: Producer) -> TrackSource { producer.source == .screen ? .screen : .camera }

    /// Records `producer` if it belongs to this file's source (a second one of a kind is ignored).
    func attach(_ producer: Producer) {
        guard !finished, Self.fileSource(of: producer) == source else { return }
        switch producer.kind {
        case .video where video == nil:
            let codec = FrameAssembler.Codec(producer.codec)
            guard codec != .opus else { return }
            // A file already started holds one video codec (its header says which).
            if let writer, writer.configuration.video != nil, (writer.configuration.videoCodec == .h264) != (codec == .h264) { return }
            videoCodec = codec
            video = (producer, FrameAssembler(codec: codec))
            producer.taps.append(self)
        case .audio where audio == nil && source == .camera:
            audio = (producer, FrameAssembler(codec: .opus))
            producer.taps.append(self)
        default:
            return
        }
    }

    func detach(_ producer: Producer) {
        producer.taps.removeAll { $0 === self }
        if video?.producer === producer {
            drain(.video, video?.assembler.flush() ?? [], now: nil)
            video = nil
            // Another producer (a new screen share, a camera turned on again) has its own RTP clock.
            videoMapping = nil
            videoSSRC = nil
        }
        if audio?.producer === producer { drain(.audio, audio?.assembler.flush() ?? [], now: nil); audio = nil }
    }

    func producer(_ producer: Producer, didReceive packet: UnsafeRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        guard !finished, header.payloadLength > 0 else { return }
        let payload = UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])
        if video?.producer === producer, var v = video {
            if let last = videoSSRC, last != header.ssrc { switchVideoStream(&v, producer: producer, header: header, nowNanos: nowNanos) }
            videoSSRC = header.ssrc
            let frames = v.assembler.push(sequenceNumber: header.sequenceNumber, timestamp: header.timestamp, marker: header.marker,
                                          payload: payload, nowNanos: nowNanos) + v.assembler.poll(nowNanos: nowNanos)
            if v.assembler.wantsKeyframe {
                v.assembler.keyframeRequested()
                producer.requestKeyframe(nowNanos: nowNanos)
            }
            video = v
            drain(.video, frames, now: nowNanos)
        } else if audio?.producer === producer, var a = audio {
            let frames = a.assembler.push(sequenceNumber: header.sequenceNumber, timestamp: header.timestamp, marker: false,
                                          payload: payload, nowNanos: nowNanos) + a.assembler.poll(nowNanos: nowNanos)
            audio = a
            drain(.audio, frames, now: nowNanos)
        }
    }

    /// The producer moved the recorder to another of its simulcast streams (a layer stopped, or a
    /// higher one sends again): other sequence numbers and RTP timestamps. The new stream gets a
    /// jitter buffer of its own (which waits for its keyframe) and a mapping from its sender report,
    /// or from the arrival time until one comes; the old stream's frames go out on the old mapping,
    /// up to where the new stream starts (the same instant is not recorded twice).
    private func switchVideoStream(_ v: inout (producer: Producer, assembler: FrameAssembler), producer: Producer, header: RTPHeader, nowNanos: Int64) {
        let old = v.assembler.flush()
        v.assembler = FrameAssembler(codec: videoCodec)
        // Frames of the old stream that never got a mapping cannot be placed any more.
        unmapped.removeAll { $0.0 == .video }
        guard let previous = videoMapping else { return }
        let next: Mapping
        if mode == .sr, let sr = producer.senderReport {
            next = Mapping(rtp: sr.rtp, nanos: srNanos(sr.ntp), clockRate: producer.clockRate, srNTP: sr.ntp)
        } else {
            let offset = mode == .sr ? (clockOffsetNanos ?? 0) : 0
            next = Mapping(rtp: header.timestamp, nanos: nowNanos + offset, clockRate: producer.clockRate, srNTP: nil)
        }
        videoMapping = next
        let start = next.nanos(header.timestamp)
        pending.removeAll { $0.track == .video && $0.nanos >= start }
        for f in old {
            let nanos = previous.nanos(f.rtpTimestamp)
            guard nanos < start else { continue }
            pending.append((nanos, .video, f))
            latestNanos = max(latestNanos, nanos)
        }
    }

    private func drain(_ track: WebMWriter.Track, _ frames: [AssembledFrame], now: Int64?) {
        for f in frames {
            if firstFrameNanos == nil { firstFrameNanos = f.arrivalNanos }
            if track == .video, size == nil, let s = f.size { size = s }
            unmapped.append((track, f))
        }
        mapFrames(now: now)
        release(all: now == nil)
    }

    /// Gives each track its RTP -> time mapping once its first SR is there (or after 2 s without).
    private func mapFrames(now: Int64?) {
        // A newer SR re-anchors its track: the publisher's own view of how its clocks relate (drift
        // between its audio and video clocks, as a browser's receiver would follow it).
        if mode == .sr {
            for track in [WebMWriter.Track.video, .audio] {
                guard let m = mapping(track), let producer = track == .video ? video?.producer : audio?.producer,
                      let sr = producer.senderReport, sr.ntp != m.srNTP else { continue }
                var nanos = srNanos(sr.ntp)
                if m.isClockStep(sr.rtp, at: nanos), let offset = clockOffsetNanos {
                    // The publisher's clock stepped: place this SR by its arrival on the time base
                    // of the first SR, and shift every later SR by the same step.
                    let (anchored, overflow) = sr.arrivalNanos.addingReportingOverflow(offset)
                    guard !overflow else { continue }
                    stepCorrectionNanos = stepCorrectionNanos &+ (anchored &- nanos)
                    nanos = anchored
                }
                setMapping(track, Mapping(rtp: sr.rtp, nanos: nanos, clockRate: producer.clockRate, srNTP: sr.ntp))
            }
        }
        for track in [WebMWriter.Track.video, .audio] where mapping(track) == nil {
            guard let first = unmapped.first(where: { $0.0 == track })?.1,
                  let producer = track == .video ? video?.producer : audio?.producer else { continue }
            let waited = now.map { $0 - first.arrivalNanos >= Self.mappingWaitNanos } ?? true
            if let sr = producer.senderReport, mode != .arrival {
                let nanos = srNanos(sr.ntp)
                if clockOffsetNanos == nil { clockOffsetNanos = nanos &- sr.arrivalNanos }
                mode = .sr
                setMapping(track, Mapping(rtp: sr.rtp, nanos: nanos, clockRate: producer.clockRate, srNTP: sr.ntp))
            } else if waited {
                // No SR in time: our arrival clock (shifted onto the publisher's NTP when another track set it).
                if mode == nil { mode = .arrival }
                let offset = mode == .sr ? (clockOffsetNanos ?? 0) : 0
                setMapping(track, Mapping(rtp: first.rtpTimestamp, nanos: first.arrivalNanos + offset, clockRate: producer.clockRate, srNTP: nil))
            }
        }
        var still: [(WebMWriter.Track, AssembledFrame)] = []
        for (track, f) in unmapped {
            guard let m = mapping(track) else {
                still.append((track, f))
                continue
            }
            let nanos = m.nanos(f.rtpTimestamp)
            pending.append((nanos, track, f))
            latestNanos = max(latestNanos, nanos)
        }
        unmapped = still
    }

    private func mapping(_ track: WebMWriter.Track) -> Mapping? { track == .video ? videoMapping : audioMapping }
    private func setMapping(_ track: WebMWriter.Track, _ m: Mapping) { if track == .video { videoMapping = m } else { audioMapping = m } }

    /// An SR's NTP time on the file's time base (after any clock step seen).
    private func srNanos(_ ntp: UInt64) -> Int64 { Self.ntpNanos(ntp) &+ stepCorrectionNanos }

    static func ntpNanos(_ ntp: UInt64) -> Int64 {
        // (Shifts bind tighter than * in Swift: the parentheses matter.)
        Int64(ntp >> 32) * 1_000_000_000 + Int64(((ntp & 0xFFFF_FFFF) * 1_000_000_000) >> 32)
    }

    /// Writes the interleaved frames older than the hold window (all of them at the end).
    private func release(all: Bool) {
        guard !pending.isEmpty else { return }
        // A track still waiting for its mapping may place frames before what is pending: hold everything.
        if !all && !unmapped.isEmpty { return }
        pending.sort { $0.nanos < $1.nanos }
        let limit = all ? Int64.max : latestNanos - Self.holdMs * 1_000_000
        var index = 0
        while index < pending.count, pending[index].nanos <= limit {
            let item = pending[index]
            // Time 0 of the file: the earliest frame of any track, fixed at the first write (after the hold window).
            if originNanos == nil { originNanos = item.nanos }
            let origin = originNanos ?? item.nanos
            write((max(0, (item.nanos - origin) / 1_000_000), item.track, item.frame))
            index += 1
        }
        pending.removeFirst(index)
    }

    private func write(_ item: (ms: Int64, track: WebMWriter.Track, frame: AssembledFrame)) {
        if writer == nil {
            let dims = size ?? (640, 480)
            // A participant that may publish gets both tracks declared: a camera or microphone turned
            // on later still has a track to go to (an empty track decodes fine).
            let withVideo = video != nil || videoMapping != nil || peer.canPublish
            let withAudio = source == .camera && (audio != nil || audioMapping != nil || peer.canPublish)
            let w = WebMWriter(configuration: .init(video: withVideo ? (dims.width, dims.height) : nil, audio: withAudio ? (2, 48000) : nil,
                                                    videoCodec: videoCodec == .h264 ? .h264 : .vp8))
            if w.configuration.isMatroska {
                fileName = Self.fileName(peer: peer, source: source, format: "mkv", part: part)
                path = (directory as NSString).appendingPathComponent(fileName)
            }
            let s = FileSink(path: path)
            s.append(w.start())
            writer = w
            sink = s
        }
        guard let writer, let sink else { return }
        if item.track == .video, item.frame.keyframe, writer.configuration.isMatroska, !writer.hasCodecPrivate,
           let units = H264.nalUnits(avcFrame: item.frame.data),
           let sps = units.first(where: { $0.first.map { $0 & 0x1f } == H264.nalSPS }),
           let pps = units.first(where: { $0.first.map { $0 & 0x1f } == H264.nalPPS }),
           let avcC = H264.avcDecoderConfiguration(sps: sps, pps: pps), let patch = writer.setCodecPrivate(avcC) {
            sink.patch(offset: patch.offset, patch.bytes)
        }
        let bytes = item.frame.data.withUnsafeBytes { writer.add(item.track, timestampMs: item.ms, keyframe: item.frame.keyframe, data: $0) }
        sink.append(bytes)
    }

    /// Stops recording (on the room's loop): flushes the jitter buffers and the interleaver and
    /// queues the file's last bytes; ``PendingFile/finalize()`` waits for the disk.
    func stop() -> PendingFile {
        if !finished {
            finished = true
            if let v = video { v.producer.taps.removeAll { $0 === self } }
            if let a = audio { a.producer.taps.removeAll { $0 === self } }
            if var v = video { drainFlushed(.video, &v.assembler) }
            if var a = audio { drainFlushed(.audio, &a.assembler) }
            mapFrames(now: nil)
            release(all: true)
            if let writer, let sink {
                let (tail, patches) = writer.finish()
                sink.append(tail)
                for p in patches { sink.patch(offset: p.offset, p.bytes) }
            }
        }
        let w = writer
        var kinds: [String] = []
        if (w?.videoFrames ?? 0) > 0 { kinds.append("video") }
        if (w?.audioFrames ?? 0) > 0 { kinds.append("audio") }
        let hasVideo = (w?.videoFrames ?? 0) > 0
        let file = RecordedFile(id: fileID, peerID: peer.peerID, userID: peer.userID, fileName: fileName, path: path,
                                source: source.rawValue, format: w?.configuration.isMatroska == true ? "mkv" : "webm",
                                videoCodec: hasVideo ? (w?.configuration.videoCodec == .h264 ? "h264" : "vp8") : nil,
                                audioCodec: (w?.audioFrames ?? 0) > 0 ? "opus" : nil, trackKinds: kinds,
                                width: hasVideo ? (size?.width ?? 640) : nil, height: hasVideo ? (size?.height ?? 480) : nil,
                                sizeBytes: w?.size ?? 0, durationMs: w?.durationMs ?? 0, videoFrames: w?.videoFrames ?? 0, audioFrames: w?.audioFrames ?? 0)
        return PendingFile(sink: sink, file: file)
    }

    private func drainFlushed(_ track: WebMWriter.Track, _ assembler: inout FrameAssembler) {
        for f in assembler.flush() {
            if track == .video, size == nil, let s = f.size { size = s }
            unmapped.append((track, f))
        }
    }
}

/// A stopped participant file whose last writes may still be queued.
package struct PendingFile: Sendable {
    /// nil: nothing was written (no file was made).
    let sink: FileSink?
    package let file: RecordedFile

    /// Starts closing the file (its last writes go first) without waiting.
    func closeSoon() { sink?.closeSoon() }

    /// Waits until the file is on disk. - Returns: the file, and a write error if there was one.
    package func finalize() async -> (RecordedFile, String?) {
        let error = await sink?.close()
        return (file, error)
    }
}
