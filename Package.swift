// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
]

let package = Package(
    name: "sfu",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sfu", targets: ["sfu"]),
        .executable(name: "sfu-load", targets: ["sfu-load"]),
        // The protocol libraries are public API (RTP and RTCP packets, DTLS-SRTP); SFU, Recorder,
        // Control and WebRTCClient are the server's own parts and share only `package` declarations.
        .library(name: "RTP", targets: ["RTP"]),
        .library(name: "DTLS", targets: ["DTLS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.1"),
        .package(url: "https://github.com/hummingbird-project/swift-websocket", from: "1.6.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/vapor/jwt-kit", .upToNextMinor(from: "5.7.1")),
    ],
    targets: [
        // MARK: C libraries from Debian, found through pkg-config
        .systemLibrary(name: "CSRTP", pkgConfig: "libsrtp2", providers: [.apt(["libsrtp2-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "COpus", pkgConfig: "opus", providers: [.apt(["libopus-dev"])]),
        .systemLibrary(name: "CVPX", pkgConfig: "vpx", providers: [.apt(["libvpx-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        // Snapshot images (JPEG through TurboJPEG, PNG through libpng's simplified API).
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CFreeType", pkgConfig: "freetype2", providers: [.apt(["libfreetype-dev"])]),
        // H.264 decoding for snapshots (FFmpeg's libavcodec, the library behind Debian's ffmpeg).
        .systemLibrary(name: "CAVCodec", pkgConfig: "libavcodec", providers: [.apt(["libavcodec-dev"])]),
        // Function wrappers for the C macros and variadic functions Swift cannot call directly.
        .target(name: "CSFUShim", dependencies: ["COpenSSL", "CSRTP", "COpus", "CVPX"]),

        // MARK: the modules (../shared/DESIGN.md)
        .target(
            name: "RTP",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(
            name: "DTLS",
            dependencies: ["RTP", "CSRTP", "COpenSSL", "CSFUShim"],
            swiftSettings: strict
        ),
        .target(
            name: "SFU",
            dependencies: [
                "RTP", "DTLS", "CSFUShim",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The client side of WebRTC against our ICE-lite server (what sfu-load and the tests connect
        // with): not part of the server.
        .target(name: "WebRTCClient", dependencies: ["SFU", "DTLS", "RTP"], swiftSettings: strict),
        .target(
            name: "Recorder",
            dependencies: ["RTP", "SFU", "COpus", "CVPX", "CSFUShim", "CTurboJPEG", "CPNG", "CFreeType", "CAVCodec", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .target(
            name: "Control",
            dependencies: [
                "RTP", "DTLS", "SFU", "Recorder", "CLibPQ", "CSQLite",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            resources: [.copy("Public")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "sfu",
            dependencies: [
                "Control", "RTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The composite recorder's processing cost (docs/BENCHMARKS.md), without a network.
        .executableTarget(name: "composite-bench", dependencies: ["Recorder"], swiftSettings: strict),
        // The load generator and the floor forwarder (docs/BENCHMARKS.md): real WebRTC peers on UDP.
        .executableTarget(
            name: "sfu-load",
            dependencies: [
                "SFU", "DTLS", "RTP", "Recorder", "Control", "WebRTCClient", "COpenSSL", "CSFUShim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),

        // The libFuzzer harnesses (docs/FUZZING.md): the harness bodies, shared by the fuzz executable
        // and the regression test; `sfu-fuzz` runs them under libFuzzer (-DFUZZING) or replays files.
        .target(name: "FuzzHarnesses", dependencies: ["RTP", "DTLS", "SFU", "Recorder", "Control"], swiftSettings: strict),
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "sfu-fuzz", dependencies: ["FuzzHarnesses", "CLibFuzzer"], swiftSettings: strict),

        // MARK: tests
        .target(name: "TestSupport", dependencies: ["SFU", "DTLS", "RTP", "WebRTCClient", .product(name: "Logging", package: "swift-log")], path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(name: "RTPTests", dependencies: ["RTP", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "DTLSTests", dependencies: ["DTLS", "CSRTP", "COpenSSL", "CSFUShim", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "SFUTests", dependencies: ["SFU", "WebRTCClient", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "RecorderTests", dependencies: ["Recorder", "RTP", "WebRTCClient", "COpus", "CVPX", "CSFUShim", "CTurboJPEG", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "FuzzTests", dependencies: ["FuzzHarnesses"], swiftSettings: strict),
        .testTarget(
            name: "ControlTests",
            dependencies: [
                "Control", "CLibPQ",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
    ]
)
