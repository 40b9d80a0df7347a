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

    var target: String
    var scenario: [String: Any]
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
    var encodedVideo: [[String: Any]] = []
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

    var json: [String: Any] {
        var out: [String: Any] = [
            "target": target,
            "scenario": scenario,
            "setup_s": round3(setupSeconds),
            "window_s": round3(windowSeconds),
            "sent": ["packets": packetsSent, "bytes": bytesSent, "video_packets": videoPacketsSent, "audio_packets": audioPacketsSent,
                     "keyframes": keyframesSent, "retransmissions": retransmissionsSent, "encoded_video": encodedVideo,
                     "keyframe_send_ms": keyframeSendNanos.isEmpty ? [String: Any]() : [
                         "min": round3(Double(keyframeSendNanos.min() ?? 0) / 1e6), "max": round3(Double(keyframeSendNanos.max() ?? 0) / 1e6),
                         "mean": round3(keyframeSendMeanMillis),
                         "count": keyframeSendNanos.count]],
            "received": ["packets": packetsReceived, "bytes": bytesReceived, "expected": packetsExpected, "lost": lost,
                         "loss_percent": round3(lossPercent), "duplicates": duplicates, "unstamped": unstamped,
                         "placed_by_sequence": placedBySequence,
                         "paused_by_server": pausedPairs, "track_paused_events": pauseEvents],
            "forwarded_per_s": round3(forwardedPerSecond),
            "feedback": ["keyframe_requests_received": keyframeRequests, "nacks_received": nacksReceivedByPublishers,
                         "transport_cc_received": feedbackReceivedByPublishers,
                         "nacks_sent": subscribers.reduce(0) { $0 + $1.nacksSent }],
            "subscribers": subscribers.map { s -> [String: Any] in
                ["name": s.name, "room": s.room, "expected": s.expected, "received": s.received, "lost": s.lost,
                 "loss_percent": s.expected > 0 ? round3(Double(s.lost) * 100 / Double(s.expected)) : 0,
                 "duplicates": s.duplicates, "nacks_sent": s.nacksSent, "rtx_received": s.rtxReceived, "sequence_lost": s.sequenceLost,
                 "paused_tracks": s.pausedTracks, "track_paused_events": s.pauseEvents,
                 "received_whole_run": s.totalByKind,
                 "latency_ms": s.latency.map { ["p50": round3($0.p50), "p99": round3($0.p99), "max": round3($0.max)] } ?? [:]]
            },
            "received_by_layer": receivedByLayer,
            "setup_incomplete": setupIncomplete,
            "errors": errors,
        ]
        if let latency {
            out["latency_ms"] = ["p50": round3(latency.p50), "p90": round3(latency.p90), "p99": round3(latency.p99),
                                 "max": round3(latency.max), "mean": round3(latency.mean), "samples": latency.count, "clock": latencyClock]
        }
        var server: [String: Any] = [:]
        if let serverPID { server["pid"] = Int(serverPID) }
        if let serverCPUSeconds { server["cpu_s"] = round6(serverCPUSeconds) }  // to the microsecond: a short run uses tens of ms
        if let serverPeakRSSBytes { server["peak_rss_mb"] = round3(Double(serverPeakRSSBytes) / 1_048_576) }
        if let v = cpuMicrosPerPacket { server["cpu_us_per_packet"] = round3(v) }
        if let v = packetsPerSecondPerCore { server["packets_per_s_per_core"] = Int(v.rounded()) }
        if let serverCPUSeconds, windowSeconds > 0 { server["cpu_percent"] = round3(serverCPUSeconds * 100 / windowSeconds) }
        out["server"] = server
        if let loadCPUSeconds {
            out["load_tool"] = ["cpu_s": round6(loadCPUSeconds), "cpu_percent": round3(windowSeconds > 0 ? loadCPUSeconds * 100 / windowSeconds : 0),
                                "frames_skipped_late": framesSkipped, "pacer_overflows": pacerOverflows]
        }
        return out
    }

    var text: String {
        var lines: [String] = []
        func f(_ v: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", v) }
        lines.append("target \(target): \(scenario["rooms"] ?? 0) room(s) x (\(scenario["publishers"] ?? 0) publishers + \(scenario["subscribers"] ?? 0) subscribers), "
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
            var s = "server    \(f(cpu, 3)) CPU s (\(f(cpu * 100 / max(windowSeconds, 1e-9), 1)) % of a core)"
            if let us = cpuMicrosPerPacket, let pps = packetsPerSecondPerCore {
                s += ", \(f(us, 3)) us per forwarded packet, \(Int(pps.rounded())) forwarded packets/s per core"
            }
            if let rss = serverPeakRSSBytes { s += ", peak RSS \(f(Double(rss) / 1_048_576, 1)) MiB" }
            lines.append(s)
        }
        if let cpu = loadCPUSeconds {
            var l = "load tool \(f(cpu, 3)) CPU s (\(f(cpu * 100 / max(windowSeconds, 1e-9), 1)) % of a core)"
            if framesSkipped > 0 || pacerOverflows > 0 { l += "; ran late: \(framesSkipped) frames skipped, \(pacerOverflows) packets dropped by the pacer" }
            lines.append(l)
        }
        if !setupIncomplete.isEmpty { lines.append("NOT READY at start: \(setupIncomplete.prefix(5).joined(separator: "; "))") }
        for e in errors.prefix(10) { lines.append("error: \(e)") }
        return lines.joined(separator: "\n")
    }
}

func round3(_ v: Double) -> Double { (v * 1000).rounded() / 1000 }
func round6(_ v: Double) -> Double { (v * 1_000_000).rounded() / 1_000_000 }

extension LoadRunner {
    func makeReport(setupStart: Int64) -> Report {
        let s = scenario
        var report = Report(target: s.targetName, scenario: [
            "rooms": s.rooms, "publishers": s.publishers, "subscribers": s.subscribers, "duration_s": s.durationSeconds,
            "video_bitrate": s.video ? s.bitrate : 0, "fps": s.fps, "keyframe_interval_s": s.keyframeIntervalSeconds,
            "audio": s.audio, "video": s.video, "simulcast": s.simulcast, "encoded_video": s.encodedVideo,
            "subscriber_feedback": s.rembBitrate.map { "remb \($0)" } ?? "transport-cc", "busy_poll": s.busyPoll,
        ], setupSeconds: Double(windowStartNanos - setupStart) / 1e9 - s.warmupSeconds,
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
        report.encodedVideo = clips.map { c -> [String: Any] in
            ["width": c.key.width, "height": c.key.height, "frames": c.frames.count, "bitrate_asked": c.key.bitrate,
             "bitrate": c.averageBitrate, "keyframe_bytes": c.frames.first?.count ?? 0]
        }
        report.serverPID = s.serverPID
        if let a = serverCPU.start, let b = serverCPU.end { report.serverCPUSeconds = b - a }
        if let pid = s.serverPID { report.serverPeakRSSBytes = ProcessUsage(pid: pid).peakRSSBytes }
        if let a = loadCPU.start, let b = loadCPU.end { report.loadCPUSeconds = b - a }
        report.setupIncomplete = setupIncomplete
        report.log = log
        return report
    }
}
