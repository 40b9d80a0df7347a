import Control
import Foundation

/// The figures of one run (printed as text, or as JSON with `--json`).
struct Report {
    struct SubscriberLine {
        var name: String
        var room: Int
        var expected: Int
        var received: Int
        var duplicates: Int
        var nacksSent: Int
        var rtxReceived: Int
        var sequenceLost: Int64
        var pausedTracks = 0
        var pauseEvents = 0
        var latency: Percentiles?
        /// Every packet received during the run (setup and warm-up included), by kind.
        var totalByKind: [String: Int] = [:]
        var lost: Int { max(0, expected - received) }
    }

    /// What was run, as the report prints it.
    struct Scenario: Encodable {
        var rooms, publishers, subscribers: Int
        var durationS: Double
        var videoBitrate, fps: Int
        var keyframeIntervalS: Double
        var audio, video, simulcast, encodedVideo: Bool
        var subscriberFeedback: String
        var busyPoll: Bool
        /// "udp", or "tcp" (ICE-TCP, `--tcp`).
        var mediaTransport: String
    }

    /// One `--encoded-video` clip: its size, the bitrate asked and reached, its keyframe's size.
    struct EncodedClip: Encodable {
        var width, height, frames, bitrateAsked, bitrate, keyframeBytes: Int
    }

    var target: String
    var scenario: Scenario
    var setupSeconds: Double
    var windowSeconds: Double
    var packetsSent = 0
    var bytesSent = 0
    var videoPacketsSent = 0
    var audioPacketsSent = 0
    var packetsExpected = 0
    var packetsReceived = 0
    var bytesReceived = 0
    var duplicates = 0
    var subscribers: [SubscriberLine] = []
    var latency: Percentiles?
    var latencyClock = "kernel receive timestamp (SO_TIMESTAMPNS) minus send stamp, CLOCK_REALTIME"
    var serverPID: Int32?
    var serverCPUSeconds: Double?
    var serverPeakRSSBytes: Int?
    /// The server's resident memory before anyone joined and at the window's end (after the warm-up
    /// and the window, so buffers that fill with media are full).
    var serverRSSBeforeBytes: Int?
    var serverRSSEndBytes: Int?
    /// Participants and forwarded tracks (consumers: one per track a participant receives, a
    /// simulcast track counting once) in the scenario.
    var participantCount = 0
    var consumerCount = 0
    var serverRSSGrowthBytes: Int? {
        guard let a = serverRSSBeforeBytes, let b = serverRSSEndBytes else { return nil }
        return b - a
    }
    var loadCPUSeconds: Double?
    var keyframesSent = 0
    var keyframeRequests = 0
    var nacksReceivedByPublishers = 0
    var retransmissionsSent = 0
    var feedbackReceivedByPublishers = 0
    var setupIncomplete: [String] = []
    var errors: [String] = []
    var log: [String] = []
    var unstamped = 0
    var placedBySequence = 0
    /// `--encoded-video`: per clip its size, bitrate asked and reached, keyframe size.
    var encodedVideo: [EncodedClip] = []
    /// Simulcast: packets received inside the window per layer (RID), all subscribers together.
    var receivedByLayer: [String: Int] = [:]
    /// Frames the publishers skipped because the load tool ran late, and packets the pacer dropped.
    var framesSkipped = 0
    /// (subscriber, stream) pairs left out of the loss figures because the server paused the track
    /// for bandwidth during the window (track_paused), and pause events seen in the whole run.
    var pausedPairs = 0
    var pauseEvents = 0
    var pacerOverflows = 0
    /// How long each keyframe took to leave the publishers' pacers (first packet to last), whole run.
    var keyframeSendNanos: [Int64] = []
    var keyframeSendMeanMillis: Double {
        keyframeSendNanos.isEmpty ? 0 : Double(keyframeSendNanos.reduce(0, +)) / Double(keyframeSendNanos.count) / 1e6
    }

