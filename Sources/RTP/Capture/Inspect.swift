/// Renders datagrams as the JSON lines `sfu inspect pcap` prints (docs/INSPECT.md): what the
/// library's parsers make of each packet, in a stable key order so output can be diffed.
package enum PacketInspector {
    /// The JSON object for one UDP payload taken from frame `frame`.
    package static func describe<C: Collection>(_ payload: C, frame: Int) -> String where C.Element == UInt8 {
        let bytes = Array(payload)
        return bytes.withUnsafeBytes { raw in describe(raw, frame: frame).rendered }
    }

    static func describe(_ raw: UnsafeRawBufferPointer, frame: Int) -> JSON {
        let kind = PacketClass(classifying: raw)
        do throws(RTPParseError) {
            switch kind {
            case .rtp: return try describeRTP(raw, frame: frame)
            case .rtcp: return try describeRTCP(raw, frame: frame)
            default: break
            }
        } catch {
            return .object([("type", "other"), ("frame", .int(frame)), ("size", .int(raw.count)),
                             ("error", .string(describe(error: error, kind: kind)))])
        }
        return .object([("type", "other"), ("frame", .int(frame)), ("size", .int(raw.count))])
    }

    static func describe(error: RTPParseError, kind: PacketClass) -> String {
        let what = kind == .rtp ? "RTP" : "RTCP"
        switch error {
        case .truncated(let needed, let available): return "\(what): truncated (needs \(needed) bytes, has \(available))"
        case .badVersion(let v): return "\(what): version \(v)"
        case .badPadding: return "\(what): bad padding"
        case .badLength: return "\(what): bad length"
        case .invalidField(let f): return "\(what): \(f)"
        }
    }

    static func describeRTP(_ raw: UnsafeRawBufferPointer, frame: Int) throws(RTPParseError) -> JSON {
        let h = try RTPHeader(parsing: raw)
        var extensions: [JSON] = []
        if h.hasExtension {
            switch RTPExtensionForm(profile: h.extensionProfile) {
            case .oneByte, .twoByte:
                for e in h.extensions(in: raw) {
                    extensions.append(.object([("id", .int(Int(e.id))), ("length", .int(e.range.count)),
                                               ("value_hex", .string(hexString(raw[e.range])))]))
                }
            case .other:
                extensions.append(.object([("id", 0), ("length", .int(h.extensionLength)),
                                           ("value_hex", .string(hexString(raw[h.extensionRange])))]))
            }
        }
        return .object([
            ("type", "rtp"), ("frame", .int(frame)), ("version", 2), ("padding", .bool(h.padding)),
            ("marker", .bool(h.marker)), ("payload_type", .int(Int(h.payloadType))),
            ("sequence_number", .int(Int(h.sequenceNumber))), ("timestamp", .uint(UInt64(h.timestamp))),
            ("ssrc", .uint(UInt64(h.ssrc))),
            ("csrcs", .array((0..<Int(h.csrcCount)).map { .uint(UInt64(h.csrc($0, in: raw))) })),
            ("extensions", .array(extensions)), ("payload_size", .int(h.payloadLength)),
        ])
    }

    static func describeRTCP(_ raw: UnsafeRawBufferPointer, frame: Int) throws(RTPParseError) -> JSON {
        let packets = try RTCPCompound.parse(raw)
        return .object([("type", "rtcp"), ("frame", .int(frame)), ("packets", .array(packets.map(describe)))])
    }

    static func u(_ v: UInt32) -> JSON { .uint(UInt64(v)) }

    static func reports(_ blocks: [ReceptionReport]) -> JSON {
        .array(blocks.map { r in
            .object([("ssrc", u(r.ssrc)), ("fraction_lost", .int(Int(r.fractionLost))),
                     ("cumulative_lost", .int(Int(r.cumulativeLost))), ("highest_sequence", u(r.highestSequence)),
                     ("jitter", u(r.jitter)), ("last_sr", u(r.lastSR)), ("delay_since_last_sr", u(r.delaySinceLastSR))])
        })
    }

    static func describe(_ packet: RTCPPacket) -> JSON {
        let pt: (String) -> [(String, JSON)] = { name in
            [("packet_type", .int(Int(packet.packetType))), ("name", .string(name))]
        }
        switch packet {
        case .senderReport(let p):
            return .object(pt("sr") + [("ssrc", u(p.ssrc)), ("ntp_time", .uint(p.ntpTime)), ("rtp_time", u(p.rtpTime)),
                                        ("packet_count", u(p.packetCount)), ("octet_count", u(p.octetCount)),
                                        ("reports", reports(p.reports))])
        case .receiverReport(let p):
            return .object(pt("rr") + [("ssrc", u(p.ssrc)), ("reports", reports(p.reports))])
        case .sourceDescription(let p):
            return .object(pt("sdes") + [("chunks", .array(p.chunks.map { c in
                .object([("ssrc", u(c.ssrc)), ("items", .array(c.items.map { i in
                    .object([("type", .int(Int(i.type))), ("text", .string(i.text))])
                }))])
            }))])
        case .goodbye(let p):
            return .object(pt("bye") + [("sources", .array(p.sources.map(u))),
                                         ("reason", p.reasonText.map { .string($0) } ?? .null)])
        case .applicationDefined(let p):
            return .object(pt("app") + [("subtype", .int(Int(p.subtype))), ("ssrc", u(p.ssrc)),
                                         ("app_name", .string(p.nameText)), ("data_hex", .string(hexString(p.data)))])
        case .nack(let p):
            return .object(pt("nack") + [("fmt", .int(Int(GenericNACK.fmt))), ("sender_ssrc", u(p.senderSSRC)),
                                          ("media_ssrc", u(p.mediaSSRC)),
                                          ("nacks", .array(p.pairs.map { .object([("packet_id", .int(Int($0.packetID))), ("lost_bitmask", .int(Int($0.lostBitmask)))]) })),
                                          ("lost", .array(p.sequenceNumbers.map { .int(Int($0)) }))])
        case .transportCC(let p):
            let chunks: [JSON] = p.chunks.map { c in
                switch c {
                case .runLength(let status, let length):
                    return .object([("kind", "run_length"), ("status", .int(Int(status))), ("run_length", .int(Int(length)))])
                case .statusVector(let twoBit, let symbols):
                    return .object([("kind", "status_vector"), ("symbol_size", .int(twoBit ? 2 : 1)),
                                    ("symbols", .array(symbols.map { .int(Int($0)) }))])
                }
            }
            return .object(pt("twcc") + [("fmt", .int(Int(TransportLayerCC.fmt))), ("sender_ssrc", u(p.senderSSRC)),
                                          ("media_ssrc", u(p.mediaSSRC)), ("base_sequence_number", .int(Int(p.baseSequenceNumber))),
                                          ("packet_status_count", .int(Int(p.packetStatusCount))),
                                          ("reference_time", .int(Int(p.referenceTime))),
                                          ("feedback_packet_count", .int(Int(p.feedbackPacketCount))),
                                          ("chunks", .array(chunks)), ("statuses", .array(p.statuses.map { .int(Int($0)) })),
                                          ("recv_deltas", .array(p.recvDeltas.map { .int(Int($0)) }))])
        case .pli(let p):
            return .object(pt("pli") + [("fmt", .int(Int(PictureLossIndication.fmt))), ("sender_ssrc", u(p.senderSSRC)),
                                         ("media_ssrc", u(p.mediaSSRC))])
        case .fir(let p):
            return .object(pt("fir") + [("fmt", .int(Int(FullIntraRequest.fmt))), ("sender_ssrc", u(p.senderSSRC)),
                                         ("media_ssrc", u(p.mediaSSRC)),
                                         ("entries", .array(p.entries.map { .object([("ssrc", u($0.ssrc)), ("sequence_number", .int(Int($0.sequenceNumber)))]) }))])
        case .remb(let p):
            return .object(pt("remb") + [("fmt", .int(Int(ReceiverEstimatedMaximumBitrate.fmt))), ("sender_ssrc", u(p.senderSSRC)),
                                          ("media_ssrc", 0), ("bitrate", .uint(p.bitrate)), ("exponent", .int(Int(p.exponent))),
                                          ("mantissa", u(p.mantissa)), ("ssrcs", .array(p.ssrcs.map(u)))])
        case .extendedReport(let p):
            let blocks: [JSON] = p.blocks.map { b in
                switch b {
                case .receiverReferenceTime(let ntp):
                    return .object([("block_type", 4), ("ntp_time", .uint(ntp))])
                case .dlrr(let items):
                    return .object([("block_type", 5), ("items", .array(items.map {
                        .object([("ssrc", u($0.ssrc)), ("last_rr", u($0.lastRR)), ("delay_since_last_rr", u($0.delaySinceLastRR))])
                    }))])
                case .other(let type, let specific, let data):
                    return .object([("block_type", .int(Int(type))), ("type_specific", .int(Int(specific))),
                                    ("data_hex", .string(hexString(data)))])
                }
            }
            return .object(pt("xr") + [("ssrc", u(p.senderSSRC)), ("blocks", .array(blocks))])
        case .raw(let p):
            return .object(pt("unknown") + [("count", .int(Int(p.header.count))),
                                             ("data_hex", .string(hexString(p.bytes.dropFirst(RTCPHeader.size))))])
        }
    }
}

/// A JSON value with ordered object keys; enough for `sfu inspect`, no Foundation needed.
enum JSON: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case null
    case bool(Bool)
    case int(Int)
    case uint(UInt64)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    init(stringLiteral value: String) { self = .string(value) }
    init(integerLiteral value: Int) { self = .int(value) }

    var rendered: String {
        var out = ""
        render(into: &out)
        return out
    }

    func render(into out: inout String) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .uint(let u): out += String(u)
        case .string(let s): JSON.escape(s, into: &out)
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.render(into: &out)
            }
            out += "]"
        case .object(let members):
            out += "{"
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out += "," }
                JSON.escape(key, into: &out)
                out += ":"
                value.render(into: &out)
            }
            out += "}"
        }
    }

    static func escape(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }
}
