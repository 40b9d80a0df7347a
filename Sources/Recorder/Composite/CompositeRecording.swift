import Foundation
import Logging
import RTP
import SFU

/// A `composite` recording of one room: one WebM file with every participant's camera and screen
/// share composed into one canvas and every microphone mixed (docs/RECORDING.md).
///
/// Two halves. This object is a room observer and producer tap confined to the room's loop: it
/// assembles each track's frames (``FrameAssembler``), places them on the room's clock from each
/// publisher's sender reports (the participant's NTP minus its offset to our clock, fixed at its
/// first SR, so a participant's audio and video keep their sync and participants line up by
/// arrival), and hands them to a ``CompositeInbox``. The other half, ``CompositeProcessor``, runs on
/// its own dispatch queue: it decodes, mixes, composes, encodes and writes, `latency` behind the
/// room's clock so late frames are still in time. The room's loop never decodes or waits for it.
///
/// As a virtual subscriber it asks a publisher for a keyframe when a track's jitter buffer gave a
/// frame up or the decoder needs one, and drops a video track's frames until its next keyframe
/// when the processing side is behind.
package final class CompositeRecording: RoomObserver, ProducerTap {
    package struct Options: Sendable, Equatable {
        package var layout: CompositeLayout.Kind
        package var width: Int
        package var height: Int
        package var fps: Int
        package var videoBitrateBps: Int
        package init(layout: CompositeLayout.Kind = .grid, width: Int = 1280, height: Int = 720, fps: Int = 30, videoBitrateBps: Int = 1_500_000) {
            self.layout = layout
            self.width = width
            self.height = height
            self.fps = fps
            self.videoBitrateBps = videoBitrateBps
        }
    }

    final class Track {
        let producer: Producer
        let peerID: String
        var assembler: FrameAssembler
        var ssrc: UInt32?
        var mapping: ParticipantRecording.Mapping?
        /// The stream whose SR made `mapping` (simulcast layers have their own timestamp bases).
        var mappingSSRC: UInt32?
        /// Frames waiting for the track's mapping (its first SR, or 2 s).
        var held: [AssembledFrame] = []
        /// The processing side refused a frame: the next ones are useless until a keyframe.
        var dropUntilKeyframe = false
        init(producer: Producer, peerID: String) {
            self.producer = producer
            self.peerID = peerID
            assembler = FrameAssembler(codec: producer.kind == .video ? .vp8 : .opus)
        }
    }

    struct Participant {
        var peer: PeerInfo
        var camera: Producer?
        var screen: Producer?
        var microphone: Producer?
    }

    package let id: String
    package let fileID: String
    package let path: String
    package let fileName: String
    package let options: Options
    private let logger: Logger
    private var tracks: [ObjectIdentifier: Track] = [:]
    /// Publishers in order of first appearance (the grid's order).
    private var participants: [Participant] = []
    /// Per participant: its NTP clock minus ours, from its first sender report.
    private var offsets: [String: Int64] = [:]
    /// Per participant: added to its SRs' NTP times once its clock stepped (see ``place(_:_:nowNanos:)``).
    private var stepCorrections: [String: Int64] = [:]
    private let inbox: CompositeInbox
    let processor: CompositeProcessor
    package private(set) var isStopped = false
    private var droppedLogged = 0

    private let clock: @Sendable () -> Int64

    /// - Parameter clock: the room's monotonic clock (``MediaWorker/nowNanos``; a test's fake one).
    /// - Throws: when the encoders cannot be made (bad options).
    package init(id: String, directory: String, fileID: String, options: Options, nowNanos: Int64, logger: Logger,
                clock: @escaping @Sendable () -> Int64 = { MediaWorker.nowNanos }) throws {
        self.id = id
        self.clock = clock
        self.fileID = fileID
        self.options = options
        self.logger = logger
        fileName = "composite.webm"
        path = (directory as NSString).appendingPathComponent(fileName)
        inbox = CompositeInbox(maxVideoBacklog: max(30, options.fps * 3))
        var engineOptions = CompositeEngine.Options()
        engineOptions.width = options.width
        engineOptions.height = options.height
        engineOptions.fps = options.fps
        engineOptions.videoBitrateBps = options.videoBitrateBps
        engineOptions.layout = options.layout
        processor = try CompositeProcessor(id: id, options: engineOptions, originNanos: nowNanos, path: path, inbox: inbox, logger: logger, clock: clock)
    }

    /// Starts recording `room`: everything it publishes now and later; tells everyone.
    package func start(in room: Room, nowNanos: Int64) {
        room.addObserver(self)
        room.activeRecordingID = id
        // Everyone who may publish has a tile (a name tile until it sends video), in join order.
        for summary in room.summaries() where summary.peer.canPublish { join(summary.peer) }
        for (peer, producer) in room.publishedTracks() { attach(producer, of: peer, in: room) }
        pushRoster(nowNanos: nowNanos)
        processor.start()
        room.broadcast(.recordingStarted(id: id))
    }

    /// Stops taking media and tells everyone; the file is finished by the processing queue
    /// (``PendingComposite/finalize()`` waits for it).
    package func stop(in room: Room, nowNanos: Int64) -> PendingComposite {
        if !isStopped {
            isStopped = true
            room.removeObserver(self)
            if room.activeRecordingID == id { room.activeRecordingID = nil }
            room.broadcast(.recordingStopped(id: id))
            for t in tracks.values {
                t.producer.removeTap(self)
                place(t, t.assembler.flush(), nowNanos: nil)
            }
            tracks.removeAll()
            processor.finish(endNanos: nowNanos)
            if inbox.droppedVideo > 0 {
                logger.warning("composite recording dropped video frames (processing behind)", metadata: ["recording": "\(id)", "frames": "\(inbox.droppedVideo)"])
            }
        }
        return PendingComposite(processor: processor, fileID: fileID, path: path, fileName: fileName, options: options)
    }

    /// The participant's place in the roster (appended at its first appearance).
    @discardableResult
    private func join(_ peer: PeerInfo) -> Int {
        if let i = participants.firstIndex(where: { $0.peer.peerID == peer.peerID }) { return i }
        participants.append(Participant(peer: peer))
        return participants.count - 1
    }

    /// Takes the producer's media in. A participant without consent (``Room/mayRecord(_:)``) keeps
    /// its place with its name tile, and nothing of its media is decoded or mixed.
    private func attach(_ producer: Producer, of peer: PeerInfo, in room: Room) {
        guard !isStopped, tracks[ObjectIdentifier(producer)] == nil else { return }
        let i = join(peer)
        guard room.mayRecord(peer) else { return }
        switch (producer.kind, producer.source) {
        case (.audio, _):
            guard participants[i].microphone == nil else { return }
            participants[i].microphone = producer
        case (.video, .screen):
            guard participants[i].screen == nil else { return }
            participants[i].screen = producer
        case (.video, _):
            guard participants[i].camera == nil else { return }
            participants[i].camera = producer
        }
        // H.264 is not decoded: the participant shows its name tile.
        if producer.kind == .video, producer.codec != .vp8 { return }
        tracks[ObjectIdentifier(producer)] = Track(producer: producer, peerID: peer.peerID)
        producer.taps.append(self)
    }

    private func detach(_ producer: Producer, nowNanos: Int64) {
        producer.removeTap(self)
        if let t = tracks.removeValue(forKey: ObjectIdentifier(producer)) {
            place(t, t.assembler.flush(), nowNanos: nil)
            _ = inbox.push(.retire(source: producer.kind == .video ? producer.trackID : nil, peerID: nil, nanos: nowNanos))
        }
        for i in participants.indices {
            if participants[i].camera === producer { participants[i].camera = nil }
            if participants[i].screen === producer { participants[i].screen = nil }
            if participants[i].microphone === producer { participants[i].microphone = nil }
        }
    }

    private func pushRoster(nowNanos: Int64) {
        let entries = participants.map { p in
            CompositeEngine.RosterEntry(peerID: p.peer.peerID, name: p.peer.name.isEmpty ? p.peer.userID : p.peer.name,
                                        // A muted camera shows the name at once (its last picture would be stale).
                                        camera: p.camera.flatMap { $0.codec == .vp8 && !$0.muted ? $0.trackID : nil },
                                        screen: p.screen.flatMap { $0.codec == .vp8 ? $0.trackID : nil })
        }
        _ = inbox.push(.roster(entries, nanos: nowNanos))
    }

    // MARK: RoomObserver

    package func room(_ room: Room, didPublish producer: Producer, of peer: PeerInfo, nowNanos: Int64) {
        guard !isStopped else { return }
        attach(producer, of: peer, in: room)
        pushRoster(nowNanos: nowNanos)
    }

    package func room(_ room: Room, didJoin peer: PeerInfo, nowNanos: Int64) {
        guard !isStopped, peer.canPublish else { return }
        join(peer)
        pushRoster(nowNanos: nowNanos)
    }

    package func room(_ room: Room, didToggle producer: Producer, of peer: PeerInfo, nowNanos: Int64) {
        guard !isStopped, producer.kind == .video else { return }
        pushRoster(nowNanos: nowNanos)
    }

    package func room(_ room: Room, didChangeConsentOf peer: PeerInfo, nowNanos: Int64) {
        guard !isStopped else { return }
        let nowNanos = clock()   // (the composite's clock: a test's may not be the room's)
        if room.mayRecord(peer) {
            for (publisher, producer) in room.publishedTracks() where publisher.peerID == peer.peerID { attach(producer, of: peer, in: room) }
        } else if let i = participants.firstIndex(where: { $0.peer.peerID == peer.peerID }) {
            // Its tile becomes the name tile and its voice leaves the mix from now on.
            let p = participants[i]
            for producer in [p.camera, p.screen, p.microphone].compactMap({ $0 }) { detach(producer, nowNanos: nowNanos) }
            _ = inbox.push(.retire(source: nil, peerID: peer.peerID, nanos: nowNanos))
        }
        pushRoster(nowNanos: nowNanos)
    }

    package func room(_ room: Room, didUnpublish producer: Producer, of peer: PeerInfo) {
        let now = clock()
        detach(producer, nowNanos: now)
        pushRoster(nowNanos: now)
    }

    package func room(_ room: Room, didRemove peer: PeerInfo) {
        let now = clock()
        guard let i = participants.firstIndex(where: { $0.peer.peerID == peer.peerID }) else { return }
        let p = participants[i]
        for producer in [p.camera, p.screen, p.microphone].compactMap({ $0 }) { detach(producer, nowNanos: now) }
        participants.remove(at: i)
        _ = inbox.push(.retire(source: nil, peerID: peer.peerID, nanos: now))
        offsets[peer.peerID] = nil
        pushRoster(nowNanos: now)
    }

    // MARK: ProducerTap

    package func producer(_ producer: Producer, didReceive packet: UnsafeRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        guard !isStopped, header.payloadLength > 0, let t = tracks[ObjectIdentifier(producer)] else { return }
        let payload = UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])
        if producer.kind == .video, let last = t.ssrc, last != header.ssrc {
            // The producer moved its taps to another simulcast stream: other sequence numbers and
            // RTP clock; a fresh jitter buffer (it waits for that stream's keyframe) and mapping.
            place(t, t.assembler.flush(), nowNanos: nil)
            t.assembler = FrameAssembler(codec: .vp8)
            t.mapping = nil
            t.held.removeAll()
        }
        t.ssrc = header.ssrc
        let frames = t.assembler.push(sequenceNumber: header.sequenceNumber, timestamp: header.timestamp,
                                      marker: producer.kind == .video ? header.marker : false, payload: payload, nowNanos: nowNanos)
            + t.assembler.poll(nowNanos: nowNanos)
        if producer.kind == .video {
            if t.assembler.wantsKeyframe {
                t.assembler.keyframeRequested()
                producer.requestKeyframe(for: self, nowNanos: nowNanos)
            }
            // Once per frame, not per packet: the inbox is behind a lock.
            if !frames.isEmpty {
                if inbox.takeKeyframeRequest(producer.trackID) { producer.requestKeyframe(for: self, nowNanos: nowNanos) }
                // The simulcast layer that fits the tile (the producer switches at a keyframe).
                if producer.simulcast, let size = inbox.tileSize(producer.trackID) {
                    producer.setTapSize(self, width: size.width, height: size.height, nowNanos: nowNanos)
                }
            }
        }
        place(t, frames, nowNanos: nowNanos)
    }

    /// Maps frames to the room's clock and hands them over (or holds them until the mapping exists).
    private func place(_ t: Track, _ frames: [AssembledFrame], nowNanos: Int64?) {
        let producer = t.producer
        // The SR of the stream these frames came from (with simulcast the tap's stream changes).
        let stream = t.ssrc.flatMap { ssrc in producer.streams.first { $0.ssrc == ssrc } } ?? producer.stream(for: self)
        if let sr = stream.senderReport {
            let srNanos = ParticipantRecording.ntpNanos(sr.ntp)
            let offset = offsets[t.peerID] ?? (srNanos &- sr.arrivalNanos)
            offsets[t.peerID] = offset
            // A newer SR re-anchors the track (the publisher's own view of its clocks' relation).
            if t.mapping?.srNTP != sr.ntp {
                var nanos = srNanos &+ (stepCorrections[t.peerID] ?? 0) &- offset
                // An SR of the same stream that disagrees with the current mapping beyond the
                // tolerance is a clock step (NTP resync, sleep/wake, a forged SR), not drift: place
                // it by its arrival and shift the participant's later SRs by the same step, so its
                // frames stay where they happen instead of jumping with the publisher's clock.
                if let m = t.mapping, m.srNTP != nil, t.mappingSSRC == stream.ssrc, m.isClockStep(sr.rtp, at: nanos) {
                    stepCorrections[t.peerID] = (stepCorrections[t.peerID] ?? 0) &+ (sr.arrivalNanos &- nanos)
                    nanos = sr.arrivalNanos
                }
                t.mapping = ParticipantRecording.Mapping(rtp: sr.rtp, nanos: nanos, clockRate: producer.clockRate, srNTP: sr.ntp)
                t.mappingSSRC = stream.ssrc
            }
        }
        t.held += frames
        if t.mapping == nil, let first = t.held.first {
            let waited = nowNanos.map { $0 - first.arrivalNanos >= ParticipantRecording.mappingWaitNanos } ?? true
            guard waited else { return }
            t.mapping = ParticipantRecording.Mapping(rtp: first.rtpTimestamp, nanos: first.arrivalNanos, clockRate: producer.clockRate, srNTP: nil)
        }
        guard let m = t.mapping, !t.held.isEmpty else { return }
        for f in t.held {
            let nanos = m.nanos(f.rtpTimestamp)
            if producer.kind == .audio {
                _ = inbox.push(.audio(peerID: t.peerID, nanos: nanos, frame: f))
                continue
            }
            if t.dropUntilKeyframe {
                let room = inbox.hasRoom(producer.trackID)
                guard f.keyframe, room else {
                    inbox.countDropped()
                    // The processing side has room again but the keyframe asked for at the refusal
                    // came (and went) while it was full: ask again (the producer paces requests to one
                    // a second per stream). Publishers send keyframes only when asked, so without this
                    // the composite would show the name tile for the rest of the recording.
                    if room, let now = nowNanos { producer.requestKeyframe(for: self, nowNanos: now) }
                    continue
                }
                t.dropUntilKeyframe = false
            }
            if !inbox.push(.video(source: producer.trackID, nanos: nanos, frame: f)) {
                t.dropUntilKeyframe = true
                if let now = nowNanos { producer.requestKeyframe(for: self, nowNanos: now) }
                if inbox.droppedVideo >= droppedLogged * 2 + 1 {
                    droppedLogged = inbox.droppedVideo
                    logger.warning("composite recording behind: dropping video", metadata: ["recording": "\(id)", "dropped": "\(inbox.droppedVideo)"])
                }
            }
        }
        t.held.removeAll(keepingCapacity: true)
    }
}

/// A stopped composite whose file the processing queue may still be finishing.
package struct PendingComposite: Sendable {
    let processor: CompositeProcessor
    package let fileID: String
    package let path: String
    package let fileName: String
    package let options: CompositeRecording.Options

    /// Waits until the processing queue has written everything and the file is on disk.
    /// - Returns: the file, and an error if writing failed.
    package func finalize() async -> (RecordedFile, String?) {
        let result = await processor.result()
        let error = await processor.sink.close()
        let file = RecordedFile(id: fileID, peerID: "", userID: "composite", fileName: fileName, path: path, source: "composite", format: "webm",
                                videoCodec: result.videoFrames > 0 ? "vp8" : nil, audioCodec: result.audioFrames > 0 ? "opus" : nil,
                                trackKinds: (result.videoFrames > 0 ? ["video"] : []) + (result.audioFrames > 0 ? ["audio"] : []),
                                width: options.width, height: options.height, sizeBytes: result.size, durationMs: result.durationMs,
                                videoFrames: result.videoFrames, audioFrames: result.audioFrames)
        return (file, error ?? result.error)
    }
}
