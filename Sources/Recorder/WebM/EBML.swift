/// EBML (RFC 8794) encoding: element ids, variable-size integers and elements, appended to a byte
/// array. Only what the WebM writer needs.
enum EBML {
    /// The "unknown size" marker for a master element written before its size is known (8 bytes).
    static let unknownSize: [UInt8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]

    /// An element id (ids carry their own length marker: write the bytes as they are).
    static func appendID(_ id: UInt32, to out: inout [UInt8]) {
        if id > 0xFF_FFFF { out.append(UInt8(id >> 24)) }
        if id > 0xFFFF { out.append(UInt8(truncatingIfNeeded: id >> 16)) }
        if id > 0xFF { out.append(UInt8(truncatingIfNeeded: id >> 8)) }
        out.append(UInt8(truncatingIfNeeded: id))
    }

    /// A size as the shortest variable-size integer (or `width` bytes).
    static func appendSize(_ size: UInt64, to out: inout [UInt8], width: Int? = nil) {
        var length = 1
        while length < 8, size >= (UInt64(1) << (7 * UInt64(length))) - 1 { length += 1 }
        if let width { length = max(length, width) }
        let marked = size | (UInt64(1) << (7 * UInt64(length)))
        for i in stride(from: length - 1, through: 0, by: -1) { out.append(UInt8(truncatingIfNeeded: marked >> (8 * UInt64(i)))) }
    }

    static func element(_ id: UInt32, _ body: [UInt8], to out: inout [UInt8]) {
        appendID(id, to: &out)
        appendSize(UInt64(body.count), to: &out)
        out.append(contentsOf: body)
    }

    static func uint(_ id: UInt32, _ value: UInt64, to out: inout [UInt8]) {
        var bytes: [UInt8] = []
        var v = value
        repeat {
            bytes.insert(UInt8(truncatingIfNeeded: v), at: 0)
            v >>= 8
        } while v > 0
        element(id, bytes, to: &out)
    }

    static func float(_ id: UInt32, _ value: Double, to out: inout [UInt8]) {
        let bits = value.bitPattern
        element(id, (0..<8).map { UInt8(truncatingIfNeeded: bits >> (8 * UInt64(7 - $0))) }, to: &out)
    }

    static func string(_ id: UInt32, _ value: String, to out: inout [UInt8]) {
        element(id, Array(value.utf8), to: &out)
    }

    /// A master element whose body `build` writes.
    static func master(_ id: UInt32, to out: inout [UInt8], _ build: (inout [UInt8]) -> Void) {
        var body: [UInt8] = []
        build(&body)
        element(id, body, to: &out)
    }
}

/// Matroska/WebM element ids used here.
enum MKV {
    static let ebml: UInt32 = 0x1A45_DFA3
    static let ebmlVersion: UInt32 = 0x4286
    static let ebmlReadVersion: UInt32 = 0x42F7
    static let ebmlMaxIDLength: UInt32 = 0x42F2
    static let ebmlMaxSizeLength: UInt32 = 0x42F3
    static let docType: UInt32 = 0x4282
    static let docTypeVersion: UInt32 = 0x4287
    static let docTypeReadVersion: UInt32 = 0x4285
    static let segment: UInt32 = 0x1853_8067
    static let info: UInt32 = 0x1549_A966
    static let timecodeScale: UInt32 = 0x2A_D7B1
    static let duration: UInt32 = 0x4489
    static let muxingApp: UInt32 = 0x4D80
    static let writingApp: UInt32 = 0x5741
    static let dateUTC: UInt32 = 0x4461
    static let tracks: UInt32 = 0x1654_AE6B
    static let trackEntry: UInt32 = 0xAE
    static let trackNumber: UInt32 = 0xD7
    static let trackUID: UInt32 = 0x73C5
    static let trackType: UInt32 = 0x83
    static let flagLacing: UInt32 = 0x9C
    static let codecID: UInt32 = 0x86
    static let codecPrivate: UInt32 = 0x63A2
    static let codecDelay: UInt32 = 0x56AA
    static let seekPreRoll: UInt32 = 0x56BB
    static let video: UInt32 = 0xE0
    static let pixelWidth: UInt32 = 0xB0
    static let pixelHeight: UInt32 = 0xBA
    static let audio: UInt32 = 0xE1
    static let samplingFrequency: UInt32 = 0xB5
    static let channels: UInt32 = 0x9F
    static let cluster: UInt32 = 0x1F43_B675
    static let timecode: UInt32 = 0xE7
    static let simpleBlock: UInt32 = 0xA3
    static let cues: UInt32 = 0x1C53_BB6B
    static let cuePoint: UInt32 = 0xBB
    static let cueTime: UInt32 = 0xB3
    static let cueTrackPositions: UInt32 = 0xB7
    static let cueTrack: UInt32 = 0xF7
    static let cueClusterPosition: UInt32 = 0xF1
    static let void: UInt32 = 0xEC
}
