#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Control
import DTLS
import RTP
import SFU
import WebRTCClient

/// The scenario and where to run it.
struct Scenario {
    enum Target {
        /// The SFU: control API base URL and API key.
        case sfu(url: PlainURL, apiKey: String)
        /// An `sfu-load floor` process: its control address.
        case floor(TransportAddress)
    }
    var target: Target
    var rooms = 1
    var publishers = 1
    var subscribers = 1
    var durationSeconds = 10.0
    var warmupSeconds = 2.0
    var setupTimeoutSeconds = 30.0
    var drainSeconds = 0.5
    var bitrate = 1_500_000
    var fps = 30
    var keyframeIntervalSeconds = 3.0
    var audio = true
    var video = true
    var simulcast = false
    var serverPID: Int32?
    var verbose = false
    /// What subscribers tell the server about their downlink: transport-cc feedback (browsers), or a
    /// fixed REMB of this many bits/s without transport-cc (the server's estimator is then out of the loop).
    var rembBitrate: UInt64?
    /// Never sleep in epoll_wait: the server's sends then never have to wake the load tool (on
    /// loopback the sender pays for the receiver's wake-up; over a NIC it does not).
    var busyPoll = false
    /// Media over ICE-TCP instead of UDP.
    var iceTCP = false
    /// Real VP8 encoded with libvpx at start-up instead of a frame tag and filler (``VP8Clip``).
    var encodedVideo = false

    var targetName: String {
        if case .floor = target { return "floor" }
        return "sfu"
    }
}

/// Drives a scenario on one thread: an epoll loop over the participants' UDP sockets and WebSockets,
/// the publishers' frame timers and a 10 ms tick for ICE consent, DTLS timers and RTCP.
final class LoadRunner {
    /// The VP8 clips the publishers loop (`--encoded-video`), one per size and bitrate.
    private(set) var clips: [VP8Clip] = []
    enum Phase: Equatable {
        case connecting(deadline: Int64)
        case warmup(until: Int64)
        case measuring(until: Int64)
        case draining(until: Int64)
        case done
    }

    enum Owner {
        case media(PeerConnection)
        case signaling(Participant)
    }

    let scenario: Scenario
    let tally = Tally()
    let receiveContext = ReceiveContext()
    let poller: Poller
    let context: DTLSContext
    let receiveBatch = DatagramReceiveBatch(capacity: 32, slotSize: 2048, timestamps: true)
    var participants: [Participant] = []
    var owners: [Int32: Owner] = [:]
    var connections: [PeerConnection] = []
    var phase: Phase = .done
    var roomIDs: [String] = []
    var control: ControlClient?
    var floorControl: FloorControlClient?
    var log: [String] = []
    var setupIncomplete: [String] = []

    // Window measurements.
    var windowStartNanos: Int64 = 0
    var windowEndNanos: Int64 = 0
    var setupSeconds = 0.0
    var serverCPU: (start: Double?, end: Double?) = (nil, nil)
    /// The server's resident memory before the first participant joined and when the window closed.
    var serverRSS: (before: Int?, end: Int?) = (nil, nil)
    var loadCPU: (start: Double?, end: Double?) = (nil, nil)
    var sentAtOpen: [UInt32: Int] = [:]
    var sentBytes: [UInt32: (start: Int, end: Int)] = [:]

    init(scenario: Scenario) throws {
        self.scenario = scenario
        poller = try Poller()
        context = try DTLSContext(certificate: DTLSCertificate(commonName: "sfu-load"))
    }

    var publishers: [LoadPublisher] { participants.compactMap(\.publisher) }

    func note(_ text: String) {
        log.append(text)
        if scenario.verbose { printError(text) }
    }

    // MARK: Setup

