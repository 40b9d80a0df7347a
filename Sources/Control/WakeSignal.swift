import Synchronization

/// How a background worker (the webhook outbox, the S3 uploader) waits for work: ``sleep(millis:)``
/// ends when the time is up or at ``wake()``, whichever comes first. A wake while nobody sleeps
/// ends the next sleep at once, so work queued just before a worker sleeps is never missed. A
/// sleep's timer ends only that sleep, never a later one.
final class WakeSignal: Sendable {
    private struct State {
        var sleeper: CheckedContinuation<Void, Never>?
        /// Which sleep is current (a timer carries the number of the sleep it belongs to).
        var sleep = 0
        /// The current sleep's time ran out before it was waiting.
        var expired = false
        var woken = false
    }

    private let state = Mutex(State())

    func wake() { release(orMark: \.woken) }

    func sleep(millis: Int64) async {
        let number: Int? = state.withLock { s in
            if s.woken {
                s.woken = false
                return nil
            }
            s.sleep += 1
            s.expired = false
            return s.sleep
        }
        guard let number else { return }
        let timer = Task { [weak self] in
            guard (try? await Task.sleep(for: .milliseconds(max(millis, 1)))) != nil else { return }
            self?.expire(number)
        }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.woken || s.expired {
                    s.woken = false
                    return true
                }
                s.sleeper = c
                return false
            }
            if now { c.resume() }
        }
        timer.cancel()
    }

    private func expire(_ number: Int) { release(orMark: \.expired, ifSleep: number) }

    /// Ends the waiting sleep, or sets `flag` so that the coming one ends at once. With `number`,
    /// only while that sleep is the current one.
    private func release(orMark flag: WritableKeyPath<State, Bool>, ifSleep number: Int? = nil) {
        let sleeper: CheckedContinuation<Void, Never>? = state.withLock { s in
            if let number, s.sleep != number { return nil }
            guard let c = s.sleeper else {
                s[keyPath: flag] = true
                return nil
            }
            s.sleeper = nil
            return c
        }
        sleeper?.resume()
    }
}
