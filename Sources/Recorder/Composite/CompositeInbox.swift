import Foundation

/// What the room side hands the composite's processing queue.
enum CompositeEvent: Sendable {
    case video(source: String, nanos: Int64, frame: AssembledFrame)
    case audio(peerID: String, nanos: Int64, frame: AssembledFrame)
    case roster([CompositeEngine.RosterEntry], nanos: Int64)
    case retire(source: String?, peerID: String?, nanos: Int64)
}

/// The bounded hand-off between a room's loop (producer) and the composite's processing queue
/// (consumer): one lock around an array, taken in batches (the room side holds it for an append,
/// never while the processing side decodes or encodes). Video beyond `maxVideoBacklog` frames per
/// source (in here plus queued for decoding) is refused, so a composite that falls behind drops
/// video, never audio, and never holds the room's loop. The processing side leaves keyframe
/// requests here for the room side to send.
final class CompositeInbox: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [CompositeEvent] = []
    private var inboxVideo: [String: Int] = [:]
    private var engineBacklog: [String: Int] = [:]
    private var keyframes: Set<String> = []
    private var tileSizes: [String: CompositeEngine.TileSize] = [:]
    private(set) var droppedVideo = 0
    let maxVideoBacklog: Int

    init(maxVideoBacklog: Int) {
        self.maxVideoBacklog = maxVideoBacklog
    }

    /// Queues an event. - Returns: false when a video frame was refused (backlog full).
    func push(_ event: CompositeEvent) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if case .video(let source, _, _) = event {
            let backlog = inboxVideo[source, default: 0] + engineBacklog[source, default: 0]
            if backlog >= maxVideoBacklog {
                droppedVideo += 1
                return false
            }
            inboxVideo[source, default: 0] += 1
        }
        events.append(event)
        return true
    }

    /// A video frame the room side dropped itself (waiting for a keyframe after a refusal).
    func countDropped() {
        lock.lock()
        droppedVideo += 1
        lock.unlock()
    }

    /// Whether a video frame of `source` would be accepted now.
    func hasRoom(_ source: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return inboxVideo[source, default: 0] + engineBacklog[source, default: 0] < maxVideoBacklog
    }

    func take() -> [CompositeEvent] {
        lock.lock()
        defer { lock.unlock() }
        let out = events
        events.removeAll(keepingCapacity: true)
        inboxVideo.removeAll(keepingCapacity: true)
        return out
    }

    /// The processing side's own queue lengths, the decoders that want a keyframe and the size each
    /// source is drawn at.
    func report(backlog: [String: Int], keyframes wanted: Set<String>, tileSizes sizes: [String: CompositeEngine.TileSize] = [:]) {
        lock.lock()
        defer { lock.unlock() }
        engineBacklog = backlog
        keyframes.formUnion(wanted)
        tileSizes = sizes
    }

    /// The size `source` is drawn at in the current layout (nil before the first layout with it).
    func tileSize(_ source: String) -> CompositeEngine.TileSize? {
        lock.lock()
        defer { lock.unlock() }
        return tileSizes[source]
    }

    /// Whether the processing side asked for a keyframe of `source` (cleared by the call).
    func takeKeyframeRequest(_ source: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return keyframes.remove(source) != nil
    }
}
