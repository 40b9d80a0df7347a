import RTP
import SFU

/// Catches one fresh keyframe (VP8 or H.264) of a producer for a snapshot: taps the producer (so it sees the
/// stream the recorder would, the highest simulcast layer that sends), asks the publisher for a
/// keyframe, and hands the first whole keyframe to `onKeyframe`, then detaches. Confined to the
/// room's loop; the caller times it out with ``cancel()``.
package final class SnapshotTap: ProducerTap {
    package let producer: Producer
    private var assembler: FrameAssembler
    private var onKeyframe: ((AssembledFrame) -> Void)?

    /// Starts watching `producer` (VP8 or H.264 video: the caller checks).
    package init(producer: Producer, nowNanos: Int64, onKeyframe: @escaping (AssembledFrame) -> Void) {
        self.producer = producer
        assembler = FrameAssembler(codec: .init(producer.codec))
        self.onKeyframe = onKeyframe
        producer.taps.append(self)
        producer.requestKeyframe(nowNanos: nowNanos)
    }

    package var isDone: Bool { onKeyframe == nil }

    package func producer(_ producer: Producer, didReceive packet: UnsafeRawBufferPointer, header: RTPHeader, nowNanos: Int64) {
        guard onKeyframe != nil, header.payloadLength > 0 else { return }
        let payload = UnsafeRawBufferPointer(rebasing: packet[header.payloadRange])
        let frames = assembler.push(sequenceNumber: header.sequenceNumber, timestamp: header.timestamp, marker: header.marker,
                                    payload: payload, nowNanos: nowNanos) + assembler.poll(nowNanos: nowNanos)
        if assembler.wantsKeyframe {
            assembler.keyframeRequested()
            producer.requestKeyframe(nowNanos: nowNanos)
        }
        // The assembler gives out nothing before a keyframe: the first frame is the one to decode.
        guard let frame = frames.first(where: \.keyframe), let done = onKeyframe else { return }
        cancel()
        done(frame)
    }

    /// Detaches without a result (timeout, or the producer went away).
    package func cancel() {
        onKeyframe = nil
        producer.taps.removeAll { $0 === self }
    }
}
