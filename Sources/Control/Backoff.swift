import Foundation

/// How long a background worker (the webhook outbox, the S3 uploader) waits after a failed attempt:
/// `first` seconds after the first, doubling each time, never more than `cap`.
enum Backoff {
    static func seconds(afterAttempt attempt: Int, first: Double, cap: Double) -> Double {
        min(first * pow(2, Double(max(attempt, 1) - 1)), cap)
    }
}
