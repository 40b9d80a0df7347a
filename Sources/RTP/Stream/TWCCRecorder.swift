/// Records the arrival time of each transport-wide sequence number and builds transport-cc
/// feedback packets from them (the receiver side of draft-holmer-rmcat-transport-wide-cc-extensions-01).
///
/// Each feedback covers the sequence numbers from just after the previous feedback's last one to
/// the highest received; packets that arrive after their number was reported as lost are ignored
/// (the sender has already judged them).
package struct TWCCRecorder: Sendable {
    package var senderSSRC: UInt32
    package var mediaSSRC: UInt32
    /// Most statuses one feedback packet carries; a longer range is split.
    package var maxStatusesPerPacket = 1000
    /// Missing sequence numbers reported in a row at most; a larger jump restarts the report at
    /// the next arrival.
    package static let maxReportedGap: Int64 = 1000

    @usableFromInline var unwrapper = SequenceUnwrapper()
    /// (unwrapped sequence, arrival micros), unsorted.
    @usableFromInline var arrivals: [(seq: Int64, micros: Int64)] = []
    @usableFromInline var nextSequence: Int64?
    @usableFromInline var feedbackCount: UInt8 = 0

    package init(senderSSRC: UInt32, mediaSSRC: UInt32) {
        self.senderSSRC = senderSSRC
        self.mediaSSRC = mediaSSRC
        arrivals.reserveCapacity(256)
    }

    /// Number of arrivals not yet reported.
    package var pendingCount: Int { arrivals.count }

    /// Records that the packet with transport-wide sequence `sequenceNumber` arrived at `arrivalMicros`.
    package mutating func record(sequenceNumber: UInt16, arrivalMicros: Int64) {
        let ext = unwrapper.unwrap(sequenceNumber)
        if let next = nextSequence, ext < next { return }  // already reported
        guard arrivals.count < 16384 else { return }  // bounded if feedback is never built
        arrivals.append((ext, arrivalMicros))
    }

    /// Builds feedback for everything recorded since the last call (none if nothing new).
    package mutating func buildFeedback() -> [TransportLayerCC] {
        guard !arrivals.isEmpty else { return [] }
        arrivals.sort { $0.seq < $1.seq }
        // Drop duplicates (keep the first arrival).
        var unique: [(seq: Int64, micros: Int64)] = []
        unique.reserveCapacity(arrivals.count)
        for a in arrivals where unique.last?.seq != a.seq { unique.append(a) }
        arrivals.removeAll(keepingCapacity: true)

        var packets: [TransportLayerCC] = []
        var index = 0
        var base = max(nextSequence ?? unique[0].seq, unique[0].seq)
        if let next = nextSequence, next < unique[0].seq, unique[0].seq - next < Int64(maxStatusesPerPacket) {
            base = next  // report the leading losses too
        }
        while index < unique.count {
            // A jump far beyond any real loss burst (a peer choosing its numbers): report from the
            // arrival on instead of walking every number in between.
            if unique[index].seq - base > Self.maxReportedGap { base = unique[index].seq }
            let (packet, consumed, end) = buildOne(base: base, arrivals: unique[index...])
            packets.append(packet)
            index += consumed
            base = end
        }
        nextSequence = base
        return packets
    }

    /// One feedback packet from `base`; returns it, how many arrivals it used and the next base.
    mutating func buildOne(base: Int64, arrivals: ArraySlice<(seq: Int64, micros: Int64)>) -> (TransportLayerCC, Int, Int64) {
        let first = arrivals[arrivals.startIndex]
        // Reference time: 64 ms units, signed 24 bits (wrapping).
        let refUnits = floorDiv(first.micros, 64_000)
        var time = refUnits * 64_000
        var statuses: [UInt8] = []
        var deltas: [Int16] = []
        var used = 0
        var seq = base
        var i = arrivals.startIndex
        while i < arrivals.endIndex && statuses.count < maxStatusesPerPacket {
            let a = arrivals[i]
            if a.seq > seq {
                statuses.append(TransportLayerCC.Status.notReceived.rawValue)
                seq += 1
                continue
            }
            let delta = roundDiv(a.micros - time, 250)
            if delta >= 0 && delta <= 255 {
                statuses.append(TransportLayerCC.Status.smallDelta.rawValue)
            } else if delta >= Int64(Int16.min) && delta <= Int64(Int16.max) {
                statuses.append(TransportLayerCC.Status.largeDelta.rawValue)
            } else {
                break  // does not fit: the next packet starts here with its own reference time
            }
            deltas.append(Int16(delta))
            time += delta * 250
            seq += 1
            used += 1
            i += 1
        }
        let packet = TransportLayerCC(
            senderSSRC: senderSSRC, mediaSSRC: mediaSSRC,
            baseSequenceNumber: UInt16(truncatingIfNeeded: base),
            packetStatusCount: UInt16(statuses.count),
            referenceTime: Int32(truncatingIfNeeded: refUnits << 8) >> 8,
            feedbackPacketCount: feedbackCount,
            chunks: Self.encodeChunks(statuses), recvDeltas: deltas)
        feedbackCount &+= 1
        return (packet, used, seq)
    }

    /// Encodes statuses as chunks: run-length where a run covers the rest or at least 14
    /// statuses, otherwise a 14 x 1-bit vector when the next 14 are all 0/1, else 7 x 2-bit.
    package static func encodeChunks(_ statuses: [UInt8]) -> [TransportLayerCC.Chunk] {
        var chunks: [TransportLayerCC.Chunk] = []
        var i = 0
        while i < statuses.count {
            var run = 1
            while i + run < statuses.count && statuses[i + run] == statuses[i] && run < 0x1FFF { run += 1 }
            let remaining = statuses.count - i
            if run >= 14 || run == remaining {
                chunks.append(.runLength(status: statuses[i], length: UInt16(run)))
                i += run
                continue
            }
            let next14 = statuses[i..<min(i + 14, statuses.count)]
            if next14.allSatisfy({ $0 <= 1 }) {
                chunks.append(.statusVector(twoBit: false, statuses: Array(next14) + Array(repeating: 0, count: 14 - next14.count)))
                i += next14.count
            } else {
                let next7 = statuses[i..<min(i + 7, statuses.count)]
                chunks.append(.statusVector(twoBit: true, statuses: Array(next7) + Array(repeating: 0, count: 7 - next7.count)))
                i += next7.count
            }
        }
        return chunks
    }
}

@inline(__always) func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    a >= 0 ? a / b : -((-a + b - 1) / b)
}

@inline(__always) func roundDiv(_ a: Int64, _ b: Int64) -> Int64 {
    a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b)
}
