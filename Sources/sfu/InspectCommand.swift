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
            throw InspectError(message: "cannot read \(file)")
        }
        let pcap: PcapFile
        do {
            pcap = try PcapFile(bytes: [UInt8](data))
        } catch {
            throw InspectError(message: "\(file): \(error.description)")
        }
        let ports = Set(udpPorts.map { UInt16($0) })
        var out = ""
        out.reserveCapacity(1 << 16)
        var frames = pcap.frames
        while let frame = frames.next() {
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
        if frames.truncated {
            FileHandle.standardError.write(Data("warning: \(file) ends inside a packet record after frame \(frames.count); the partial record was ignored\n".utf8))
        }
    }
}

/// A failure that is not about usage: printed as "Error: ..." without the usage text, exit 1.
struct InspectError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
