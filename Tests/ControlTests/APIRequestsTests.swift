import Foundation
import Recorder
import SFU
import Testing
@testable import Control

/// The control API's request types (APIRequests.swift): what `sfu-load` and the tests encode is
/// what the server decodes, and each field's check answers the 400 that names it.
@Suite("Control API request types")
struct APIRequestsTests {
    func decode<T: Decodable>(_ type: T.Type, _ json: String) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(json.utf8))
    }

    /// The 400 a body gets (nil when it decodes).
    func refusal<T: Decodable>(_ type: T.Type, _ json: String) -> String? {
        do {
            _ = try decode(T.self, json)
            return nil
        } catch let error as APIError {
            return error.status == .badRequest && error.code == "bad_request" ? error.message : "not a 400: \(error)"
        } catch {
            return "not an APIError: \(error)"
        }
    }

    func roundTrip<T: Codable & Equatable>(_ value: T) throws -> T {
        try JSONDecoder().decode(T.self, from: SignalingJSON.encoder.encode(value))
    }

    @Test func whatIsEncodedDecodesToTheSameRequest() throws {
        let room = CreateRoomRequest(name: "consult", maxParticipants: 4, emptyTimeoutS: 0, maxDurationS: 3600, autoRecord: true)
        #expect(try roundTrip(room) == room)
        #expect(try roundTrip(CreateRoomRequest()) == CreateRoomRequest())
        let token = MintTokenRequest(userID: "dr-1", role: .doctor, name: "Dr Who", permissions: [.subscribe], ttlS: 60)
        #expect(try roundTrip(token) == token)
        #expect(try roundTrip(MuteRequest(kind: .video, muted: true)) == MuteRequest(kind: .video, muted: true))
        let recording = StartRecordingRequest(mode: .composite, layout: .speaker, width: 640, height: 360, fps: 15, videoBitrateBps: 500_000)
        #expect(try roundTrip(recording) == recording)
        #expect(try roundTrip(SnapshotRequest(userID: "u", source: .screen, format: .png)) == SnapshotRequest(userID: "u", source: .screen, format: .png))
        // The wire names are the contract's (docs/API.md), not the Swift ones.
        let text = String(decoding: try SignalingJSON.encoder.encode(token), as: UTF8.self)
        #expect(text == #"{"name":"Dr Who","permissions":["subscribe"],"role":"doctor","ttl_s":60,"user_id":"dr-1"}"#)
    }

    @Test func defaultsAndNullsAreLeftOut() throws {
        #expect(try decode(CreateRoomRequest.self, #"{"name": null, "max_participants": 5.0, "other": [1]}"#) == CreateRoomRequest(maxParticipants: 5))
        let recording = try decode(StartRecordingRequest.self, "{}")
        #expect(recording.mode == .tracks && recording.compositeOptions == CompositeRecording.Options())
        let snapshot = try decode(SnapshotRequest.self, #"{"user_id": "u"}"#)
        #expect(snapshot.source == .camera && snapshot.format == .jpeg)
        let demo = try decode(DemoJoinRequest.self, #"{"room": "r"}"#)
        #expect(demo.name == "guest" && demo.role == .patient)
    }

    @Test func eachFieldIsCheckedAndNamed() {
        #expect(refusal(CreateRoomRequest.self, "[]") == "body must be a JSON object")
        #expect(refusal(CreateRoomRequest.self, #"{"max_participants": 101}"#) == "max_participants must be in 1...100")
        #expect(refusal(CreateRoomRequest.self, #"{"max_participants": true}"#) == "max_participants must be an integer")
        #expect(refusal(CreateRoomRequest.self, #"{"empty_timeout_s": 1.5}"#) == "empty_timeout_s must be an integer")
        #expect(refusal(CreateRoomRequest.self, #"{"auto_record": "yes"}"#) == "auto_record must be true or false")
        #expect(refusal(CreateRoomRequest.self, "{\"name\": \"\(String(repeating: "é", count: 201))\"}") == "name is longer than 200 characters")
        #expect(refusal(CreateRoomRequest.self, "{\"name\": \"\(String(repeating: "é", count: 200))\"}") == nil)
        #expect(refusal(MintTokenRequest.self, #"{"role": "doctor"}"#) == "user_id is required (a non-empty string)")
        #expect(refusal(MintTokenRequest.self, #"{"user_id": "u"}"#) == "role is required: doctor, patient or observer")
        #expect(refusal(MintTokenRequest.self, #"{"user_id": "u", "role": "nurse"}"#) == "role must be doctor, patient or observer")
        #expect(refusal(MintTokenRequest.self, #"{"user_id": "u", "role": "patient", "permissions": ["fly"]}"#) == "unknown permission 'fly'")
        #expect(refusal(MintTokenRequest.self, #"{"user_id": "u", "role": "patient", "permissions": "publish"}"#) == "permissions must be an array of strings")
        #expect(refusal(MintTokenRequest.self, #"{"user_id": "u", "role": "patient", "ttl_s": 0}"#) != nil)
        #expect(refusal(MuteRequest.self, #"{"kind": "screen", "muted": true}"#) == "kind must be audio or video")
        #expect(refusal(MuteRequest.self, #"{"kind": "audio"}"#) == "muted is required (true or false)")
        #expect(refusal(StartRecordingRequest.self, #"{"mode": "mixed"}"#) == "mode must be tracks or composite")
        #expect(refusal(StartRecordingRequest.self, #"{"layout": "mosaic"}"#) == "layout must be grid or speaker")
        #expect(refusal(StartRecordingRequest.self, #"{"width": 641}"#) == "width and height must be even")
        #expect(refusal(StartRecordingRequest.self, #"{"mode": "tracks", "fps": 61}"#) == "fps must be in 5...60")
        #expect(refusal(SnapshotRequest.self, #"{"user_id": "u", "source": "microphone"}"#) == "source must be camera or screen")
        #expect(refusal(SnapshotRequest.self, #"{"user_id": "u", "format": "gif"}"#) == "format must be jpeg or png")
        #expect(refusal(DemoJoinRequest.self, #"{"room": "  "}"#) == "room is required (a name)")
    }
}

/// The signaling event names are spelled once (``ClientEvent/Name``, ``ServerEvent/Name``); each is
/// one the contract documents.
@Suite("Signaling event names")
struct SignalingEventNameTests {
    @Test func everyNameIsDocumentedAndDecodesToItself() throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/SIGNALING.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        for name in ClientEvent.Name.allCases.map(\.rawValue) + ServerEvent.Name.allCases.map(\.rawValue) {
            #expect(text.contains("`\(name)"), "\(name) is not in docs/SIGNALING.md")
        }
        #expect(Set(ClientEvent.Name.allCases.map(\.rawValue)).count == ClientEvent.Name.allCases.count)
        #expect(Set(ServerEvent.Name.allCases.map(\.rawValue)).count == ServerEvent.Name.allCases.count)
        // An unknown name is the client's `unknown_event`, never a crash or another event.
        #expect(ClientEvent.decode(#"{"event": "joinRoom"}"#) == .failure(.unknownEvent("joinRoom")))
        #expect(ServerEvent.decode(#"{"event": "joinedRoom", "data": {}}"#) == nil)
    }
}
