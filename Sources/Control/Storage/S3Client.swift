import AsyncHTTPClient
import DTLS
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RTP

/// Where finished recordings go (`SFU_STORAGE_URL=s3://bucket/prefix`, docs/RECORDING.md "S3
/// storage"): AWS S3, Cloudflare R2, MinIO or anything else that speaks the S3 API with SigV4.
package struct S3Configuration: Sendable, Equatable {
    package var bucket: String
    /// Keys are `<prefix>/<recording_id>/<file_name>` (no leading or trailing slash; may be empty).
    package var prefix: String
    /// `SFU_S3_ENDPOINT` (`http(s)://host[:port]`): requests go there, path-style (`/bucket/key`);
    /// nil: AWS itself, virtual-hosted (`https://bucket.s3.<region>.amazonaws.com/key`).
    package var endpoint: URL?
    package var region: String
    package var accessKey: String
    package var secretKey: String
    /// Files larger than this go up in parts of this size (S3's minimum part is 5 MiB).
    package var partSize = 8 * 1024 * 1024
    /// Attempts per file before the recording is `failed` (the local file is kept).
    package var uploadAttempts = 10
    /// The first retry's delay; each next one doubles, up to a minute.
    package var retryBaseSeconds = 1.0

    package init(bucket: String, prefix: String, endpoint: URL?, region: String, accessKey: String, secretKey: String) {
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.region = region
        self.accessKey = accessKey
        self.secretKey = secretKey
    }

    /// `s3://bucket/prefix` -> (bucket, prefix); nil for anything else.
    package static func parse(storageURL: String) -> (bucket: String, prefix: String)? {
        guard storageURL.hasPrefix("s3://") else { return nil }
        let rest = storageURL.dropFirst(5)
        let parts = rest.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bucket = parts.first, !bucket.isEmpty,
              bucket.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." }), bucket.count <= 63 else { return nil }
        let prefix = parts.count > 1 ? String(parts[1]).trimmingCharacters(in: CharacterSet(charactersIn: "/")) : ""
        return (String(bucket), prefix)
    }

    package func objectKey(recordingID: String, fileName: String) -> String {
        (prefix.isEmpty ? "" : prefix + "/") + recordingID + "/" + fileName
    }
}

/// What S3 answered when it was not a success.
package struct S3Error: Error, CustomStringConvertible, Sendable {
    package var status: Int?
    package var code: String?
    package var message: String
    package var description: String {
        "S3 " + [status.map { "\($0)" }, code, message].compactMap { $0 }.joined(separator: " ")
    }
}

