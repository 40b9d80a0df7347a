import DTLS
import RTP

/// Counters of one transport, for logs and metrics.
package struct TransportStatistics: Sendable, Equatable {
    package var rtpPacketsIn = 0
    package var rtpBytesIn = 0
    package var rtcpPacketsIn = 0
    package var rtpPacketsOut = 0
    package var rtpBytesOut = 0
    package var rtcpPacketsOut = 0
    /// SRTP/SRTCP packets dropped by replay protection.
    package var replayed = 0
    /// SRTP/SRTCP packets that failed authentication (tampered or wrong keys).
    package var authenticationFailures = 0
    /// Datagrams that were not STUN, DTLS, RTP or RTCP, or did not parse.
    package var malformed = 0
    package var stunRejected = 0
    /// RTCP datagrams dropped unread because the peer sent more than ``WebRTCTransport/rtcpBudget``.
    package var rtcpRateLimited = 0
    /// SRTP/SRTCP packets dropped unread: a new SSRC beyond ``WebRTCTransport/maxInboundSSRCs``.
    package var ssrcLimited = 0
    package init() {}

    package mutating func add(_ o: TransportStatistics) {
        rtpPacketsIn += o.rtpPacketsIn
        rtpBytesIn += o.rtpBytesIn
        rtcpPacketsIn += o.rtcpPacketsIn
        rtpPacketsOut += o.rtpPacketsOut
        rtpBytesOut += o.rtpBytesOut
        rtcpPacketsOut += o.rtcpPacketsOut
        replayed += o.replayed
        authenticationFailures += o.authenticationFailures
        malformed += o.malformed
        stunRejected += o.stunRejected
        rtcpRateLimited += o.rtcpRateLimited
        ssrcLimited += o.ssrcLimited
    }
}

/// What a transport tells its owner. Media arrives decrypted, in the caller's buffer.
package protocol WebRTCTransportDelegate: AnyObject {
    /// Send `datagram` to `address` (the IO shell writes it to the worker's socket).
    func transport(_ transport: WebRTCTransport, send datagram: UnsafeRawBufferPointer, to address: TransportAddress)
    /// ICE and DTLS are up; media can flow.
    func transportDidConnect(_ transport: WebRTCTransport)
    /// A decrypted RTP packet (`packet` is valid during the call only and may be modified).
    func transport(_ transport: WebRTCTransport, didReceiveRTP packet: UnsafeMutableRawBufferPointer, header: RTPHeader, nowNanos: Int64)
    /// A decrypted, parsed RTCP compound packet.
    func transport(_ transport: WebRTCTransport, didReceiveRTCP packets: [RTCPPacket], nowNanos: Int64)
    /// The transport is finished (DTLS failure or close, ICE consent lost, closed by us).
    func transportDidClose(_ transport: WebRTCTransport, reason: String)
    /// Once connected, the peer's address changed (it nominated a new one, which answered our check).
    func transport(_ transport: WebRTCTransport, didMoveTo address: TransportAddress)
}

extension WebRTCTransportDelegate {
    package func transport(_ transport: WebRTCTransport, didMoveTo address: TransportAddress) {}
}

