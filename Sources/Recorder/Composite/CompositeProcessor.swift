import Foundation
import Logging
import SFU

/// The composite's processing half: a thread of its own below the media workers (``ProcessingThread``
/// under SCHED_IDLE, ``threadNiceIncrement`` nicer as the fallback) that every 20 ms takes what the room side queued, runs
/// the ``CompositeEngine`` up to `latency` behind the room's clock, and appends the bytes to the file
/// (``FileSink``, its own queue). All its state is touched on `thread` only, which is what makes
/// the `@unchecked Sendable` hold.
final class CompositeProcessor: @unchecked Sendable {
    struct Result: Sendable {
        var size = 0
        var durationMs: Int64 = 0
        var videoFrames = 0
        var audioFrames = 0
        var error: String?
        var stats = CompositeEngine.Stats()
    }

    /// How far behind the room's clock the output runs: the jitter buffers' wait (400 ms for video)
    /// plus the network's, so frames are in before their output time.
    static let latencyNanos: Int64 = 1_000_000_000
    static let tickNanos = 20_000_000
    /// How far the output may lag behind its horizon (`now - latencyNanos`) before video output
    /// frames are skipped to catch up: a starved thread (a busy machine) that comes back composes and
    /// encodes only the last of what it missed, instead of encoding every missed frame and falling
    /// further behind. Sources are still decoded (references stay whole) and audio is never skipped.
    static let maxOutputLagNanos: Int64 = 300_000_000
    /// How much nicer than the server the processing thread runs. Under SCHED_IDLE (the default)
    /// the kernel ignores it; it applies when SCHED_IDLE is refused (make bench, scenario
    /// b-composite, measures forwarding with a composite recording on the same core).
    static let threadNiceIncrement: Int32 = 10

    let id: String
    let sink: FileSink
    private let thread: ProcessingThread
    private let inbox: CompositeInbox
    private let engine: CompositeEngine
    private let logger: Logger
    private var finished = false
    private var outcome = Result()
    private var lastStatsLog: Int64 = 0
    private var skippedLogged = 0

    /// The room's monotonic clock (a test's fake one).
    private let clock: @Sendable () -> Int64

    init(id: String, options: CompositeEngine.Options, originNanos: Int64, path: String, inbox: CompositeInbox, logger: Logger,
         clock: @escaping @Sendable () -> Int64 = { MediaWorker.nowNanos }) throws {
        self.id = id
        self.clock = clock
        self.inbox = inbox
        self.logger = logger
        engine = try CompositeEngine(options: options, originNanos: originNanos)
        sink = FileSink(path: path)
        thread = ProcessingThread(name: "sfu-composite", niceIncrement: Self.threadNiceIncrement, schedIdle: true)
    }

    deinit { thread.stop() }

    func start() {
        thread.async { [self] in
            if thread.schedIdleApplied == false {
                logger.warning("composite recording thread not under SCHED_IDLE (refused): it competes with forwarding by its nice value",
                               metadata: ["recording": "\(id)"])
            }
            if thread.niceApplied == false {
                logger.warning("composite recording thread runs at the process's priority: nice refused", metadata: ["recording": "\(id)"])
            }
            sink.append(engine.start())
            thread.startTicking(everyNanos: Int64(Self.tickNanos)) { [weak self] in self?.tick() }
        }
    }

    private func ingest() {
        for event in inbox.take() {
            switch event {
            case .video(let source, let nanos, let frame): engine.video(source: source, nanos: nanos, frame: frame)
            case .audio(let peer, let nanos, let frame): engine.audio(peerID: peer, nanos: nanos, frame: frame)
            case .roster(let entries, let nanos): engine.roster(entries, atNanos: nanos)
            case .retire(let source, let peer, let nanos): engine.retire(source: source, peerID: peer, nanos: nanos)
            }
        }
    }