/// The S3 calls recordings need, over async-http-client with SigV4 (no SDK): single PUT,
/// multipart upload (create, upload part, list parts, complete, abort), HEAD, GET (streamed, with a
/// range) and DELETE.
package struct S3Client: Sendable {
    package let configuration: S3Configuration
    let signer: SigV4
    let clock: @Sendable () -> Date
    /// The most of an answer read into memory (XML documents, error bodies).
    static let maxAnswerBytes = 4 * 1024 * 1024

    /// The client S3 requests go through: like async-http-client's shared one, except that a
    /// refused or timed-out connection fails the request at once (10 s to connect) instead of being
    /// retried until the request's deadline: an attempt against storage that is down ends quickly
    /// and the uploader's own backoff takes over. Lives as long as the process.
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(10)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    package init(configuration: S3Configuration, clock: @escaping @Sendable () -> Date = { Date() }) {
        self.configuration = configuration
        self.signer = SigV4(accessKey: configuration.accessKey, secretKey: configuration.secretKey, region: configuration.region)
        self.clock = clock
    }

    /// The request's URL (percent-encoded), `Host` value and the path that is signed.
    func target(key: String) -> (url: String, host: String, path: String) {
        if let endpoint = configuration.endpoint, let host = endpoint.host {
            let scheme = endpoint.scheme ?? "http"
            let port = endpoint.port.map { ":\($0)" } ?? ""
            let path = "/" + configuration.bucket + "/" + key
            return ("\(scheme)://\(host)\(port)" + SigV4.encode(path, keepSlash: true), host + port, path)
        }
        let host = "\(configuration.bucket).s3.\(configuration.region).amazonaws.com"
        let path = "/" + key
        return ("https://\(host)" + SigV4.encode(path, keepSlash: true), host, path)
    }

    /// A signed request. `body` is hashed for `x-amz-content-sha256`.
    func request(_ method: HTTPMethod, key: String, query: [(String, String)] = [], headers extra: [(String, String)] = [],
                 body: [UInt8] = []) -> HTTPClientRequest {
        let t = target(key: key)
        let payloadHash = body.isEmpty ? SigV4.emptyPayloadHash : hexString(SHA256Hasher.hash(body))
        let signedHeaders = [("host", t.host)] + extra
        let auth = signer.sign(method: method.rawValue, path: t.path, query: query, headers: signedHeaders, payloadHash: payloadHash, date: clock())
        let q = SigV4.canonicalQuery(query)
        var r = HTTPClientRequest(url: t.url + (q.isEmpty ? "" : "?" + q))
        r.method = method
        r.headers.add(name: "Host", value: t.host)
        for (name, value) in extra + auth { r.headers.add(name: name, value: value) }
        if !body.isEmpty { r.body = .bytes(ByteBuffer(bytes: body)) }
        return r
    }

    /// Sends `request` and reads the answer; a non-2xx answer throws its S3 error code.
    func call(_ request: HTTPClientRequest, timeout: TimeAmount = .seconds(120)) async throws -> (HTTPClientResponse, String) {
        let response: HTTPClientResponse
        do {
            response = try await Self.http.execute(request, timeout: timeout)
        } catch {
            throw S3Error(status: nil, code: nil, message: "\(error)")
        }
        let buffer = try await response.body.collect(upTo: Self.maxAnswerBytes)
        let text = String(buffer: buffer)
        guard (200..<300).contains(Int(response.status.code)) else {
            throw S3Error(status: Int(response.status.code), code: XMLText.first("Code", in: text), message: XMLText.first("Message", in: text) ?? "")
        }
        return (response, text)
    }

    package func put(key: String, bytes: [UInt8]) async throws {
        _ = try await call(request(.PUT, key: key, body: bytes), timeout: Self.timeout(bytes: bytes.count))
    }

    /// A minute, plus the time the body takes at 2 Mbit/s (a slow uplink still gets its parts up).
    static func timeout(bytes: Int) -> TimeAmount { .seconds(60 + Int64(bytes / 250_000)) }

    package func createMultipartUpload(key: String) async throws -> String {
        let (_, text) = try await call(request(.POST, key: key, query: [("uploads", "")]))
        guard let id = XMLText.first("UploadId", in: text), !id.isEmpty else {
            throw S3Error(status: nil, code: nil, message: "no UploadId in the answer to CreateMultipartUpload")
        }
        return id
    }

    /// - Returns: the part's ETag.
    package func uploadPart(key: String, uploadID: String, number: Int, bytes: [UInt8]) async throws -> String {
        let (response, _) = try await call(request(.PUT, key: key, query: [("partNumber", String(number)), ("uploadId", uploadID)], body: bytes),
                                           timeout: Self.timeout(bytes: bytes.count))
        guard let etag = response.headers.first(name: "ETag") else { throw S3Error(status: nil, code: nil, message: "no ETag for part \(number)") }
        return etag
    }

    package struct Part: Sendable, Equatable {
        package var number: Int
        package var etag: String
        package var size: Int64
    }

    /// The parts uploaded so far (all pages). Throws `NoSuchUpload` for an upload that is gone.
    package func listParts(key: String, uploadID: String) async throws -> [Part] {
        var parts: [Part] = []
        var marker: String?
        repeat {
            var query = [("uploadId", uploadID)]
            if let marker { query.append(("part-number-marker", marker)) }
            let (_, text) = try await call(request(.GET, key: key, query: query))
            for block in XMLText.all("Part", in: text) {
                guard let n = XMLText.first("PartNumber", in: block).flatMap(Int.init), let etag = XMLText.first("ETag", in: block) else { continue }
                parts.append(Part(number: n, etag: etag, size: XMLText.first("Size", in: block).flatMap { Int64($0) } ?? 0))
            }
            marker = XMLText.first("IsTruncated", in: text) == "true" ? XMLText.first("NextPartNumberMarker", in: text) : nil
        } while marker != nil
        return parts
    }

    package func completeMultipartUpload(key: String, uploadID: String, parts: [Part]) async throws {
        let xml = "<CompleteMultipartUpload>" + parts.sorted { $0.number < $1.number }.map {
            "<Part><PartNumber>\($0.number)</PartNumber><ETag>\(XMLText.escape($0.etag))</ETag></Part>"
        }.joined() + "</CompleteMultipartUpload>"
        let (_, text) = try await call(request(.POST, key: key, query: [("uploadId", uploadID)], body: Array(xml.utf8)), timeout: .seconds(600))
        // S3 may answer 200 with an error document when completing fails late.
        if text.contains("<Error>") {
            throw S3Error(status: 200, code: XMLText.first("Code", in: text), message: XMLText.first("Message", in: text) ?? "")
        }
    }

    package func abortMultipartUpload(key: String, uploadID: String) async throws {
        _ = try await call(request(.DELETE, key: key, query: [("uploadId", uploadID)]))
    }

    /// The object's size, nil when there is no such object.
    package func size(key: String) async throws -> Int64? {
        do {
            let (response, _) = try await call(request(.HEAD, key: key))
            return response.headers.first(name: "Content-Length").flatMap { Int64($0) }
        } catch let e as S3Error where e.status == 404 {
            return nil
        }
    }

    package func delete(key: String) async throws {
        _ = try await call(request(.DELETE, key: key))
    }

    /// The object's bytes as S3 sends them (the body not read yet: the caller streams it), with
    /// `range` passed on as the `Range` header. Any status is returned (200, 206, 416...).
    package func get(key: String, range: String?) async throws -> HTTPClientResponse {
        let r = request(.GET, key: key, headers: range.map { [("range", $0)] } ?? [])
        do {
            return try await Self.http.execute(r, timeout: .seconds(3600))
        } catch {
            throw S3Error(status: nil, code: nil, message: "\(error)")
        }
    }
}

/// The few elements read from S3's XML answers (UploadId, Part, Code...): S3 documents are flat and
/// machine-written, so elements are found by their tags; entities are decoded.
package enum XMLText {
    /// The contents of every `<tag>...</tag>`, in order.
    package static func all(_ tag: String, in text: String) -> [String] {
        var out: [String] = []
        var rest = text[...]
        let open = "<\(tag)>", close = "</\(tag)>"
        while let start = rest.range(of: open), let end = rest[start.upperBound...].range(of: close) {
            out.append(unescape(String(rest[start.upperBound..<end.lowerBound])))
            rest = rest[end.upperBound...]
        }
        return out
    }

    package static func first(_ tag: String, in text: String) -> String? { all(tag, in: text).first }

    package static func unescape(_ s: String) -> String {
        guard s.contains("&") else { return s }
        return s.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&#34;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
    }

    package static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
