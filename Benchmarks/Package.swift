// swift-tools-version: 6.1
// Benchmarks live in their own package so the main build (and `make test`) does not compile
// the benchmark framework. Run them with `make bench` (scripts/bench.sh).
import PackageDescription

let package = Package(
    name: "sfu-benchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(path: ".."),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "RTPBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RTP", package: "main"),
            ],
            path: "Benchmarks/RTPBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "TransportBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "DTLS", package: "main"),
                .product(name: "SFU", package: "main"),
            ],
            path: "Benchmarks/TransportBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "RoomBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "DTLS", package: "main"),
                .product(name: "RTP", package: "main"),
                .product(name: "SFU", package: "main"),
                .product(name: "WebRTCClient", package: "main"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/RoomBenchmarks",
            swiftSettings: [.swiftLanguageMode(.v6)],
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
