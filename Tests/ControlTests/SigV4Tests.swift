import DTLS
import Foundation
import RTP
import Testing
@testable import Control

/// The S3 request signer against the examples in the AWS documentation ("Signature Calculations for
/// the Authorization Header" and "Authenticating Requests: Using Query Parameters", Amazon S3 API
/// reference): the example credentials, bucket `examplebucket`, 24 May 2013 00:00:00 UTC.
@Suite("SigV4 (the AWS documentation's examples)")
struct SigV4Tests {
    static let signer = SigV4(accessKey: "AKIAIOSFODNN7EXAMPLE", secretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", region: "us-east-1")
    static let date = Date(timeIntervalSince1970: 1_369_353_600)
    static let host = "examplebucket.s3.amazonaws.com"

    static func signature(_ headers: [(String, String)]) -> String? {
        headers.first { $0.0 == "Authorization" }?.1.components(separatedBy: "Signature=").last
    }

    @Test func getObjectWithARange() {
        let h = Self.signer.sign(method: "GET", path: "/test.txt", headers: [("Host", Self.host), ("Range", "bytes=0-9")],
                                 payloadHash: SigV4.emptyPayloadHash, date: Self.date)
        #expect(h.first { $0.0 == "Authorization" }?.1 == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(h.first { $0.0 == "x-amz-date" }?.1 == "20130524T000000Z")
    }

    @Test func putObjectWithAStorageClass() {
        let body = Array("Welcome to Amazon S3.".utf8)
        let hash = hexString(SHA256Hasher.hash(body))
        #expect(hash == "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072")
        let h = Self.signer.sign(method: "PUT", path: "/test$file.text",
                                 headers: [("Host", Self.host), ("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
                                 payloadHash: hash, date: Self.date)
        #expect(Self.signature(h) == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")
    }

    @Test func getBucketLifecycleAndListObjects() {
        let lifecycle = Self.signer.sign(method: "GET", path: "/", query: [("lifecycle", "")], headers: [("Host", Self.host)],
                                         payloadHash: SigV4.emptyPayloadHash, date: Self.date)
        #expect(Self.signature(lifecycle) == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
        let list = Self.signer.sign(method: "GET", path: "/", query: [("prefix", "J"), ("max-keys", "2")], headers: [("Host", Self.host)],
                                    payloadHash: SigV4.emptyPayloadHash, date: Self.date)
        #expect(Self.signature(list) == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
    }

    @Test func presignedGet() {
        let q = Self.signer.presignedQuery(method: "GET", host: Self.host, path: "/test.txt", expires: 86_400, date: Self.date)
        #expect(q == "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
                + "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
                + "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    }

    @Test func encodingKeepsOnlyUnreservedCharacters() {
        #expect(SigV4.encode("a b/c~d_e.f-g+h=é") == "a%20b%2Fc~d_e.f-g%2Bh%3D%C3%A9")
        #expect(SigV4.encode("/rec_1/user-pe_2.webm", keepSlash: true) == "/rec_1/user-pe_2.webm")
    }
}

/// The S3 client's pure parts: the storage URL, object keys, request targets and the XML it reads.
@Suite("S3 configuration and answers")
struct S3PiecesTests {
    @Test func storageURLs() {
        #expect(S3Configuration.parse(storageURL: "s3://clinic-recordings/eu/site-1/") ?? ("", "x") == ("clinic-recordings", "eu/site-1"))
        #expect(S3Configuration.parse(storageURL: "s3://bucket") ?? ("", "x") == ("bucket", ""))
        for bad in ["s3://", "s3:///prefix", "http://bucket/x", "s3://bu cket/x", "bucket/x"] {
            #expect(S3Configuration.parse(storageURL: bad) == nil, "\(bad)")
        }
        var c = S3Configuration(bucket: "b", prefix: "eu/site-1", endpoint: nil, region: "eu-west-1", accessKey: "a", secretKey: "s")
        #expect(c.objectKey(recordingID: "rec_1", fileName: "pat-pe_1.webm") == "eu/site-1/rec_1/pat-pe_1.webm")
        let aws = S3Client(configuration: c).target(key: "eu/site-1/rec_1/a b.webm")
        #expect(aws.url == "https://b.s3.eu-west-1.amazonaws.com/eu/site-1/rec_1/a%20b.webm" && aws.host == "b.s3.eu-west-1.amazonaws.com")
        #expect(aws.path == "/eu/site-1/rec_1/a b.webm")
        c.prefix = ""
        c.endpoint = URL(string: "http://127.0.0.1:9000")
        #expect(c.objectKey(recordingID: "rec_1", fileName: "f.webm") == "rec_1/f.webm")
        let minio = S3Client(configuration: c).target(key: "rec_1/f.webm")
        #expect(minio.url == "http://127.0.0.1:9000/b/rec_1/f.webm" && minio.host == "127.0.0.1:9000" && minio.path == "/b/rec_1/f.webm")
    }

    @Test func xmlAnswers() {
        let list = """
            <?xml version="1.0" encoding="UTF-8"?><ListPartsResult><Bucket>b</Bucket><UploadId>up&amp;1</UploadId>
            <PartNumberMarker>0</PartNumberMarker><NextPartNumberMarker>2</NextPartNumberMarker><IsTruncated>false</IsTruncated>
            <Part><PartNumber>1</PartNumber><ETag>&quot;aa&quot;</ETag><Size>5242880</Size></Part>
            <Part><PartNumber>2</PartNumber><ETag>"bb"</ETag><Size>17</Size></Part></ListPartsResult>
            """
        #expect(XMLText.first("UploadId", in: list) == "up&1")
        let parts = XMLText.all("Part", in: list)
        #expect(parts.count == 2)
        #expect(parts.map { XMLText.first("ETag", in: $0) } == ["\"aa\"", "\"bb\""])
        #expect(XMLText.first("Size", in: parts[0]) == "5242880")
        #expect(XMLText.first("Missing", in: list) == nil)
        #expect(XMLText.escape("\"a&b\"") == "&quot;a&amp;b&quot;")
        let error = "<Error><Code>NoSuchUpload</Code><Message>The upload does not exist</Message></Error>"
        #expect(XMLText.first("Code", in: error) == "NoSuchUpload")
    }
}
