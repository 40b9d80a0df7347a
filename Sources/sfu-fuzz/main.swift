// The fuzz harnesses' executable (docs/FUZZING.md).
//
// Fuzz build (`scripts/fuzz.sh`: -sanitize=fuzzer,address -DFUZZING): libFuzzer's driver runs the
// harness named by SFU_FUZZ_HARNESS, with libFuzzer's own command line (corpus dirs, -runs=, ...).
// Normal build: replays files through a harness, `sfu-fuzz <harness> <file or dir>...`, so a crash
// input can be checked and debugged without the fuzz toolchain.
import Foundation
import FuzzHarnesses

#if FUZZING
import CLibFuzzer

nonisolated(unsafe) var selected: Harness = .rtp

guard let name = ProcessInfo.processInfo.environment["SFU_FUZZ_HARNESS"], let harness = Harness(rawValue: name) else {
    FileHandle.standardError.write(Data("set SFU_FUZZ_HARNESS to one of: \(Harness.allCases.map(\.rawValue).joined(separator: " "))\n".utf8))
    exit(2)
}
selected = harness
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
/// libFuzzer's archive brings its own `main` (which SwiftPM's `--defsym main=sfu_fuzz_main` overrides)
/// and that `main` needs this symbol; it is also the callback handed to the driver.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    selected.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
#else
let arguments = CommandLine.arguments.dropFirst()
guard let name = arguments.first, let harness = Harness(rawValue: name), arguments.count >= 2 else {
    FileHandle.standardError.write(Data("""
        usage: sfu-fuzz <harness> <file or directory>...   (replays inputs through a harness)
        harnesses: \(Harness.allCases.map(\.rawValue).joined(separator: " "))
        fuzzing itself: scripts/fuzz.sh (docs/FUZZING.md)

        """.utf8))
    exit(2)
}
var count = 0
for path in arguments.dropFirst() {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        FileHandle.standardError.write(Data("no such file: \(path)\n".utf8))
        exit(1)
    }
    let files = isDirectory.boolValue
        ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 }
        : [path]
    for file in files {
        guard let data = FileManager.default.contents(atPath: file) else { continue }
        harness.run([UInt8](data))
        count += 1
    }
}
print("\(harness.rawValue): \(count) inputs replayed, no crash")
#endif