    /// Makes the participants and their streams; publishers first in each room.
    func makeParticipants() throws {
        var index = 0
        var clips: [VP8Clip.Key: VP8Clip] = [:]
        /// With `--encoded-video`: the stream's clip (one per size and bitrate, shared), and its send log.
        func encode(_ s: OutgoingStream) throws {
            guard scenario.encodedVideo, s.kind == .video else { return }
            let key = VP8Clip.Key(width: s.width, height: s.height, bitrate: s.bitrate, fps: s.fps, frames: s.gop, temporalLayers: s.temporalLayers)
            if clips[key] == nil {
                let clip = try VP8Clip(key)
                clips[key] = clip
                self.clips.append(clip)
                note("encoded \(key.frames) VP8 frames of \(key.width)x\(key.height): \(clip.averageBitrate / 1000) kbit/s for \(key.bitrate / 1000) asked, "
                     + "keyframe \(clip.frames.first?.count ?? 0) bytes")
            }
            s.clip = clips[key]
            let times = SendTimes()
            s.sendTimes = times
            tally.attach(times, to: s.id)
        }
        for r in 0..<scenario.rooms {
            for p in 0..<(scenario.publishers + scenario.subscribers) {
                let publishes = p < scenario.publishers
                var streams: [OutgoingStream] = []
                if publishes {
                    if scenario.audio {
                        let id = tally.addStream(room: r, publisher: index, kind: .audio, rid: nil)
                        streams.append(OutgoingStream(id: id, kind: .audio, ssrc: .random(in: 1...UInt32.max), rtxSSRC: nil, mid: "0", rid: nil,
                                                      bitrate: 0, fps: 50, keyframeIntervalSeconds: 1, width: 0, height: 0, temporalLayers: 1))
                    }
                    if scenario.video {
                        let mid = scenario.audio ? "1" : "0"
                        if scenario.simulcast {
                            // Chromium's three layers, lowest first; the top one at the given bitrate, the
                            // others in libwebrtc's proportions (200 k / 700 k / 2.5 M at 720p, its maximums).
                            for (rid, share, w, h) in [("q", 0.08, 320, 180), ("h", 0.28, 640, 360), ("f", 1.0, 1280, 720)] {
                                let id = tally.addStream(room: r, publisher: index, kind: .video, rid: rid)
                                streams.append(OutgoingStream(id: id, kind: .video, ssrc: .random(in: 1...UInt32.max), rtxSSRC: nil, mid: mid, rid: rid,
                                                              bitrate: Int(Double(scenario.bitrate) * share), fps: scenario.fps,
                                                              keyframeIntervalSeconds: scenario.keyframeIntervalSeconds, width: w, height: h, temporalLayers: 3))
                            }
                        } else {
                            let id = tally.addStream(room: r, publisher: index, kind: .video, rid: nil)
                            streams.append(OutgoingStream(id: id, kind: .video, ssrc: .random(in: 1...UInt32.max), rtxSSRC: .random(in: 1...UInt32.max),
                                                          mid: mid, rid: nil, bitrate: scenario.bitrate, fps: scenario.fps,
                                                          keyframeIntervalSeconds: scenario.keyframeIntervalSeconds, width: 1280, height: 720, temporalLayers: 1))
                        }
                    }
                }
                for s in streams { try encode(s) }
                let name = publishes ? "r\(r)-pub\(p)" : "r\(r)-sub\(p - scenario.publishers)"
                participants.append(Participant(room: r, index: index, userID: name, publishes: publishes, streams: streams))
                index += 1
            }
        }
    }

    /// Participants of `p`'s room that publish, other than `p`.
    func otherPublishers(of p: Participant) -> [Participant] {
        participants.filter { $0.room == p.room && $0.publishes && $0 !== p }
    }

    func setup() throws {
        try makeParticipants()
        switch scenario.target {
        case .sfu(let url, let apiKey):
            let client = ControlClient(base: url, apiKey: apiKey)
            control = client
            for r in 0..<scenario.rooms {
                // The control API takes 1...100 participants per room.
                roomIDs.append(try client.createRoom(name: "load-\(r)", maxParticipants: min(100, scenario.publishers + scenario.subscribers)))
            }
            for p in participants {
                let signaling = try client.signalingURL(room: roomIDs[p.room], userID: p.userID, role: p.publishes ? .patient : .observer)
                let socket = try SignalingSocket(url: signaling)
                socket.onMessage = { [unowned self, unowned p] message in self.signal(message, for: p) }
                p.socket = socket
                owners[socket.fd] = .signaling(p)
                try poller.add(socket.fd, token: Int(socket.fd), writable: false)
            }
        case .floor(let address):
            let client = try FloorControlClient(address: address)
            floorControl = client
            for p in participants {
                if p.publishes {
                    let server = try client.connect(room: "r\(p.room)", peer: p.userID, role: "publisher", ice: p.publisherICE,
                                                    fingerprint: context.certificate.sha256Fingerprint)
                    try makePublisher(p, server: server)
                }
                if !otherPublishers(of: p).isEmpty {
                    let ice = ICELiteAgent.Credentials.random()
                    let server = try client.connect(room: "r\(p.room)", peer: p.userID, role: "subscriber", ice: ice,
                                                    fingerprint: context.certificate.sha256Fingerprint)
                    try makeSubscriber(p, server: server, local: ice)
                }
            }
        }
    }

