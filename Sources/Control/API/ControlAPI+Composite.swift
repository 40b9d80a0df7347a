import Recorder

extension ControlAPI {
    /// The composite's options from a start request (`layout`, `width`, `height`, `fps`,
    /// `video_bitrate_bps`), each validated: 400 naming the field otherwise.
    static func compositeOptions(_ body: JSONBody) throws -> CompositeRecording.Options {
        var o = CompositeRecording.Options()
        if let layout = try body.string("layout", maxLength: 16) {
            guard let kind = CompositeLayout.Kind(rawValue: layout) else { throw APIError.badRequest("layout must be grid or speaker") }
            o.layout = kind
        }
        if let w = try body.int("width", in: 160...1920) { o.width = w }
        if let h = try body.int("height", in: 120...1080) { o.height = h }
        // VP8 works on 4:2:0 pictures: even sizes only.
        guard o.width % 2 == 0, o.height % 2 == 0 else { throw APIError.badRequest("width and height must be even") }
        if let fps = try body.int("fps", in: 5...60) { o.fps = fps }
        if let bitrate = try body.int("video_bitrate_bps", in: 100_000...10_000_000) { o.videoBitrateBps = bitrate }
        return o
    }
}
