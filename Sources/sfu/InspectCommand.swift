import ArgumentParser
import Foundation
import RTP

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Decode captured traffic with the SFU's own parsers.",
        subcommands: [InspectPcap.self]
    )
}

struct InspectPcap: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pcap",
        abstract: "Print every UDP datagram of a classic pcap file as one JSON line (docs/INSPECT.md)."
    )

    @Argument(help: "A classic libpcap file (Ethernet, Linux cooked, loopback or raw IP link type).")
    var file: String

    @Option(name: .customLong("udp-port"), help: "Keep only datagrams to or from this UDP port (repeatable; default: all UDP).")
    var udpPorts: [Int] = []

    func validate() throws {
        for port in udpPorts where !(0...65535).contains(port) {
            throw ValidationError("--udp-port \(port) is not a UDP port")
        }
    }

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ValidationError("cannot read \(file)")
        }
        let pcap: PcapFile
        do {
            pcap = try PcapFile(bytes: [UInt8](data))
        } catch {
            throw ValidationError("\(file): \(error.description)")
        }
        let ports = Set(udpPorts.map { UInt16($0) })
        var out = ""
        out.reserveCapacity(1 << 16)
        for frame in pcap.frames {
            guard let datagram = pcap.udpDatagram(in: frame) else { continue }
            if !ports.isEmpty, !ports.contains(datagram.sourcePort), !ports.contains(datagram.destinationPort) {
                continue
            }
            out += PacketInspector.describe(datagram.payload, frame: datagram.frame)
            out += "\n"
            if out.utf8.count > 1 << 16 {
                FileHandle.standardOutput.write(Data(out.utf8))
                out.removeAll(keepingCapacity: true)
            }
        }
        FileHandle.standardOutput.write(Data(out.utf8))
    }
}