    func makePublisher(_ p: Participant, server: ServerEndpoint) throws {
        let connection = try PeerConnection(server: server.address, local: p.publisherICE, remote: server.ice, fingerprint: server.fingerprint, context: context,
                                            tcp: scenario.iceTCP)
        try register(connection)
        let publisher = LoadPublisher(connection: connection, streams: p.streams, tally: tally)
        let start = Clock.monotonicNanos
        for (i, s) in p.streams.enumerated() { s.nextDueNanos = start + Int64(i) * 1_000_000 }
        p.publisher = publisher
    }

    func makeSubscriber(_ p: Participant, server: ServerEndpoint, local: ICELiteAgent.Credentials) throws {
        let connection = try PeerConnection(server: server.address, local: local, remote: server.ice, fingerprint: server.fingerprint, context: context,
                                            tcp: scenario.iceTCP)
        try register(connection)
        let subscriber = LoadSubscriber(connection: connection, tally: tally, context: receiveContext)
        subscriber.rembBitrate = scenario.rembBitrate
        // The floor forwards the publishers' headers: their transport-cc numbers reach the subscribers,
        // which send feedback as they would to the SFU (the floor decrypts it and drops it).
        if case .floor = scenario.target, scenario.rembBitrate == nil { subscriber.transportCCID = ClientSDP.transportCCExtensionID }
        p.subscriber = subscriber
    }

    func register(_ connection: PeerConnection) throws {
        connections.append(connection)
        owners[connection.fd] = .media(connection)
        try poller.add(connection.fd, token: Int(connection.fd))
        if !connection.isTCP { _ = DatagramReceiveBatch.enableReceiveTimestamps(fd: connection.fd) }
    }

    // MARK: Signaling (SFU)

    func signal(_ event: ServerEvent, for p: Participant) {
        switch event {
        case .joinedRoom(let joined):
            p.peerID = joined.peerID
            if p.publishes, !p.offerSent {
                p.offerSent = true
                p.socket?.send(.publisherOffer(sdp: p.publisherOffer(fingerprint: context.certificate.sha256Fingerprint)))
            }
        case .webrtcAnswer(let answerSDP):
            guard answerSDP.target == "publisher", p.publisher == nil else { return }
            do {
                let answer = try SessionDescription(parsing: answerSDP.sdp)
                guard let server = ServerEndpoint(answer, tcp: scenario.iceTCP) else { throw ControlClient.Failure(description: "no usable candidate or ICE/DTLS parameters in the answer") }
                if scenario.simulcast, !answer.media.contains(where: { $0.has("simulcast") }) {
                    note("\(p.userID): the publisher answer has no a=simulcast (the server does not take simulcast)")
                }
                try makePublisher(p, server: server)
            } catch {
                p.errors.append("publisher answer: \(error)")
                note("\(p.userID): publisher answer: \(error)")
            }
        case .webrtcOffer(let offerSDP):
            guard offerSDP.target == "subscriber" else { return }
            do {
                let offer = try SessionDescription(parsing: offerSDP.sdp)
                p.subscriberOffers += 1
                if p.subscriber == nil {
                    guard let server = ServerEndpoint(offer, tcp: scenario.iceTCP) else { throw ControlClient.Failure(description: "no usable candidate or ICE/DTLS parameters in the offer") }
                    try makeSubscriber(p, server: server, local: .random())
                }
                guard let subscriber = p.subscriber else { return }
                subscriber.apply(offer: offer)
                let answer = ClientSDP.subscriberAnswer(offer: offer, ice: subscriber.connection.transport.local,
                                                        fingerprint: context.certificate.sha256Fingerprint, transportCC: scenario.rembBitrate == nil)
                p.socket?.send(.subscriberAnswer(sdp: answer))
            } catch {
                p.errors.append("subscriber offer: \(error)")
                note("\(p.userID): subscriber offer: \(error)")
            }
        case .trackPaused(let paused):
            guard let sub = p.subscriber else { return }
            sub.pausedTracks.insert(paused.trackID)
            sub.pauseEvents += 1
            if tally.windowOpen, !tally.windowClosed { sub.pausedInWindow.insert(paused.trackID) }
        case .trackResumed(let resumed):
            p.subscriber?.pausedTracks.remove(resumed.trackID)
        case .error(let error):
            let text = "\(error.code): \(error.message)"
            p.errors.append(text)
            note("\(p.userID): error \(text)")
        default:
            break
        }
    }

