import ArgumentParser
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation

@main
struct SFULoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sfu-load",
        abstract: "Load generator for the SFU: real WebRTC publishers and subscribers on UDP, and the floor forwarder to compare with.",
        subcommands: [Run.self, Floor.self, Hostile.self],
        defaultSubcommand: Run.self
    )
}

/// Parses "1500000", "1500k", "1.5M".
func parseBitrate(_ text: String) -> Int? {
    let t = text.lowercased()
    if t.hasSuffix("m"), let v = Double(t.dropLast()) { return Int(v * 1_000_000) }
    if t.hasSuffix("k"), let v = Double(t.dropLast()) { return Int(v * 1_000) }
    return Int(t)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a scenario against the SFU (control API + signaling) or the floor, and report.",
        discussion: """
            Each room gets P publishers (audio 50 packets/s + VP8-like video, or three simulcast layers) and S \
            subscribe-only participants; publishers also receive each other. The measurement window opens once \
            everyone receives every track, after a warm-up. Server CPU comes from --server-pid.
            """
    )

    @Option(help: "The SFU's HTTP base URL.") var url = "http://127.0.0.1:8080"
    @Option(help: "API key for the control API (default: $SFU_API_KEY).") var apiKey: String?
    @Option(help: "Run against an `sfu-load floor` at this control address (host:port) instead of the SFU.") var floor: String?
    @Option(help: "Rooms.") var rooms = 1
    @Option(help: "Publishers per room (they also subscribe to each other).") var publishers = 1
    @Option(help: "Subscribe-only participants per room.") var subscribers = 1
    @Option(help: "Measurement window in seconds.") var duration = 10.0
    @Option(help: "Seconds of media after everyone is connected, before the window.") var warmup = 2.0
    @Option(help: "Seconds to wait for every participant to connect and receive.") var setupTimeout = 30.0
    @Option(help: "Video payload bitrate per publisher (top layer with simulcast), e.g. 1.5M or 500k.") var bitrate = "1.5M"
    @Option(help: "Video frames per second.") var fps = 30
    @Option(help: "Seconds between keyframes.") var keyframeInterval = 3.0
    @Flag(help: "Audio only.") var audioOnly = false
    @Flag(help: "Video only.") var noAudio = false
    @Flag(help: "Publish video as three simulcast layers (q, h, f) by RID.") var simulcast = false
    @Flag(help: ArgumentHelp("Send real VP8, encoded with libvpx at start-up and looped, instead of a frame tag and filler.",
                             discussion: "A server that decodes (a composite recording) then sees pictures. Only a frame's last packet carries the stamp; the others are placed by sequence number. The report gives each clip's real bitrate: libvpx gets within ~10% of 1.5 Mbit/s at 1280x720, but cannot go much below ~1 Mbit/s at that size.")) var encodedVideo = false
    @Option(help: ArgumentHelp("Subscribers report a fixed downlink estimate with REMB (e.g. 50M) instead of transport-cc feedback.",
                               discussion: "The server's estimator and its probing are then out of the loop: every track is forwarded whole.")) var remb: String?
    @Flag(help: ArgumentHelp("Poll without sleeping (the load tool takes its whole core).",
                             discussion: "On loopback the server's sends pay for waking the load tool up; polling takes that cost away, as a NIC would.")) var busyPoll = false
    @Option(help: "PID of the server (or floor) process, for CPU and memory figures.") var serverPid: Int32?
    @Flag(help: "Print the report as JSON.") var json = false
    @Flag(help: "Log setup progress to stderr.") var verbose = false
    @Flag(help: ArgumentHelp("Media over ICE-TCP: each peer connection connects to the server's passive TCP candidate (RFC 6544, RFC 4571 framing) instead of UDP.",
                             discussion: "For CPU per forwarded packet over TCP beside UDP. Not with --floor (it has no TCP side).")) var tcp = false
    @Option(help: ArgumentHelp("Ramp: run scenario (a)'s shape (one publisher per room fanning out to up to 99 subscribers) again and again with this many more subscribers each step, until a step fails.",
                               discussion: "Each step is a whole run (setup, warm-up, window, rooms deleted). A step passes with loss under --ramp-max-loss % and p99 latency under --ramp-max-p99 ms; the capacity is the forwarded packets/s of the last step that passed. --rooms and --subscribers are ignored; --publishers is per room.")) var rampStep: Int?
    @Option(help: "Ramp: stop after this many subscribers.") var rampMax = 2000
    @Option(help: "Ramp: a step fails at this much loss, percent.") var rampMaxLoss = 0.5
    @Option(help: "Ramp: a step fails at this p99 latency, ms.") var rampMaxP99 = 50.0

    func validate() throws {
        guard rooms >= 1, publishers >= 1, subscribers >= 0, duration > 0, fps >= 1, fps <= 120, keyframeInterval > 0 else {
            throw ValidationError("rooms and publishers >= 1, subscribers >= 0, duration > 0, fps 1...120, keyframe interval > 0")
        }
        guard parseBitrate(bitrate).map({ $0 >= 10_000 }) == true else { throw ValidationError("bitrate: a number of bits/s >= 10k, e.g. 1.5M") }
        if let remb { guard parseBitrate(remb).map({ $0 >= 10_000 }) == true else { throw ValidationError("--remb: bits/s >= 10k, e.g. 50M") } }
        guard !(tcp && floor != nil) else { throw ValidationError("--tcp: the floor forwarder has no ICE-TCP side") }
        guard !(audioOnly && noAudio) else { throw ValidationError("--audio-only and --no-audio exclude each other") }
        if let rampStep { guard rampStep >= 1, rampMax >= rampStep, publishers < 100 else { throw ValidationError("--ramp-step >= 1, --ramp-max >= it, publishers < 100") } }
        guard publishers + subscribers <= (floor == nil ? 100 : 1000) else {
            throw ValidationError("at most 100 participants per room (the control API's max_participants; 1000 with --floor): use more rooms")
        }
    }

    func run() throws {
        let target: Scenario.Target
        if let floor {
            guard let address = parseHostPort(floor) else { throw ValidationError("--floor: host:port") }
            target = .floor(address)
        } else {
            guard let base = PlainURL(url) else { throw ValidationError("--url: an http:// URL") }
            guard let key = apiKey ?? ProcessInfo.processInfo.environment["SFU_API_KEY"], !key.isEmpty else {
                throw ValidationError("--api-key or SFU_API_KEY is needed for the control API")
            }
            target = .sfu(url: base, apiKey: key)
        }
        var scenario = Scenario(target: target)
        scenario.rooms = rooms
        scenario.publishers = publishers
        scenario.subscribers = subscribers
        scenario.durationSeconds = duration
        scenario.warmupSeconds = warmup
        scenario.setupTimeoutSeconds = setupTimeout
        scenario.bitrate = parseBitrate(bitrate) ?? 1_500_000
        scenario.fps = fps
        scenario.keyframeIntervalSeconds = keyframeInterval
        scenario.audio = !noAudio
        scenario.video = !audioOnly
        scenario.simulcast = simulcast && !audioOnly
        scenario.encodedVideo = encodedVideo && !audioOnly
        scenario.serverPID = serverPid
        scenario.busyPoll = busyPoll
        scenario.iceTCP = tcp
        scenario.rembBitrate = remb.flatMap(parseBitrate).map { UInt64($0) }
        scenario.verbose = verbose
        // More descriptors than the default 1024 for big rooms (two sockets per participant).
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        if let rampStep {
            try ramp(scenario, step: rampStep)
            return
        }
        let report = try Self.runOnce(scenario)
        print(json ? JSON.string(report.json) : report.text)
        if report.packetsReceived == 0 { throw ExitCode(2) }
    }

    /// One whole run: setup, warm-up, window; the rooms (or floor peers) are gone after it either way.
    static func runOnce(_ scenario: Scenario) throws -> Report {
        let runner = try LoadRunner(scenario: scenario)
        defer { runner.teardown() }
        return try runner.run()
    }

    /// The ramp: scenario (a)'s shape with `step` more subscribers each run, until loss or p99
    /// latency passes its limit (or the setup does not complete); prints each step and the capacity.
    func ramp(_ base: Scenario, step: Int) throws {
        let perRoom = 100 - base.publishers
        var steps: [RampStep] = []
        var total = step
        while total <= rampMax {
            var s = base
            s.rooms = (total + perRoom - 1) / perRoom
            s.subscribers = (total + s.rooms - 1) / s.rooms
            let report = try Self.runOnce(s)
            let p99 = report.latency?.p99
            var failed: [String] = []
            if !report.setupIncomplete.isEmpty { failed.append("setup incomplete") }
            if report.lossPercent >= rampMaxLoss { failed.append("loss \(String(format: "%.3f", report.lossPercent)) %") }
            if let p99, p99 >= rampMaxP99 { failed.append("p99 \(String(format: "%.1f", p99)) ms") }
            if report.packetsReceived == 0 { failed.append("nothing received") }
            let entry = RampStep(subscribers: s.rooms * s.subscribers, rooms: s.rooms, forwardedPerS: round3(report.forwardedPerSecond),
                                 lossPercent: round3(report.lossPercent), p99Ms: p99.map(round3),
                                 serverCPUPercent: report.serverCPUSeconds.map { round3(report.percentOfWindow($0)) },
                                 serverUsPerPacket: report.cpuMicrosPerPacket.map(round3),
                                 loadToolCPUPercent: report.loadCPUSeconds.map { round3(report.percentOfWindow($0)) },
                                 passed: failed.isEmpty, failed: failed)
            steps.append(entry)
            if !json { print(entry.line) }
            fflush(nil)
            if !entry.passed { break }
            total += step
            // The server drops the last step's rooms and connections before the next one connects.
            usleep(1_000_000)
        }
        let capacity = steps.last { $0.passed }
        if json {
            print(JSON.string(RampReport(target: base.targetName, publishersPerRoom: base.publishers, limits: .init(lossPercent: rampMaxLoss, p99Ms: rampMaxP99),
                                         steps: steps, capacity: capacity)))
        } else if let c = capacity {
            print("capacity  \(Int(c.forwardedPerS)) forwarded packets/s with loss under \(rampMaxLoss) % and p99 under \(rampMaxP99) ms "
                  + "(\(c.subscribers) subscribers\(c.serverCPUPercent.map { String(format: ", server %.0f %% of a core", $0) } ?? "")"
                  + "\(c.loadToolCPUPercent.map { String(format: ", load tool %.0f %%", $0) } ?? ""))")
        } else {
            print("capacity  none: the first step (\(step) subscribers) already failed")
        }
        if capacity == nil { throw ExitCode(2) }
    }
}