    private func tick() {
        guard !finished else { return }
        ingest()
        let now = clock()
        let horizon = now - Self.latencyNanos
        let skipped = engine.stats.outputVideoFramesSkipped
        sink.append(engine.advance(toNanos: horizon, skipVideoBefore: horizon - Self.maxOutputLagNanos))
        if engine.stats.outputVideoFramesSkipped > skipped, engine.stats.outputVideoFramesSkipped >= skippedLogged * 2 + 1 {
            skippedLogged = engine.stats.outputVideoFramesSkipped
            logger.warning("composite recording behind: skipping output video frames", metadata: [
                "recording": "\(id)", "skipped": "\(engine.stats.outputVideoFramesSkipped)"])
        }
        inbox.report(backlog: engine.backlog, keyframes: engine.takeKeyframeRequests(), tileSizes: engine.tileSizes)
        if now - lastStatsLog > 30_000_000_000 {
            lastStatsLog = now
            let s = engine.stats
            logger.debug("composite recording", metadata: [
                "recording": "\(id)", "out_video": "\(s.outputVideoFrames)", "out_audio": "\(s.outputAudioFrames)",
                "decoded": "\(s.videoFramesDecoded)", "undecodable": "\(s.videoFramesUndecodable)", "dropped": "\(inbox.droppedVideo)",
                "skipped_output": "\(s.outputVideoFramesSkipped)", "skipped_input": "\(s.videoFramesSkipped)",
                "decode_ms": "\(s.decodeNanos / 1_000_000)", "compose_ms": "\(s.composeNanos / 1_000_000)",
                "encode_ms": "\(s.encodeNanos / 1_000_000)", "mix_ms": "\(s.mixNanos / 1_000_000)",
            ])
        }
    }

    /// Writes everything up to `endNanos` and finishes the file (on the thread, after what is queued).
    func finish(endNanos: Int64) {
        thread.async { [self] in
            guard !finished else { return }
            finished = true
            thread.stopTicking()
            ingest()
            let (tail, patches) = engine.finish(endNanos: endNanos)
            sink.append(tail)
            for p in patches { sink.patch(offset: p.offset, p.bytes) }
            outcome = Result(size: engine.fileSize, durationMs: engine.durationMs, videoFrames: engine.videoFramesWritten,
                             audioFrames: engine.audioFramesWritten, error: nil, stats: engine.stats)
            let s = engine.stats
            // Per source the picture widths decoded, in order (the simulcast layers it went through).
            let widths = s.decodedWidths.map { "\($0.key):" + $0.value.map(String.init).joined(separator: "/") }.sorted().joined(separator: ",")
            logger.info("composite recording written", metadata: [
                "recording": "\(id)", "video_frames": "\(s.outputVideoFrames)", "audio_frames": "\(s.outputAudioFrames)",
                "decoded_widths": "\(widths)",
                "decoded": "\(s.videoFramesDecoded)", "undecodable": "\(s.videoFramesUndecodable)", "dropped": "\(inbox.droppedVideo)",
                "skipped_output": "\(s.outputVideoFramesSkipped)", "skipped_input": "\(s.videoFramesSkipped)",
                "decode_ms": "\(s.decodeNanos / 1_000_000)", "compose_ms": "\(s.composeNanos / 1_000_000)",
                "encode_ms": "\(s.encodeNanos / 1_000_000)", "mix_ms": "\(s.mixNanos / 1_000_000)",
            ])
        }
    }

    /// Holds the processing thread (a test's starved CPU): the ticks wait, the room side keeps
    /// queueing until its bounds refuse video.
    func suspendForTesting() { thread.suspend() }
    func resumeForTesting() { thread.resume() }

    /// Whether the processing thread runs under SCHED_IDLE, read on it.
    func threadIsSchedIdleForTesting() async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            thread.async { c.resume(returning: ProcessingThread.currentThreadIsSchedIdle()) }
        }
    }

    /// The processing thread's nice value, read on it (nil: not applied).
    func threadNiceForTesting() async -> Int32? {
        await withCheckedContinuation { (c: CheckedContinuation<Int32?, Never>) in
            thread.async { [self] in c.resume(returning: thread.niceApplied == true ? ProcessingThread.currentThreadNice() : nil) }
        }
    }

    /// The outcome, once ``finish(endNanos:)`` ran (the thread is serial: this waits for it).
    func result() async -> Result {
        await withCheckedContinuation { (c: CheckedContinuation<Result, Never>) in
            thread.async { [self] in c.resume(returning: outcome) }
        }
    }
}
