import DTLS
import Foundation
import RTP

/// AWS Signature Version 4 for S3 requests (docs.aws.amazon.com/AmazonS3/latest/API/
/// sig-v4-header-based-auth.html, sigv4-query-string-auth.html), pure: what to sign in, headers or
/// a query string out. Tested against the AWS documentation's examples (SigV4Tests).
package struct SigV4: Sendable {
    package var accessKey: String
    package var secretKey: String
    package var region: String
    package var service = "s3"

    package init(accessKey: String, secretKey: String, region: String) {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.region = region
    }

    /// `x-amz-content-sha256` of an empty body.
    package static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    package static let unsignedPayload = "UNSIGNED-PAYLOAD"

    /// The headers that authenticate a request: `x-amz-date`, `x-amz-content-sha256` and
    /// `Authorization` (to add to `headers`, which must hold `host` and anything else to sign).
    /// - Parameters:
    ///   - path: the object's path as stored (`/bucket/key` or `/key`), not yet percent-encoded.
    ///   - query: decoded names and values.
    package func sign(method: String, path: String, query: [(String, String)] = [], headers: [(String, String)],
                      payloadHash: String, date: Date) -> [(String, String)] {
        let amzDate = Self.amzDate(date)
        var all = headers.map { ($0.0.lowercased(), Self.trim($0.1)) }
        all.append(("x-amz-date", amzDate))
        all.append(("x-amz-content-sha256", payloadHash))
        let (canonicalHeaders, signed) = Self.canonicalHeaders(all)
        let canonical = [method, Self.canonicalURI(path), Self.canonicalQuery(query), canonicalHeaders, signed, payloadHash].joined(separator: "\n")
        let scope = "\(amzDate.prefix(8))/\(region)/\(service)/aws4_request"
        let signature = self.signature(canonical: canonical, amzDate: amzDate, scope: scope)
        return [("x-amz-date", amzDate), ("x-amz-content-sha256", payloadHash),
                ("Authorization", "AWS4-HMAC-SHA256 Credential=\(accessKey)/\(scope),SignedHeaders=\(signed),Signature=\(signature)")]
    }

    /// A presigned URL's query string (everything after `?`): `X-Amz-*` parameters with the
    /// signature, valid for `expires` seconds from `date`; only `host` is signed.
    package func presignedQuery(method: String, host: String, path: String, query: [(String, String)] = [], expires: Int, date: Date) -> String {
        let amzDate = Self.amzDate(date)
        let scope = "\(amzDate.prefix(8))/\(region)/\(service)/aws4_request"
        var q = query
        q.append(("X-Amz-Algorithm", "AWS4-HMAC-SHA256"))
        q.append(("X-Amz-Credential", "\(accessKey)/\(scope)"))
        q.append(("X-Amz-Date", amzDate))
        q.append(("X-Amz-Expires", String(expires)))
        q.append(("X-Amz-SignedHeaders", "host"))
        let (canonicalHeaders, signed) = Self.canonicalHeaders([("host", host)])
        let canonicalQuery = Self.canonicalQuery(q)
        let canonical = [method, Self.canonicalURI(path), canonicalQuery, canonicalHeaders, signed, Self.unsignedPayload].joined(separator: "\n")
        return canonicalQuery + "&X-Amz-Signature=" + signature(canonical: canonical, amzDate: amzDate, scope: scope)
    }

    private func signature(canonical: String, amzDate: String, scope: String) -> String {
        let toSign = ["AWS4-HMAC-SHA256", amzDate, scope, hexString(SHA256Hasher.hash(Array(canonical.utf8)))].joined(separator: "\n")
        var key = Self.hmac(Array(("AWS4" + secretKey).utf8), String(amzDate.prefix(8)))
        for part in [region, service, "aws4_request"] { key = Self.hmac(key, part) }
        return hexString(Self.hmac(key, toSign))
    }

    static func hmac(_ key: [UInt8], _ message: String) -> [UInt8] {
        HMAC(digest: .sha256, key: key)?.authenticate(Array(message.utf8)) ?? []
    }

    /// `yyyyMMddTHHmmssZ` in UTC.
    package static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(tm.tm_year + 1900)\(two(tm.tm_mon + 1))\(two(tm.tm_mday))T\(two(tm.tm_hour))\(two(tm.tm_min))\(two(tm.tm_sec))Z"
    }

    /// RFC 3986 percent-encoding of everything but the unreserved characters (and `/` when kept).
    package static func encode(_ s: String, keepSlash: Bool = false) -> String {
        var out = ""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }

    static func canonicalURI(_ path: String) -> String {
        let p = path.hasPrefix("/") ? path : "/" + path
        return encode(p, keepSlash: true)
    }

    static func canonicalQuery(_ query: [(String, String)]) -> String {
        var pairs: [(name: String, value: String)] = query.map { (encode($0.0), encode($0.1)) }
        pairs.sort { a, b in a.name == b.name ? a.value < b.value : a.name < b.name }
        return pairs.map { $0.name + "=" + $0.value }.joined(separator: "&")
    }

    /// `name:value\n` lines sorted by name (values of a repeated name joined by commas), and the
    /// signed-headers list.
    static func canonicalHeaders(_ headers: [(String, String)]) -> (String, String) {
        var merged: [String: [String]] = [:]
        for (name, value) in headers { merged[name.lowercased(), default: []].append(trim(value)) }
        let names = merged.keys.sorted()
        let lines = names.map { "\($0):\(merged[$0]?.joined(separator: ",") ?? "")\n" }.joined()
        return (lines, names.joined(separator: ";"))
    }

    /// Leading and trailing spaces removed, runs of spaces made one.
    static func trim(_ value: String) -> String {
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ").trimmingCharacters(in: .whitespaces)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