/// One peer's WebRTC transport: ICE-lite + DTLS-SRTP over one UDP 5-tuple (BUNDLE, rtcp-mux),
/// sans-IO. The IO shell feeds it datagrams and timeouts; it calls its delegate to send and to
/// deliver media. Lives on one event loop; never thread-safe.
package final class WebRTCTransport {
    package enum State: Equatable, Sendable { case new, connecting, connected, closed(String) }

    package let id: String
    package let ice: ICELiteAgent
    package let dtls: DTLSEndpoint
    /// Unowned, not weak: the delegate owns the transport and outlives it (it sets this to nil when
    /// it lets the transport go on). A weak reference would give every delegate a side table and
    /// make each retain and release of it (per forwarded packet) the runtime's slow path.
    package unowned(safe) var delegate: WebRTCTransportDelegate?
    package private(set) var state: State = .new
    package private(set) var statistics = TransportStatistics()
    package let createdNanos: Int64
    /// Where media and DTLS go: the ICE-selected address.
    package var remoteAddress: TransportAddress? { ice.selectedAddress }

    /// RTCP datagrams a second one peer may send, and how many may come at once. A browser sends
    /// a few dozen a second (transport-cc feedback, NACKs, reports); beyond this the datagrams are
    /// dropped before decryption, so one peer's flood costs its room's loop little.
    package static let rtcpBudget = (perSecond: 300.0, burst: 100.0)
    private var rtcpBucket = TokenBucket(burst: rtcpBudget.burst)
    /// libsrtp2 makes a stream (key schedule, replay window) for every SSRC it authenticates; a
    /// peer sending under ever new SSRCs would grow that without bound. The SSRCs already seen
    /// here (a browser uses a handful: simulcast layers, RTX, its RTCP sender) are kept, and a
    /// packet under a new one is decrypted only while there are fewer than this.
    package static let maxInboundSSRCs = 64
    private var inboundSSRCs: [UInt32] = []

    /// Whether a packet under `ssrc` may be decrypted (known, or room for one more).
    private func admitSSRC(_ ssrc: UInt32) -> Bool {
        if inboundSSRCs.contains(ssrc) { return true }
        guard inboundSSRCs.count < Self.maxInboundSSRCs else {
            statistics.ssrcLimited += 1
            return false
        }
        return true
    }

    private func noteSSRC(_ ssrc: UInt32) {
        if !inboundSSRCs.contains(ssrc) { inboundSSRCs.append(ssrc) }
    }

    private var srtpIn: SRTPSession?
    private var srtpOut: SRTPSession?
    private var sendBuffer = [UInt8](repeating: 0, count: WebRTCTransport.maxPlaintextSize + SRTPProfile.maxOverhead)

    /// - Parameters:
    ///   - remoteFingerprint: the peer's `a=fingerprint` (required: a peer that does not match fails).
    package init(id: String, iceCredentials: ICELiteAgent.Credentials, remoteICE: ICELiteAgent.Credentials?,
                dtlsContext: DTLSContext, dtlsRole: DTLSEndpoint.Role, remoteFingerprint: CertificateFingerprint,
                nowNanos: Int64) throws {
        guard let ice = ICELiteAgent(local: iceCredentials, remote: remoteICE) else { throw TransportError.crypto("HMAC unavailable") }
        self.id = id
        self.ice = ice
        self.dtls = try DTLSEndpoint(role: dtlsRole, context: dtlsContext, expectedRemoteFingerprint: remoteFingerprint)
        self.createdNanos = nowNanos
    }

    package enum TransportError: Error, Equatable { case crypto(String) }

    /// The earliest time ``handleTimeout(nowNanos:)`` must run.
    package var nextTimeoutNanos: Int64? {
        if case .closed = state { return nil }
        let consent = ice.consentDeadline(startNanos: createdNanos)
        return dtls.nextTimeoutNanos.map { min($0, consent) } ?? consent
    }

    /// When the datagram being handled reached the host (the kernel's receive time when the worker
    /// has it, else `nowNanos`), on the monotonic clock. Valid during a delegate call for that
    /// datagram: transport-wide congestion control feedback reports it as the packet's arrival,
    /// so that time the datagram spent waiting for this thread is not mistaken for network queueing.
    package private(set) var arrivalNanos: Int64 = 0

    /// Whether the last STUN datagram handled was a request that passed the ICE check (our peer).
    package private(set) var lastCheckPassed = false

    /// Handles one datagram from `source`. `datagram` may be modified (SRTP decrypts in place).
    /// - Parameter arrivalNanos: when it reached the host (nil: `nowNanos`); see ``arrivalNanos``.
    package func handleDatagram(_ datagram: UnsafeMutableRawBufferPointer, from source: TransportAddress, nowNanos: Int64,
                               arrivalNanos: Int64? = nil) {
        if case .closed = state { return }
        self.arrivalNanos = arrivalNanos ?? nowNanos
        let raw = UnsafeRawBufferPointer(datagram)
        switch PacketClass(classifying: raw) {
        case .stun:
            let before = ice.rejected
            let outcome = ice.handle(raw, from: source, nowNanos: nowNanos)
            statistics.stunRejected += ice.rejected - before
            lastCheckPassed = outcome.authenticated
            if let response = outcome.response {
                response.withUnsafeBytes { delegate?.transport(self, send: $0, to: source) }
            }
            if let check = outcome.check {
                check.bytes.withUnsafeBytes { delegate?.transport(self, send: $0, to: check.to) }
            }
            if let moved = outcome.newSelectedAddress, state == .connected { delegate?.transport(self, didMoveTo: moved) }
            if outcome.authenticated, state == .new {
                state = .connecting
                if dtls.role == .client { dtls.start(nowNanos: nowNanos) }
                flushDTLS(nowNanos: nowNanos)
            }
        case .dtls:
            // Only from an address that passed an ICE check.
            guard ice.lastValidRequestNanos != nil, source == ice.selectedAddress else {
                statistics.malformed += 1
                return
            }
            dtls.handleDatagram(raw, nowNanos: nowNanos)
            flushDTLS(nowNanos: nowNanos)
        case .rtp:
            guard state == .connected, let srtpIn, source == ice.selectedAddress, let base = datagram.baseAddress, datagram.count >= 12 else {
                statistics.malformed += 1
                return
            }
            let ssrc = raw.u32(8)
            guard admitSSRC(ssrc) else { return }
            switch srtpIn.unprotectRTP(base, length: datagram.count) {
            case .success(let length):
                noteSSRC(ssrc)
                let plain = UnsafeMutableRawBufferPointer(rebasing: datagram[0..<length])
                guard let header = try? RTPHeader(parsing: UnsafeRawBufferPointer(plain)) else {
                    statistics.malformed += 1
                    return
                }
                statistics.rtpPacketsIn += 1
                statistics.rtpBytesIn += length
                delegate?.transport(self, didReceiveRTP: plain, header: header, nowNanos: nowNanos)
            case .failure(let reason):
                count(reason)
            }
        case .rtcp:
            guard state == .connected, let srtpIn, source == ice.selectedAddress, let base = datagram.baseAddress else {
                statistics.malformed += 1
                return
            }
            guard rtcpBucket.take(1, rate: Self.rtcpBudget.perSecond, burst: Self.rtcpBudget.burst, nowNanos: nowNanos) else {
                statistics.rtcpRateLimited += 1
                return
            }
            guard datagram.count >= 8 else {
                statistics.malformed += 1
                return
            }
            let ssrc = raw.u32(4)
            guard admitSSRC(ssrc) else { return }
            switch srtpIn.unprotectRTCP(base, length: datagram.count) {
            case .success(let length):
                noteSSRC(ssrc)
                guard let packets = try? RTCPCompound.parse(UnsafeRawBufferPointer(rebasing: datagram[0..<length])) else {
                    statistics.malformed += 1
                    return
                }
                statistics.rtcpPacketsIn += 1
                delegate?.transport(self, didReceiveRTCP: packets, nowNanos: nowNanos)
            case .failure(let reason):
                count(reason)
            }
        case .other:
            statistics.malformed += 1
        }
    }

    private func count(_ reason: SRTPDropReason) {
        switch reason {
        case .replay: statistics.replayed += 1
        case .authentication: statistics.authenticationFailures += 1
        case .malformed: statistics.malformed += 1
        }
    }

    package func handleTimeout(nowNanos: Int64) {
        if case .closed = state { return }
        if ice.consentExpired(nowNanos: nowNanos, startNanos: createdNanos) {
            close(reason: ice.lastValidRequestNanos == nil ? "ICE never connected" : "ICE consent expired")
            return
        }
        if let t = dtls.nextTimeoutNanos, t <= nowNanos {
            dtls.handleTimeout(nowNanos: nowNanos)
            flushDTLS(nowNanos: nowNanos)
        }
    }

    /// Protects and sends an RTP packet to the peer. `packet` is copied into the transport's send buffer.
    /// - Returns: false when not connected or the packet is too large.
    @discardableResult
    package func sendRTP(_ packet: UnsafeRawBufferPointer) -> Bool {
        send(packet, rtcp: false)
    }

    /// Builds a plaintext RTP packet directly in the transport's send buffer, then protects and sends
    /// it: the fan-out path writes each subscriber's copy once, without an intermediate buffer.
    /// - Parameters:
    ///   - build: writes the packet into the buffer it is given (at most `maxPlaintextSize` bytes) and
    ///     returns its length, or 0 to send nothing.
    /// - Returns: false when not connected or nothing was sent.
    @discardableResult
    package func sendRTP(building build: (UnsafeMutableRawBufferPointer) -> Int) -> Bool {
        guard state == .connected, let srtpOut, let address = ice.selectedAddress else { return false }
        let length: Int? = sendBuffer.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return nil }
            let plain = build(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Self.maxPlaintextSize]))
            guard plain > 0, plain <= Self.maxPlaintextSize else { return nil }
            guard let protected = try? srtpOut.protectRTP(base, length: plain, capacity: buffer.count) else { return nil }
            delegate?.transport(self, send: UnsafeRawBufferPointer(rebasing: buffer[0..<protected]), to: address)
            statistics.rtpBytesOut += plain
            return protected
        }
        guard length != nil else { return false }
        statistics.rtpPacketsOut += 1
        return true
    }

    /// The largest plaintext RTP packet ``sendRTP(building:)`` takes.
    package static let maxPlaintextSize = 1500

    @discardableResult
    package func sendRTCP(_ packets: [RTCPPacket]) -> Bool {
        let bytes = RTCPCompound.serialize(packets)
        return bytes.withUnsafeBytes { send($0, rtcp: true) }
    }

    private func send(_ packet: UnsafeRawBufferPointer, rtcp: Bool) -> Bool {
        guard state == .connected, let srtpOut, let address = ice.selectedAddress,
              packet.count + SRTPProfile.maxOverhead <= sendBuffer.count else { return false }
        let sent: Bool = sendBuffer.withUnsafeMutableBytes { buffer in
            guard let base = buffer.baseAddress else { return false }
            UnsafeMutableRawBufferPointer(rebasing: buffer[0..<packet.count]).copyMemory(from: packet)
            let length: Int
            do {
                length = rtcp ? try srtpOut.protectRTCP(base, length: packet.count, capacity: buffer.count)
                              : try srtpOut.protectRTP(base, length: packet.count, capacity: buffer.count)
            } catch {
                return false
            }
            delegate?.transport(self, send: UnsafeRawBufferPointer(rebasing: buffer[0..<length]), to: address)
            return true
        }
        if sent {
            if rtcp { statistics.rtcpPacketsOut += 1 } else {
                statistics.rtpPacketsOut += 1
                statistics.rtpBytesOut += packet.count
            }
        }
        return sent
    }

    package func close(reason: String) {
        if case .closed = state { return }
        dtls.close()
        flushDTLS(nowNanos: 0, events: false)
        state = .closed(reason)
        delegate?.transportDidClose(self, reason: reason)
    }

    private func flushDTLS(nowNanos: Int64, events: Bool = true) {
        if let address = ice.selectedAddress {
            while let d = dtls.pollDatagram() {
                d.withUnsafeBytes { delegate?.transport(self, send: $0, to: address) }
            }
        }
        guard events else { return }
        while let event = dtls.pollEvent() {
            switch event {
            case .connected(let local, let remote):
                do {
                    srtpOut = try SRTPSession(keys: local, direction: .outbound)
                    srtpIn = try SRTPSession(keys: remote, direction: .inbound)
                } catch {
                    close(reason: "SRTP setup failed: \(error)")
                    return
                }
                state = .connected
                delegate?.transportDidConnect(self)
            case .failed(let reason):
                close(reason: reason)
                return
            case .closed:
                close(reason: "peer closed DTLS")
                return
            }
        }
    }
}
