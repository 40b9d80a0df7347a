import Hummingbird
import SFU

/// `GET /metrics`: Prometheus text exposition format (version 0.0.4), read from live state at
/// scrape time: the store (rooms, participants, recordings), the media workers' counters (each
/// read on its own loop) and the webhook dispatcher.
struct MetricsEndpoint: Sendable {
    let store: MetadataStore
    let media: MediaRuntime?
    let webhooks: WebhookDispatcher?
    let live: LiveRooms?

    func render() async throws -> String {
        var out = PrometheusText()
        let rooms = try await store.openRoomOccupancy()
        out.gauge("sfu_rooms", "Open rooms.", Double(rooms.count))
        out.gauge("sfu_participants", "Participants in open rooms.", Double(rooms.reduce(0) { $0 + $1.present }))
        out.gauge("sfu_recordings_active", "Recordings in progress.", Double(try await store.recordings(status: .recording).count))
        var total = TransportStatistics()
        var sessions = 0, received = 0, unmatched = 0, oversize = 0, sendOverflow = 0
        var tcp = TCPStatistics()
        for worker in media?.workers ?? [] {
            let s = try await worker.submit { worker.snapshot() }
            total.add(s.transports)
            sessions += s.sessions
            received += s.datagramsReceived
            unmatched += s.datagramsUnmatched
            oversize += s.datagramsReceiveDropped
            sendOverflow += s.datagramsSendOverflow
            tcp.add(s.tcp)
        }
        out.gauge("sfu_transports", "WebRTC transports (sessions) on the media workers.", Double(sessions))
        out.counter("sfu_rtp_packets_in_total", "RTP packets received and decrypted.", total.rtpPacketsIn)
        out.counter("sfu_rtp_bytes_in_total", "RTP bytes received (decrypted size).", total.rtpBytesIn)
        out.counter("sfu_rtp_packets_out_total", "RTP packets sent.", total.rtpPacketsOut)
        out.counter("sfu_rtp_bytes_out_total", "RTP bytes sent (before encryption).", total.rtpBytesOut)
        out.counter("sfu_rtcp_packets_in_total", "RTCP compound packets received.", total.rtcpPacketsIn)
        out.counter("sfu_rtcp_packets_out_total", "RTCP compound packets sent.", total.rtcpPacketsOut)
        out.counter("sfu_datagrams_received_total", "UDP datagrams read by the media workers.", received)
        out.header("sfu_dropped_packets_total", "Datagrams dropped, by reason.", type: "counter")
        for (reason, value) in [("malformed", total.malformed), ("srtp_replay", total.replayed), ("srtp_auth", total.authenticationFailures),
                                ("stun_rejected", total.stunRejected), ("no_transport", unmatched),
                                ("receive_error", oversize), ("send_buffer_full", sendOverflow),
                                ("tcp_oversize_frame", tcp.oversizeFrames), ("tcp_send_queue_full", tcp.sendQueueFull),
                                ("tcp_no_connection", tcp.noConnection)] {
            out.sample("sfu_dropped_packets_total", labels: "reason=\"\(reason)\"", Double(value))
        }
        out.gauge("sfu_ice_tcp_connections", "ICE-TCP connections open on the media workers.", Double(tcp.open))
        out.counter("sfu_ice_tcp_connections_accepted_total", "ICE-TCP connections accepted (including those closed at once by a limit).",
                    tcp.accepted)
        out.header("sfu_ice_tcp_connections_closed_total", "ICE-TCP connections closed, by reason.", type: "counter")
        for reason in TCPCloseReason.allCases {
            out.sample("sfu_ice_tcp_connections_closed_total", labels: "reason=\"\(reason.rawValue)\"", Double(tcp.closed[reason] ?? 0))
        }
        var counters = RoomCounters()
        var liveRooms = 0
        var layers: [(room: String, snapshot: [ParticipantSnapshot])] = []
        for (id, room) in live?.all ?? [] {
            guard let (c, snapshot) = try? await room.run({ ($0.counters(), $0.snapshot(nowNanos: MediaWorker.nowNanos)) }) else { continue }
            counters.add(c)
            layers.append((id, snapshot))
            liveRooms += 1
        }
        out.gauge("sfu_live_rooms", "Rooms with a forwarding table on a media worker.", Double(liveRooms))
        out.counter("sfu_keyframe_requests_total", "PLIs sent to publishers (live rooms).", counters.keyframeRequestsSent)
        out.counter("sfu_keyframe_requests_throttled_total", "Keyframe requests absorbed by the one-per-second pacing (live rooms).",
                    counters.keyframeRequestsThrottled)
        out.counter("sfu_retransmissions_total", "Packets resent to subscribers after a NACK (live rooms).", counters.retransmissions)
        out.counter("sfu_retransmission_misses_total", "NACKed packets no longer in the retransmission buffer (live rooms).",
                    counters.retransmissionMisses)
        out.counter("sfu_retransmissions_throttled_total",
                    "NACKed packets not resent: resent less than an RTT before, or over the subscriber's retransmission budget (live rooms).",
                    counters.retransmissionsThrottled)
        out.counter("sfu_layer_switches_total", "Simulcast spatial layer switches made for subscribers (live rooms).", counters.layerSwitches)
        out.gauge("sfu_tracks_paused", "Video subscriptions paused because the subscriber's downlink cannot carry them.", Double(counters.tracksPaused))
        out.counter("sfu_probe_padding_bytes_total", "Padding sent to probe subscribers' downlinks (live rooms).", counters.probePaddingBytes)
        out.counter("sfu_paced_packets_total", "Video packets a subscriber's pacer held back before sending them (live rooms).", counters.pacedPackets)
        out.header("sfu_subscriber_downlink_estimate_bps", "Estimated downlink of each subscriber (transport-cc GCC, or its REMB).", type: "gauge")
        for (room, snapshot) in layers {
            for p in snapshot {
                guard let estimate = p.quality.downlinkEstimate else { continue }
                out.sample("sfu_subscriber_downlink_estimate_bps", labels: "room=\"\(room)\",peer=\"\(p.peer.peerID)\"", Double(estimate))
            }
        }
        out.header("sfu_subscription_layer", "Simulcast layer each subscriber receives of each track: current or target, spatial or temporal.", type: "gauge")
        for (room, snapshot) in layers {
            for p in snapshot {
                for sub in p.subscriptions {
                    let base = "room=\"\(room)\",peer=\"\(p.peer.peerID)\",track=\"\(sub.trackID)\""
                    for (state, dim, value) in [("current", "spatial", sub.spatialLayer), ("target", "spatial", sub.targetSpatialLayer),
                                                ("current", "temporal", sub.temporalLayer), ("target", "temporal", sub.targetTemporalLayer)] {
                        guard let value else { continue }
                        out.sample("sfu_subscription_layer", labels: base + ",layer=\"\(dim)\",state=\"\(state)\"", Double(value))
                    }
                }
            }
        }
        if let webhooks {
            out.counter("sfu_webhooks_delivered_total", "Webhook deliveries accepted by the receiver.", await webhooks.delivered)
            out.counter("sfu_webhooks_failed_total", "Webhook deliveries given up after retries.", await webhooks.failed)
            if let pending = await webhooks.pending() {
                out.gauge("sfu_webhooks_pending", "Webhook deliveries waiting in the outbox.", Double(pending))
            }
            out.counter("sfu_webhooks_lost_total", "Webhook events not written to the outbox (the store was down): not delivered.", await webhooks.lost)
        }
        return out.text
    }
}

struct PrometheusText {
    var text = ""
    mutating func header(_ name: String, _ help: String, type: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }
    mutating func sample(_ name: String, labels: String? = nil, _ value: Double) {
        let v = value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        text += labels.map { "\(name){\($0)} \(v)\n" } ?? "\(name) \(v)\n"
    }
    mutating func gauge(_ name: String, _ help: String, _ value: Double) {
        header(name, help, type: "gauge")
        sample(name, value)
    }
    mutating func counter(_ name: String, _ help: String, _ value: Int) {
        header(name, help, type: "counter")
        sample(name, Double(value))
    }
}
