/// One packet of an RTCP compound packet.
public enum RTCPPacket: Sendable, Equatable {
    case senderReport(SenderReport)
    case receiverReport(ReceiverReport)
    case sourceDescription(SourceDescription)
    case goodbye(Goodbye)
    case applicationDefined(ApplicationDefined)
    case nack(GenericNACK)
    case transportCC(TransportLayerCC)
    case pli(PictureLossIndication)
    case fir(FullIntraRequest)
    case remb(ReceiverEstimatedMaximumBitrate)
    case extendedReport(ExtendedReport)
    /// Any other type or feedback format, kept whole.
    case raw(RawRTCPPacket)

    /// Parses one packet whose bytes (header included, padding excluded) are `bytes`.
    init(parsing bytes: UnsafeRawBufferPointer, header: RTCPHeader) throws(RTPParseError) {
        switch (header.packetType, header.count) {
        case (RTCPPacketType.senderReport, _): self = .senderReport(try SenderReport(parsing: bytes, header: header))
        case (RTCPPacketType.receiverReport, _): self = .receiverReport(try ReceiverReport(parsing: bytes, header: header))
        case (RTCPPacketType.sourceDescription, _): self = .sourceDescription(try SourceDescription(parsing: bytes, header: header))
        case (RTCPPacketType.goodbye, _): self = .goodbye(try Goodbye(parsing: bytes, header: header))
        case (RTCPPacketType.applicationDefined, _): self = .applicationDefined(try ApplicationDefined(parsing: bytes, header: header))
        case (RTCPPacketType.transportFeedback, GenericNACK.fmt): self = .nack(try GenericNACK(parsing: bytes))
        case (RTCPPacketType.transportFeedback, TransportLayerCC.fmt): self = .transportCC(try TransportLayerCC(parsing: bytes))
        case (RTCPPacketType.payloadFeedback, PictureLossIndication.fmt): self = .pli(try PictureLossIndication(parsing: bytes))
        case (RTCPPacketType.payloadFeedback, FullIntraRequest.fmt): self = .fir(try FullIntraRequest(parsing: bytes))
        case (RTCPPacketType.payloadFeedback, ReceiverEstimatedMaximumBitrate.fmt) where ReceiverEstimatedMaximumBitrate.isREMB(bytes):
            self = .remb(try ReceiverEstimatedMaximumBitrate(parsing: bytes))
        case (RTCPPacketType.extendedReport, _): self = .extendedReport(try ExtendedReport(parsing: bytes))
        default: self = .raw(RawRTCPPacket(header: header, bytes: Array(bytes)))
        }
    }

    public func serialize(into out: inout [UInt8]) {
        switch self {
        case .senderReport(let p): p.serialize(into: &out)
        case .receiverReport(let p): p.serialize(into: &out)
        case .sourceDescription(let p): p.serialize(into: &out)
        case .goodbye(let p): p.serialize(into: &out)
        case .applicationDefined(let p): p.serialize(into: &out)
        case .nack(let p): p.serialize(into: &out)
        case .transportCC(let p): p.serialize(into: &out)
        case .pli(let p): p.serialize(into: &out)
        case .fir(let p): p.serialize(into: &out)
        case .remb(let p): p.serialize(into: &out)
        case .extendedReport(let p): p.serialize(into: &out)
        case .raw(let p): p.serialize(into: &out)
        }
    }

    /// The RTCP packet type (200-207, or another for raw packets).
    public var packetType: UInt8 {
        switch self {
        case .senderReport: RTCPPacketType.senderReport
        case .receiverReport: RTCPPacketType.receiverReport
        case .sourceDescription: RTCPPacketType.sourceDescription
        case .goodbye: RTCPPacketType.goodbye
        case .applicationDefined: RTCPPacketType.applicationDefined
        case .nack, .transportCC: RTCPPacketType.transportFeedback
        case .pli, .fir, .remb: RTCPPacketType.payloadFeedback
        case .extendedReport: RTCPPacketType.extendedReport
        case .raw(let p): p.header.packetType
        }
    }
}