    // MARK: The loop

    func run() throws -> Report {
        let setupStart = Clock.monotonicNanos
        serverRSS.before = scenario.serverPID.flatMap { ProcessUsage(pid: $0).rssBytes }
        try setup()
        phase = .connecting(deadline: setupStart + Int64(scenario.setupTimeoutSeconds * 1e9))
        var nextTick = Clock.monotonicNanos
        while phase != .done {
            var now = Clock.monotonicNanos
            var due = nextTick
            for p in publishers { due = min(due, p.nextDueNanos) }
            let timeout = scenario.busyPoll ? 0 : Int32(clamping: max(0, (due - now + 999_999) / 1_000_000))
            poller.wait(timeoutMillis: timeout) { token, readable, writable in
                self.handle(fd: Int32(token), readable: readable, writable: writable)
            }
            now = Clock.monotonicNanos
            for p in publishers { p.sendDue(nowNanos: now) }
            if now >= nextTick {
                nextTick = max(nextTick + 10_000_000, now)
                tick(nowNanos: now)
            }
        }
        return makeReport(setupStart: setupStart)
    }

    func handle(fd: Int32, readable: Bool, writable: Bool) {
        switch owners[fd] {
        case .media(let connection) where connection.isTCP:
            guard readable else { return }
            let now = Clock.monotonicNanos
            receiveContext.kernelRealtimeNanos = 0  // (no kernel receive stamps on a stream)
            connection.readStream(nowNanos: now)
        case .media(let connection):
            guard readable else { return }
            // A few batches per wakeup, so that one busy socket does not starve the others.
            for _ in 0..<8 {
                let n = receiveBatch.receive(fd: fd)
                if n <= 0 { break }
                let now = Clock.monotonicNanos
                for i in 0..<n where !receiveBatch.isTruncated(i) {
                    receiveContext.kernelRealtimeNanos = receiveBatch.timestampNanos(i)
                    connection.received()
                    connection.transport.handleDatagram(receiveBatch.datagram(i), nowNanos: now)
                }
                if n < receiveBatch.capacity { break }
            }
        case .signaling(let p):
            guard let socket = p.socket else { return }
            if writable { socket.writeReady() }
            if readable { socket.readReady() }
            if socket.state == .open, !p.joinSent {
                p.joinSent = true
                socket.send(.joinRoom(roomID: nil))
            }
            socket.writeReady()
            if case .closed(let why) = socket.state {
                if phase != .done, !p.errors.contains(why) {
                    p.errors.append(why)
                    note("\(p.userID): signaling \(why)")
                }
                poller.remove(fd)
                owners[fd] = nil
                p.socket = nil
                return
            }
            poller.modify(fd, token: Int(fd), writable: socket.wantsWrite)
        case nil:
            poller.remove(fd)
        }
    }