    var lost: Int { subscribers.reduce(0) { $0 + $1.lost } }
    var lossPercent: Double { packetsExpected > 0 ? Double(lost) * 100 / Double(packetsExpected) : 0 }
    var forwardedPerSecond: Double { windowSeconds > 0 ? Double(packetsReceived) / windowSeconds : 0 }
    var cpuMicrosPerPacket: Double? {
        guard let cpu = serverCPUSeconds, packetsReceived > 0 else { return nil }
        return cpu * 1e6 / Double(packetsReceived)
    }
    var packetsPerSecondPerCore: Double? {
        guard let cpu = serverCPUSeconds, cpu > 0 else { return nil }
        return Double(packetsReceived) / cpu
    }

    /// CPU seconds over the window as percent of one core.
    func percentOfWindow(_ cpuSeconds: Double) -> Double { cpuSeconds * 100 / max(windowSeconds, 1e-9) }

    var json: JSONReport { JSONReport(self) }

    var text: String {
        var lines: [String] = []
        func f(_ v: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", v) }
        lines.append("target \(target): \(scenario.rooms) room(s) x (\(scenario.publishers) publishers + \(scenario.subscribers) subscribers), "
                     + "window \(f(windowSeconds, 1)) s, setup \(f(setupSeconds, 1)) s")
        lines.append("sent      \(packetsSent) packets (\(videoPacketsSent) video, \(audioPacketsSent) audio), \(bytesSent) bytes, "
                     + "\(keyframesSent) keyframes, \(retransmissionsSent) retransmissions")
        if !keyframeSendNanos.isEmpty {
            lines.append("pacer     keyframes left over \(f(keyframeSendMeanMillis, 1)) ms on average (first packet to last)")
        }
        lines.append("received  \(packetsReceived) of \(packetsExpected) expected, lost \(lost) (\(f(lossPercent, 3)) %), "
                     + "\(duplicates) duplicates; \(f(forwardedPerSecond, 0)) forwarded packets/s")
        if !receivedByLayer.isEmpty {
            lines.append("simulcast layers received: " + receivedByLayer.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        if pausedPairs > 0 || pauseEvents > 0 {
            let who = subscribers.filter { $0.pausedTracks > 0 }.map(\.name)
            lines.append("paused by the server for bandwidth: \(pausedPairs) stream(s) at \(who.count) subscriber(s) during the window, left out of the loss figures "
                         + "(\(pauseEvents) track_paused events in the run)" + (who.isEmpty ? "" : ": " + who.prefix(8).joined(separator: ", ")))
        }
        let lossy = subscribers.filter { $0.lost > 0 }
        lines.append("loss per subscriber: \(lossy.isEmpty ? "none" : lossy.prefix(10).map { "\($0.name) \($0.lost)/\($0.expected)" }.joined(separator: ", "))")
        if let l = latency {
            lines.append("latency   p50 \(f(l.p50, 3)) ms, p90 \(f(l.p90, 3)) ms, p99 \(f(l.p99, 3)) ms, max \(f(l.max, 3)) ms (\(l.count) samples)")
        }
        if let cpu = serverCPUSeconds {
            var s = "server    \(f(cpu, 3)) CPU s (\(f(percentOfWindow(cpu), 1)) % of a core)"
            if let us = cpuMicrosPerPacket, let pps = packetsPerSecondPerCore {
                s += ", \(f(us, 3)) us per forwarded packet, \(Int(pps.rounded())) forwarded packets/s per core"
            }
            if let rss = serverPeakRSSBytes { s += ", peak RSS \(f(Double(rss) / 1_048_576, 1)) MiB" }
            lines.append(s)
            if let growth = serverRSSGrowthBytes, participantCount > 0 {
                lines.append("memory    server RSS +\(f(Double(growth) / 1_048_576, 1)) MiB for \(participantCount) participants and \(consumerCount) consumers "
                             + "(\(f(Double(growth) / 1024 / Double(participantCount), 1)) KiB per participant with its consumers)")
            }
        }
        if let cpu = loadCPUSeconds {
            var l = "load tool \(f(cpu, 3)) CPU s (\(f(percentOfWindow(cpu), 1)) % of a core)"
            if framesSkipped > 0 || pacerOverflows > 0 { l += "; ran late: \(framesSkipped) frames skipped, \(pacerOverflows) packets dropped by the pacer" }
            lines.append(l)
        }
        if !setupIncomplete.isEmpty { lines.append("NOT READY at start: \(setupIncomplete.prefix(5).joined(separator: "; "))") }
        for e in errors.prefix(10) { lines.append("error: \(e)") }
        return lines.joined(separator: "\n")
    }
}

/// The report as `--json` prints it (bench/load_scenarios.py and Tests/E2E/test_load_tool.py read
/// it): keys in snake_case from these names; an absent figure is an empty object where the report
/// always had that key, left out where it was optional.
struct JSONReport: Encodable {
    /// Encodes as `{}` when nil.
    struct OrEmpty<Value: Encodable>: Encodable {
        var value: Value?
        func encode(to encoder: any Encoder) throws {
            if let value { try value.encode(to: encoder) } else { _ = encoder.container(keyedBy: NoKeys.self) }
        }
        private enum NoKeys: String, CodingKey { case unused }
    }
    struct KeyframeSend: Encodable { var min, max, mean: Double; var count: Int }
    struct Sent: Encodable {
        var packets, bytes, videoPackets, audioPackets, keyframes, retransmissions: Int
        var encodedVideo: [Report.EncodedClip]
        var keyframeSendMs: OrEmpty<KeyframeSend>
    }
    struct Received: Encodable {
        var packets, bytes, expected, lost: Int
        var lossPercent: Double
        var duplicates, unstamped, placedBySequence, pausedByServer, trackPausedEvents: Int
    }
    struct Feedback: Encodable { var keyframeRequestsReceived, nacksReceived, transportCcReceived, nacksSent: Int }
    struct SubscriberLatency: Encodable { var p50, p99, max: Double }
    struct Subscriber: Encodable {
        var name: String
        var room, expected, received, lost: Int
        var lossPercent: Double
        var duplicates, nacksSent, rtxReceived: Int
        var sequenceLost: Int64
        var pausedTracks, trackPausedEvents: Int
        var receivedWholeRun: [String: Int]
        var latencyMs: OrEmpty<SubscriberLatency>
    }
    struct Latency: Encodable {
        var p50, p90, p99, max, mean: Double
        var samples: Int
        var clock: String
    }
    struct Server: Encodable {
        var pid: Int?
        var cpuS, peakRssMb, cpuUsPerPacket: Double?
        var packetsPerSPerCore: Int?
        /// Resident memory before anyone joined and at the window's end, bytes.
        var rssBeforeBytes, rssEndBytes: Int?
        var participants, consumers: Int
        var cpuPercent: Double?
    }
    struct LoadTool: Encodable {
        var cpuS, cpuPercent: Double
        var framesSkippedLate, pacerOverflows: Int
    }

    var target: String
    var scenario: Report.Scenario
    var setupS, windowS: Double
    var sent: Sent
    var received: Received
    var forwardedPerS: Double
    var feedback: Feedback
    var subscribers: [Subscriber]
    var receivedByLayer: [String: Int]
    var setupIncomplete, errors: [String]
    var latencyMs: Latency?
    var server: Server
    var loadTool: LoadTool?

    init(_ r: Report) {
        target = r.target
        scenario = r.scenario
        setupS = round3(r.setupSeconds)
        windowS = round3(r.windowSeconds)
        let k = r.keyframeSendNanos
        sent = Sent(packets: r.packetsSent, bytes: r.bytesSent, videoPackets: r.videoPacketsSent, audioPackets: r.audioPacketsSent,
                    keyframes: r.keyframesSent, retransmissions: r.retransmissionsSent, encodedVideo: r.encodedVideo,
                    keyframeSendMs: OrEmpty(value: k.isEmpty ? nil : KeyframeSend(
                        min: round3(Double(k.min() ?? 0) / 1e6), max: round3(Double(k.max() ?? 0) / 1e6),
                        mean: round3(r.keyframeSendMeanMillis), count: k.count)))
        received = Received(packets: r.packetsReceived, bytes: r.bytesReceived, expected: r.packetsExpected, lost: r.lost,
                            lossPercent: round3(r.lossPercent), duplicates: r.duplicates, unstamped: r.unstamped,
                            placedBySequence: r.placedBySequence, pausedByServer: r.pausedPairs, trackPausedEvents: r.pauseEvents)
        forwardedPerS = round3(r.forwardedPerSecond)
        feedback = Feedback(keyframeRequestsReceived: r.keyframeRequests, nacksReceived: r.nacksReceivedByPublishers,
                            transportCcReceived: r.feedbackReceivedByPublishers, nacksSent: r.subscribers.reduce(0) { $0 + $1.nacksSent })
        subscribers = r.subscribers.map { s in
            Subscriber(name: s.name, room: s.room, expected: s.expected, received: s.received, lost: s.lost,
                       lossPercent: s.expected > 0 ? round3(Double(s.lost) * 100 / Double(s.expected)) : 0,
                       duplicates: s.duplicates, nacksSent: s.nacksSent, rtxReceived: s.rtxReceived, sequenceLost: s.sequenceLost,
                       pausedTracks: s.pausedTracks, trackPausedEvents: s.pauseEvents, receivedWholeRun: s.totalByKind,
                       latencyMs: OrEmpty(value: s.latency.map { SubscriberLatency(p50: round3($0.p50), p99: round3($0.p99), max: round3($0.max)) }))
        }
        receivedByLayer = r.receivedByLayer
        setupIncomplete = r.setupIncomplete
        errors = r.errors
        latencyMs = r.latency.map {
            Latency(p50: round3($0.p50), p90: round3($0.p90), p99: round3($0.p99), max: round3($0.max), mean: round3($0.mean),
                    samples: $0.count, clock: r.latencyClock)
        }
        server = Server(pid: r.serverPID.map(Int.init),
                        cpuS: r.serverCPUSeconds.map(round6),  // to the microsecond: a short run uses tens of ms
                        peakRssMb: r.serverPeakRSSBytes.map { round3(Double($0) / 1_048_576) },
                        cpuUsPerPacket: r.cpuMicrosPerPacket.map(round3),
                        packetsPerSPerCore: r.packetsPerSecondPerCore.map { Int($0.rounded()) },
                        rssBeforeBytes: r.serverRSSBeforeBytes, rssEndBytes: r.serverRSSEndBytes,
                        participants: r.participantCount, consumers: r.consumerCount,
                        cpuPercent: r.serverCPUSeconds.flatMap { r.windowSeconds > 0 ? round3($0 * 100 / r.windowSeconds) : nil })
        loadTool = r.loadCPUSeconds.map {
            LoadTool(cpuS: round6($0), cpuPercent: round3(r.windowSeconds > 0 ? $0 * 100 / r.windowSeconds : 0),
                     framesSkippedLate: r.framesSkipped, pacerOverflows: r.pacerOverflows)
        }
    }
}

func round3(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }
func round6(_ v: Double) -> Double { (v * 1_000_000).rounded() / 1_000_000 }

extension LoadRunner {
    func makeReport(setupStart: Int64) -> Report {
        let s = scenario
        var report = Report(target: s.targetName, scenario: Report.Scenario(
            rooms: s.rooms, publishers: s.publishers, subscribers: s.subscribers, durationS: s.durationSeconds,
            videoBitrate: s.video ? s.bitrate : 0, fps: s.fps, keyframeIntervalS: s.keyframeIntervalSeconds,
            audio: s.audio, video: s.video, simulcast: s.simulcast, encodedVideo: s.encodedVideo,
            subscriberFeedback: s.rembBitrate.map { "remb \($0)" } ?? "transport-cc", busyPoll: s.busyPoll,
            mediaTransport: s.iceTCP ? "tcp" : "udp"
        ), setupSeconds: Double(windowStartNanos - setupStart) / 1e9 - s.warmupSeconds,
           windowSeconds: Double(windowEndNanos - windowStartNanos) / 1e9)
        for p in participants {
            for st in p.streams {
                let n = tally.expected(st.id)
                report.packetsSent += n
                if st.kind == .video { report.videoPacketsSent += n } else { report.audioPacketsSent += n }
                if let b = sentBytes[st.id] { report.bytesSent += b.end - b.start }
                report.keyframesSent += st.keyframes
                report.retransmissionsSent += st.retransmitted
            }
            if let pub = p.publisher {
                report.keyframeRequests += pub.keyframeRequests
                report.nacksReceivedByPublishers += pub.nacksReceived
                report.feedbackReceivedByPublishers += pub.feedbackReceived
                report.framesSkipped += pub.framesSkipped
                report.pacerOverflows += pub.pacerOverflows
                report.keyframeSendNanos += pub.keyframeSendNanos
            }
            report.errors += p.errors.map { "\(p.userID): \($0)" }
            // What this participant should receive: every stream of the other publishers in its room
            // (with simulcast, one layer of each video track: counted as received, the sequence
            // numbers tell the loss).
            let others = otherPublishers(of: p)
            guard !others.isEmpty else { continue }
            let sub = p.subscriber
            var line = Report.SubscriberLine(name: p.userID, room: p.room, expected: 0, received: 0, duplicates: 0,
                                             nacksSent: sub?.nacksSent ?? 0, rtxReceived: sub?.rtxReceived ?? 0, sequenceLost: 0)
            for o in others {
                for st in o.streams {
                    let got = sub?.received[st.id]
                    line.totalByKind[st.kind == .audio ? "audio" : "video", default: 0] += got?.total ?? 0
                    // A track the server paused for bandwidth during the window is not expected.
                    if let sub, let track = trackID(of: o, kind: st.kind, at: sub), sub.pausedInWindow.contains(track) {
                        report.pausedPairs += 1
                        line.pausedTracks += 1
                        continue
                    }
                    line.received += got?.inWindow ?? 0
                    line.duplicates += got?.duplicates ?? 0
                    report.bytesReceived += got?.bytes ?? 0
                    if let rid = st.rid {
                        line.expected += got?.inWindow ?? 0
                        report.receivedByLayer[String(decoding: rid, as: UTF8.self), default: 0] += got?.inWindow ?? 0
                    } else {
                        line.expected += tally.expected(st.id)
                    }
                }
            }
            if let sub {
                line.latency = Percentiles(sub.latencies, scale: 1e6)
                line.pauseEvents = sub.pauseEvents
                report.pauseEvents += sub.pauseEvents
                let now = sub.sequenceLoss
                line.sequenceLost = (now.lost - p.sequenceLossAtOpen.lost)
                if s.simulcast { line.expected += Int(max(0, line.sequenceLost)) }
            }
            report.packetsExpected += line.expected
            report.packetsReceived += line.received
            report.duplicates += line.duplicates
            report.subscribers.append(line)
        }
        report.latency = Percentiles(tally.latencies, scale: 1e6)
        if tally.latencyFromKernel == 0, tally.latencyFromUserspace > 0 {
            report.latencyClock = "receive time in the load tool minus send stamp, CLOCK_REALTIME (no kernel timestamps)"
        }
        report.unstamped = tally.unstamped
        report.placedBySequence = tally.placedBySequence
        report.encodedVideo = clips.map { c in
            Report.EncodedClip(width: c.key.width, height: c.key.height, frames: c.frames.count, bitrateAsked: c.key.bitrate,
                               bitrate: c.averageBitrate, keyframeBytes: c.frames.first?.count ?? 0)
        }
        report.serverPID = s.serverPID
        if let a = serverCPU.start, let b = serverCPU.end { report.serverCPUSeconds = b - a }
        if let pid = s.serverPID { report.serverPeakRSSBytes = ProcessUsage(pid: pid).peakRSSBytes }
        report.serverRSSBeforeBytes = serverRSS.before
        report.serverRSSEndBytes = serverRSS.end
        // Every participant receives every track of the room's publishers but its own.
        let tracks = (s.audio ? 1 : 0) + (s.video ? 1 : 0)
        report.participantCount = s.rooms * (s.publishers + s.subscribers)
        report.consumerCount = s.rooms * s.publishers * tracks * (s.subscribers + s.publishers - 1)
        if let a = loadCPU.start, let b = loadCPU.end { report.loadCPUSeconds = b - a }
        report.setupIncomplete = setupIncomplete
        report.log = log
        return report
    }
}
