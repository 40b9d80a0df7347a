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

    func validate() throws {
        guard rooms >= 1, publishers >= 1, subscribers >= 0, duration > 0, fps >= 1, fps <= 120, keyframeInterval > 0 else {
            throw ValidationError("rooms and publishers >= 1, subscribers >= 0, duration > 0, fps 1...120, keyframe interval > 0")
        }
        guard parseBitrate(bitrate).map({ $0 >= 10_000 }) == true else { throw ValidationError("bitrate: a number of bits/s >= 10k, e.g. 1.5M") }
        if let remb { guard parseBitrate(remb).map({ $0 >= 10_000 }) == true else { throw ValidationError("--remb: bits/s >= 10k, e.g. 50M") } }
        guard !(tcp && floor != nil) else { throw ValidationError("--tcp: the floor forwarder has no ICE-TCP side") }
        guard !(audioOnly && noAudio) else { throw ValidationError("--audio-only and --no-audio exclude each other") }
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
        let runner = try LoadRunner(scenario: scenario)
        let report: Report
        do {
            report = try runner.run()
        } catch {
            runner.teardown()
            throw error
        }
        runner.teardown()
        print(json ? JSON.string(report.json) : report.text)
        if report.packetsReceived == 0 { throw ExitCode(2) }
    }
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