    func tick(nowNanos now: Int64) {
        for c in connections {
            c.transport.tick(nowNanos: now)
            if c.isTCP { c.flushStream() }
        }
        for p in participants {
            p.publisher?.tick(nowNanos: now)
            p.subscriber?.tick(nowNanos: now)
        }
        switch phase {
        case .connecting(let deadline):
            let missing = notReady(nowNanos: now)
            if missing.isEmpty {
                note("all \(participants.count) participants connected and receiving")
                phase = .warmup(until: now + Int64(scenario.warmupSeconds * 1e9))
            } else if now >= deadline {
                setupIncomplete = missing
                note("setup timeout: \(missing.count) not ready: \(missing.prefix(5).joined(separator: "; "))")
                phase = .warmup(until: now)
            }
        case .warmup(let until):
            guard now >= until else { return }
            openWindow(now)
            phase = .measuring(until: now + Int64(scenario.durationSeconds * 1e9))
        case .measuring(let until):
            guard now >= until else { return }
            closeWindow(now)
            phase = .draining(until: now + Int64(scenario.drainSeconds * 1e9))
        case .draining(let until):
            guard now >= until else { return }
            // Frames cut off at the close (their stamped last packet never left the pacer).
            for p in participants { p.subscriber?.placeHeld() }
            phase = .done
        case .done:
            break
        }
    }

    /// What is not ready yet: publishers not connected, subscribers not receiving a track steadily
    /// (packets without a gap over 300 ms for the last second: a track the server paused for
    /// bandwidth is not ready).
    func notReady(nowNanos: Int64) -> [String] {
        var missing: [String] = []
        for p in participants {
            if p.publishes, p.publisher?.connection.isConnected != true { missing.append("\(p.userID): publisher not connected") }
            let others = otherPublishers(of: p)
            guard !others.isEmpty else { continue }
            guard let sub = p.subscriber else {
                missing.append("\(p.userID): no subscriber connection")
                continue
            }
            var flowing: Set<String> = []
            for (id, r) in sub.received where nowNanos - r.lastNanos < 300_000_000 && nowNanos - r.flowingSinceNanos >= 1_000_000_000 {
                if let s = tally.stream(id) { flowing.insert("\(s.publisher)/\(s.kind)") }
            }
            for o in others {
                for kind in [OutgoingStream.Kind.audio, .video] where kind == .audio ? scenario.audio : scenario.video {
                    guard !flowing.contains("\(o.index)/\(kind)") else { continue }
                    let paused = trackID(of: o, kind: kind, at: sub).map { sub.pausedTracks.contains($0) } ?? false
                    missing.append("\(p.userID): no \(kind) from \(o.userID)" + (paused ? " (paused by the server)" : ""))
                }
            }
        }
        return missing
    }

    /// The track id the server gave publisher `o`'s `kind` track in `sub`'s offers (SFU only).
    func trackID(of o: Participant, kind: OutgoingStream.Kind, at sub: LoadSubscriber) -> String? {
        guard let peer = o.peerID else { return nil }
        return sub.tracks.first { $0.value.peer == peer && $0.value.kind == (kind == .audio ? "audio" : "video") }?.key
    }

    func counters() -> [(id: UInt32, next: UInt32)] {
        participants.flatMap { $0.streams.map { ($0.id, $0.sentThrough) } }
    }

    func openWindow(_ now: Int64) {
        tally.openWindow(counters: counters())
        windowStartNanos = now
        serverCPU.start = scenario.serverPID.flatMap { ProcessUsage(pid: $0).cpuSeconds }
        loadCPU.start = ProcessUsage(pid: getpid()).cpuSeconds
        for p in participants {
            for s in p.streams { sentBytes[s.id] = (s.bytesSent, 0) }
            if let sub = p.subscriber {
                p.sequenceLossAtOpen = sub.sequenceLoss
                sub.pausedInWindow = sub.pausedTracks
            }
        }
    }

    func closeWindow(_ now: Int64) {
        serverCPU.end = scenario.serverPID.flatMap { ProcessUsage(pid: $0).cpuSeconds }
        serverRSS.end = scenario.serverPID.flatMap { ProcessUsage(pid: $0).rssBytes }
        loadCPU.end = ProcessUsage(pid: getpid()).cpuSeconds
        tally.closeWindow(counters: counters())
        windowEndNanos = now
        for p in participants {
            p.publisher?.sending = false
            for s in p.streams { sentBytes[s.id]?.end = s.bytesSent }
        }
    }

    /// Leaves the rooms (SFU: deletes them; floor: closes the control connection).
    func teardown() {
        for p in participants { p.socket = nil }
        if let control { for id in roomIDs { control.deleteRoom(id) } }
        floorControl = nil
    }
}

func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
