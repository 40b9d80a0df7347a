import Foundation

/// Appends to a file off the media loop: every write goes to one serial dispatch queue, so the
/// worker's event loop never blocks on the disk. Errors are kept and reported at close.
final class FileSink: @unchecked Sendable {
    let path: String
    private let queue: DispatchQueue
    private var fd: Int32 = -1
    private var error: String?

    init(path: String) {
        self.path = path
        queue = DispatchQueue(label: "sfu.recorder.file")
        queue.async { [self] in
            let dir = (path as NSString).deletingLastPathComponent
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            if fd < 0 { error = "cannot create \(path): \(String(cString: strerror(errno)))" }
        }
    }

    func append(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        queue.async { [self] in
            guard fd >= 0, error == nil else { return }
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written != bytes.count { error = "write failed: \(String(cString: strerror(errno)))" }
        }
    }

    func patch(offset: Int, _ bytes: [UInt8]) {
        queue.async { [self] in
            guard fd >= 0, error == nil else { return }
            let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
            if written != bytes.count { error = "write failed: \(String(cString: strerror(errno)))" }
        }
    }

    /// Closes the file after everything queued, without waiting: a participant that left gives
    /// its descriptor back at once, not when the recording stops. Later writes are dropped.
    func closeSoon() {
        queue.async { [self] in closeFile() }
    }

    /// Closes the file after everything queued (if ``closeSoon()`` did not); returns the first error, if any.
    func close() async -> String? {
        await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            queue.async { [self] in
                closeFile()
                continuation.resume(returning: error)
            }
        }
    }

    private func closeFile() {
        guard fd >= 0 else { return }
        fsync(fd)
        Foundation.close(fd)
        fd = -1
    }
}