/// One step of `--ramp-step`.
struct RampStep: Encodable {
    var subscribers, rooms: Int
    var forwardedPerS: Double
    var lossPercent: Double
    var p99Ms: Double?
    var serverCPUPercent, serverUsPerPacket, loadToolCPUPercent: Double?
    var passed: Bool
    var failed: [String]

    var line: String {
        func f(_ v: Double?, _ d: Int) -> String { v.map { String(format: "%.\(d)f", $0) } ?? "-" }
        return "step      \(subscribers) subscribers (\(rooms) rooms): \(Int(forwardedPerS)) forwarded packets/s, loss \(f(lossPercent, 3)) %, "
            + "p99 \(f(p99Ms, 2)) ms, server \(f(serverCPUPercent, 0)) % of a core (\(f(serverUsPerPacket, 2)) us/packet), "
            + "load tool \(f(loadToolCPUPercent, 0)) %" + (passed ? "" : " -> over: " + failed.joined(separator: ", "))
    }
}

struct RampReport: Encodable {
    struct Limits: Encodable { var lossPercent, p99Ms: Double }
    var target: String
    var publishersPerRoom: Int
    var limits: Limits
    var steps: [RampStep]
    var capacity: RampStep?
}

struct Floor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The floor forwarder: ICE-lite, DTLS-SRTP and batched UDP, every publisher packet to every other subscriber of its room, nothing else.",
        discussion: "Prints its media and control addresses, then runs until killed."
    )

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "UDP media port (0: any).") var mediaPort: UInt16 = 0
    @Option(help: "TCP control port (0: any).") var controlPort: UInt16 = 0

    func run() throws {
        let server = try FloorServer(host: host, mediaPort: mediaPort, controlPort: controlPort)
        print("floor media \(server.mediaAddress) control \(server.controlAddress) pid \(getpid())")
        fflush(nil)
        server.run()
    }
}
