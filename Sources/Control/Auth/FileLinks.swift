import DTLS
import Foundation

/// Signed links to recording files (`POST /v1/recordings/{id}/files/{file_id}/url`): HMAC-SHA256,
/// with a key of the server's own (made once, kept in the store: not the API key, so a leaked link
/// reveals nothing about it), over the recording id, the file id and the expiry (Unix seconds).
/// A link names one file until one time; changing any of the three breaks the signature.
package struct FileLinks: Sendable {
    let key: [UInt8]

    package init(secret: String) {
        key = Array(secret.utf8)
    }

    /// base64url (no padding) of the HMAC.
    package func signature(recording: String, file: String, expires: Int64) -> String {
        let mac = HMAC(digest: .sha256, key: key)?.authenticate(Array("\(recording)/\(file)/\(expires)".utf8)) ?? []
        return Data(mac).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Whether `signature` is this server's for the file and expiry (compared in constant time).
    package func verify(_ signature: String, recording: String, file: String, expires: Int64) -> Bool {
        let want = Array(self.signature(recording: recording, file: file, expires: expires).utf8)
        let got = Array(signature.utf8)
        guard want.count == got.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<want.count { diff |= want[i] ^ got[i] }
        return diff == 0
    }
}
