import Foundation
import FuzzHarnesses
import Testing

/// Replays every input under Fixtures/fuzz/regressions/<harness>/ (crashes the fuzzer found, kept
/// after the fix) and the seed corpora Fixtures/fuzz/<harness>/ through the same harness functions
/// the fuzzer runs: a regression traps the test process, which fails the suite.
struct FuzzRegressionTests {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/fuzz")

    static func inputs(_ directory: URL) -> [URL] {
        let files = (try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)) ?? []
        return files.filter { !$0.hasDirectoryPath }.sorted { $0.path < $1.path }
    }

    @Test(arguments: Harness.allCases)
    func regressionsAndSeedsReplayWithoutATrap(_ harness: Harness) throws {
        let seeds = Self.inputs(Self.fuzzDirectory.appendingPathComponent(harness.rawValue))
        let regressions = Self.inputs(Self.fuzzDirectory.appendingPathComponent("regressions/\(harness.rawValue)"))
        // Every harness has a seed corpus; an empty list would mean the path is wrong, not a pass.
        #expect(!seeds.isEmpty, "no seeds for \(harness.rawValue) under \(Self.fuzzDirectory.path)")
        for file in seeds + regressions {
            harness.run([UInt8](try Data(contentsOf: file)))
        }
    }
}
