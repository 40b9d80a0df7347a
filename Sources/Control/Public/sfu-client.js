// sfu-client.js: a browser client for the SFU's room signaling (`/v1/signal`).
//
// An ES module with no dependencies and no build step. The contract is PROTOCOL.md ("Signaling")
// and docs/SIGNALING.md; docs/DEMO.md describes this API. In short:
//
//   import { SFUClient } from "/sfu-client.js";
//   const client = new SFUClient();
//   client.addEventListener("trackadded", (e) => attach(e.detail));
//   await client.connect("ws://host/v1/signal?token=...");   // resolves with the joined_room data
//   await client.publish();                                   // camera + microphone (simulcast)
//   client.toggleAudio(false); await client.shareScreen(); client.sendMessage("hi"); client.leave();
//   client.addEventListener("trackpaused", (e) => ...);       // the server stopped a video for bandwidth
//   client.setLayer(trackId, { maxSpatial: 0 });              // at most the lowest simulcast layer
//   client.setRecordingConsent(true);                         // a room with recording_consent "required"
//   client.addEventListener("recordingconsent", (e) => ...);  // someone's answer; client.consents has them all
//
// Two peer connections: the publisher (we offer, the server answers) and the subscriber (the server
// offers whenever the set of remote tracks changes, we answer). Remote tracks are mapped to
// participants through the subscriber SDP: each m-line carries `a=msid:<peer_id> <track_id>`.

const PUBLISHER = "publisher";
const SUBSCRIBER = "subscriber";

/**
 * The camera's simulcast encodings, lowest first (rid q/h/f = spatial layer 0/1/2 in `set_layer`).
 * From a 1280x720 camera: 320x180, 640x360 and 1280x720, each with three VP8 temporal layers.
 * The bitrates are libwebrtc's maximums for those sizes (its kSimulcastFormats table: 200 kbit/s,
 * 700 kbit/s, 2.5 Mbit/s; the server probes for the same, SubscriberConnection.nominalBitrate).
 * They are caps; Chromium spends less on simple content.
 */
export const DEFAULT_SIMULCAST = [
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 200_000, scalabilityMode: "L1T3" },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 700_000, scalabilityMode: "L1T3" },
  { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 2_500_000, scalabilityMode: "L1T3" },
];

/**
 * libwebrtc's maximum simulcast bitrate for a layer of this size (its kSimulcastFormats table, the
 * row with the most pixels not above the layer's; the server's DownlinkController.nominalBitrate
 * uses the same rows).
 */
export function simulcastMaxBitrate(width, height) {
  const rows = [[1920 * 1080, 5_000_000], [1280 * 720, 2_500_000], [960 * 540, 1_200_000],
                [640 * 360, 700_000], [480 * 270, 450_000], [320 * 180, 200_000]];
  const pixels = width * height;
  const row = rows.find(([p]) => pixels >= p);
  return row ? row[1] : 200_000;
}

/**
 * DEFAULT_SIMULCAST's layers with the caps for what the camera really delivers: a 1920x1080 camera
 * sends 480x270, 960x540 and 1920x1080 at 450 kbit/s, 1.2 and 5 Mbit/s (a 2.5 Mbit/s cap would
 * starve its top layer); 1280x720 keeps 200 k / 700 k / 2.5 M.
 */
export function simulcastForSize(width, height, layers = DEFAULT_SIMULCAST) {
  if (!(width > 0 && height > 0)) return layers.map((e) => ({ ...e }));
  return layers.map((e) => {
    const by = e.scaleResolutionDownBy || 1;
    return { ...e, maxBitrate: simulcastMaxBitrate(Math.round(width / by), Math.round(height / by)) };
  });
}

/** What the camera is asked for when publishing with simulcast and no explicit video constraints. */
export const SIMULCAST_CAPTURE = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

// Errors that answer the publisher offer we are waiting for (rather than something else we sent).
const OFFER_ERRORS = new Set(["permission_denied", "bad_offer", "bad_request", "renegotiation_not_supported"]);

/** `{mid: {peerId, trackId, kind, direction}}` for every m-section of an SDP. */
export function parseSdpSections(sdp) {
  const out = {};
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const kind = section.split(" ", 1)[0];
    const mid = (section.match(/^a=mid:(\S+)/m) || [])[1];
    if (mid === undefined) continue;
    const msid = section.match(/^a=msid:(\S+) (\S+)/m);
    const direction = (section.match(/^a=(sendrecv|sendonly|recvonly|inactive)\s*$/m) || [])[1] || "sendrecv";
    const port = Number(section.split(" ", 2)[1]);
    out[mid] = { kind, peerId: msid ? msid[1] : null, trackId: msid ? msid[2] : null,
                 direction: port === 0 ? "inactive" : direction };
  }
  return out;
}

/** ice_servers as the server hands them out (objects or bare URLs) -> RTCIceServer[]. */
function iceServersFrom(list) {
  if (!Array.isArray(list)) return [];
  return list.map((s) => (typeof s === "string" ? { urls: s } : s)).filter((s) => s && s.urls);
}

export class SFUClient extends EventTarget {
  /**
   * options.iceServers: extra RTCIceServer entries (the server's `ice_servers` are always used);
   * options.iceTransportPolicy: "all" (default) or "relay" (only TURN relays: to check a TURN set-up);
   * options.answerTimeoutMs: how long to wait for the publisher answer (default 15000);
   * options.simulcast: the camera's simulcast: true (default, DEFAULT_SIMULCAST), false (one
   *   encoding), or an array of RTCRtpEncodingParameters with rids (lowest layer first);
   * options.onTrackPaused / options.onTrackResumed: functions called with the same detail as the
   *   `trackpaused` / `trackresumed` events;
   * options.reconnect: reopen the signaling socket when it drops (default true): `join_room
   *   {resume: true}` with backoff (0.5 s doubling to 4 s) for options.resumeWindowMs (default
   *   30000, the server's SFU_RESUME_WINDOW_S); events `reconnecting` {attempt} and `reconnected`
   *   {resumed} (resumed false: the window had passed, we joined as a new peer and published again);
   *   a reconnect attempt not open within options.connectTimeoutMs (default 4000: a network that
   *   drops the connection's packets leaves it hanging for minutes) is given up for the next one;
   * options.log: a function(string) for debug lines (default: none).
   */
  constructor(options = {}) {
    super();
    this.options = { answerTimeoutMs: 15000, iceServers: [], simulcast: true, reconnect: true, resumeWindowMs: 30000, connectTimeoutMs: 4000,
                     ...options };
    this.ws = null;
    this.roomId = null;
    this.peerId = null;
    this.userId = null;
    this.role = null;
    this.name = options.name || null;   // our display name, for our own chat lines
    this.iceServers = [];
    /** peer_id -> {peerId, userId, name, role, audioEnabled, videoEnabled, screenSharing,
     *              tracks: Map(track_id -> {trackId, kind, source, muted, simulcast, paused, track,
     *                                       stream, mid})}
     * `paused`: the server stopped forwarding this track to us (`track_paused`, not enough bandwidth). */
    this.participants = new Map();
    /** `notice` or `required` (joined_room), and user id -> granted for the answers given so far. */
    this.recordingConsent = "notice";
    this.consents = new Map();
    this.localStream = null;      // camera + microphone
    this.screenStream = null;     // the shared screen while sharing
    this.audioEnabled = true;
    this.videoEnabled = true;
    this.publisher = null;
    this.subscriber = null;
    this.state = "new";           // new | connecting | joined | reconnecting | closed
    this._queue = Promise.resolve();            // incoming messages, handled one at a time
    this._publisherChain = Promise.resolve();   // publisher offers, one at a time
    this._pendingAnswer = null;                 // {resolve, reject} for the publisher offer in flight
    this._joinWaiter = null;
    this._mids = {};                            // subscriber mid -> {peerId, trackId, kind, direction}
    this._screenTransceiver = null;
    this._signalingUrl = null;
    this._reconnect = null;                     // {since, attempt, timer} while the socket is down
  }

  // --- connection ------------------------------------------------------------------------------

  /** Opens the WebSocket, sends join_room and resolves with the joined_room data. */
  connect(signalingUrl) {
    if (this.ws) throw new Error("already connected");
    this.state = "connecting";
    this._signalingUrl = signalingUrl;
    // A page going away for good leaves the room (else the server keeps us for its resume window).
    if (typeof window !== "undefined" && !this._pagehide) {
      this._pagehide = (e) => { if (!e.persisted && this.state !== "closed" && this.state !== "new") this.leave(); };
      window.addEventListener("pagehide", this._pagehide);
    }
    return new Promise((resolve, reject) => {
      this._joinWaiter = { resolve, reject };
      try {
        this._openSocket(false);
      } catch (e) {
        this.state = "closed";
        this._joinWaiter = null;
        reject(e);
      }
    });
  }

  /** Opens the signaling socket; `resume`: ask for our peer back (after a drop). */
  _openSocket(resume) {
    const ws = new WebSocket(this._signalingUrl);
    this.ws = ws;
    ws.onopen = () => this._send("join_room", resume ? { resume: true } : {});
    ws.onerror = () => {
      if (this._joinWaiter) {
        this._joinWaiter.reject(new Error("could not open the signaling WebSocket (bad or expired token, unknown room?)"));
        this._joinWaiter = null;
      }
    };
    ws.onclose = (e) => { if (this.ws === ws) this._onClose(e); };
    if (resume) {
      // A reconnect whose connection hangs (SYN unanswered) is replaced by the next attempt.
      const timer = setTimeout(() => {
        if (this.ws !== ws || ws.readyState !== WebSocket.CONNECTING) return;
        ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
        try { ws.close(); } catch {}
        this.ws = null;
        if (this.state === "reconnecting") this._scheduleReconnect();
      }, this.options.connectTimeoutMs);
      ws.addEventListener("open", () => clearTimeout(timer));
      ws.addEventListener("close", () => clearTimeout(timer));
    }
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return this._emitError("bad_message", "the server sent something that is not JSON");
      }
      this._queue = this._queue.then(() => this._onMessage(msg)).catch((err) =>
        this._emitError("client_error", `handling ${msg && msg.event}: ${err && err.message || err}`));
    };
  }

  /**
   * Captures camera and microphone (or takes `options.stream`) and publishes them.
   * options: {audio: true|constraints, video: true|constraints, stream: MediaStream,
   *           simulcast: true|false|encodings (default: the constructor's option)}.
   * With simulcast and `video: true` the camera is asked for 1280x720 (SIMULCAST_CAPTURE) so that
   * there are three layers to send; with the default layers their caps are libwebrtc's for the
   * size the camera delivers (simulcastForSize).
   */
  async publish(options = {}) {
    if (this.state !== "joined") throw new Error("join a room first");
    const option = options.simulcast ?? this.options.simulcast;
    let encodings = this._simulcastEncodings(option);
    let video = options.video ?? true;
    if (video === true && encodings) video = SIMULCAST_CAPTURE;
    const stream = options.stream || await navigator.mediaDevices.getUserMedia({
      audio: options.audio ?? true, video });
    this.localStream = stream;
    const camera = stream.getVideoTracks()[0];
    if (encodings && option === true && camera && camera.getSettings) {
      // The default layers' caps follow the size the camera really gives (it may not honour 1280x720).
      const { width, height } = camera.getSettings();
      encodings = simulcastForSize(width, height);
    }
    const pc = this._publisherPc();
    for (const track of stream.getTracks()) {
      const init = { direction: "sendonly", streams: [stream] };
      if (track.kind === "video" && encodings) init.sendEncodings = encodings;
      this._addTransceiver(pc, track, init);
    }
    this.dispatchEvent(new CustomEvent("localstream", { detail: { stream } }));
    await this._negotiatePublisher();
    return stream;
  }

  /** Enables or disables the microphone (no argument: flips it) and tells the room. */
  toggleAudio(enabled = !this.audioEnabled) {
    this.audioEnabled = !!enabled;
    for (const t of this.localStream ? this.localStream.getAudioTracks() : []) t.enabled = this.audioEnabled;
    this._send("toggle_audio", { enabled: this.audioEnabled });
    return this.audioEnabled;
  }

  /** Enables or disables the camera (no argument: flips it) and tells the room. */
  toggleVideo(enabled = !this.videoEnabled) {
    this.videoEnabled = !!enabled;
    for (const t of this.localStream ? this.localStream.getVideoTracks() : []) t.enabled = this.videoEnabled;
    this._send("toggle_video", { enabled: this.videoEnabled });
    return this.videoEnabled;
  }

  /**
   * Shares the screen (getDisplayMedia, or `stream` if given): sends `screen_share {enabled: true}`
   * first, then re-offers with a new video section, which the server publishes as source `screen`.
   */
  async shareScreen(stream = null) {
    if (this.state !== "joined") throw new Error("join a room first");
    if (this.screenStream) return this.screenStream;
    stream = stream || await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    if (!track) throw new Error("no video track to share");
    this.screenStream = stream;
    track.addEventListener("ended", () => { if (this.screenStream === stream) this.stopScreenShare(); });
    this._send("screen_share", { enabled: true });
    this._screenTransceiver = this._publisherPc().addTransceiver(track, { direction: "sendonly", streams: [stream] });
    this.dispatchEvent(new CustomEvent("screenshare", { detail: { enabled: true, stream } }));
    await this._negotiatePublisher();
    return stream;
  }

  /**
   * Stops sharing: `screen_share {enabled: false}` first (so the others hear that sharing stopped
   * before the track goes away), then the section goes inactive in a new offer (the server
   * unpublishes the track).
   */
  async stopScreenShare() {
    const stream = this.screenStream, transceiver = this._screenTransceiver;
    if (!stream) return;
    this.screenStream = null;
    this._screenTransceiver = null;
    for (const t of stream.getTracks()) t.stop();
    this._send("screen_share", { enabled: false });
    if (transceiver && this.publisher && this.publisher.signalingState !== "closed") {
      this.publisher.removeTrack(transceiver.sender);
      transceiver.direction = "inactive";
      await this._negotiatePublisher();
    }
    this.dispatchEvent(new CustomEvent("screenshare", { detail: { enabled: false, stream } }));
  }

  /** Sends a chat message (1 to 4096 characters) to everyone in the room. */
  sendMessage(message) {
    message = String(message);
    if (message.length < 1 || message.length > 4096) throw new Error("a message has 1 to 4096 characters");
    this._send("send_message", { message });
  }

  /**
   * Caps what the server forwards to us of a remote simulcast track: `set_layer {track_id,
   * max_spatial?, max_temporal?}`. Spatial 0 is the lowest layer (rid q) ... 2 the top (f); temporal
   * 0..2. An omitted (or null) cap means no cap, so `setLayer(id, {})` lifts both.
   * `setLayer(trackId, {maxSpatial, maxTemporal})`; `setLayer(trackId, maxSpatial, maxTemporal)`
   * works too. Returns false if the signaling socket is not open.
   */
  setLayer(trackId, caps = {}, maxTemporal = undefined) {
    if (caps === null || typeof caps !== "object") caps = { maxSpatial: caps, maxTemporal };
    const data = { track_id: trackId };
    if (caps.maxSpatial !== undefined && caps.maxSpatial !== null) data.max_spatial = caps.maxSpatial;
    if (caps.maxTemporal !== undefined && caps.maxTemporal !== null) data.max_temporal = caps.maxTemporal;
    return this._send("set_layer", data);
  }

  /**
   * Answers whether we may be recorded: `recording_consent {granted}`. In a room created with
   * `recording_consent: "required"` (`this.recordingConsent`) our media enters a recording only
   * while we have granted; everyone gets a `recordingconsent` event. Returns false if the signaling
   * socket is not open.
   */
  setRecordingConsent(granted) {
    return this._send("recording_consent", { granted: !!granted });
  }

  /** Leaves the room: leave_room, then closes both peer connections and stops local capture. */
  leave() {
    if (this.state === "closed") return;
    this._send("leave_room", {});
    this._close("left");
  }

  /** The remote tracks as a flat list: [{peerId, userId, name, trackId, kind, source, muted, paused, track, stream}]. */
  remoteTracks() {
    const out = [];
    for (const p of this.participants.values()) {
      for (const t of p.tracks.values()) out.push({ peerId: p.peerId, userId: p.userId, name: p.name, ...t });
    }
    return out;
  }

  /**
   * inbound-rtp figures per received track:
   * [{peer_id, track_id, kind, source, paused, mid, packetsReceived, packetsLost, bytesReceived,
   *   jitter, framesDecoded, keyFramesDecoded, framesReceived, framesDropped, framesPerSecond,
   *   frameWidth, frameHeight, freezeCount, totalFreezesDuration, pauseCount, totalPausesDuration,
   *   pliCount, nackCount, firCount, totalAudioEnergy, audioLevel, totalSamplesReceived,
   *   concealedSamples, totalSamplesDuration, decoderImplementation, codecId}]
   */
  async remoteStats() {
    const out = [];
    if (!this.subscriber) return out;
    const fields = ["packetsReceived", "packetsLost", "bytesReceived", "jitter", "framesDecoded",
      "keyFramesDecoded", "framesReceived", "framesDropped", "framesPerSecond", "frameWidth",
      "frameHeight", "freezeCount", "totalFreezesDuration", "pauseCount", "totalPausesDuration",
      "pliCount", "nackCount", "firCount", "totalAudioEnergy", "audioLevel", "totalSamplesReceived",
      "concealedSamples", "totalSamplesDuration", "decoderImplementation", "codecId"];
    for (const tr of this.subscriber.getTransceivers()) {
      const info = tr.mid !== null ? this._mids[tr.mid] : null;
      if (!info || !info.trackId) continue;
      const entry = { peer_id: info.peerId, track_id: info.trackId, kind: tr.receiver.track.kind, mid: tr.mid };
      const p = this.participants.get(info.peerId);
      const t = p && p.tracks.get(info.trackId);
      if (t) { entry.source = t.source; entry.paused = !!t.paused; }
      (await tr.receiver.getStats()).forEach((r) => {
        if (r.type !== "inbound-rtp") return;
        for (const f of fields) if (r[f] !== undefined) entry[f] = r[f];
      });
      out.push(entry);
    }
    return out;
  }

  // --- signaling -------------------------------------------------------------------------------

  _send(event, data) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ event, data }));
    return true;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _emitError(code, message) {
    this._emit("error", { code, message });
  }

  async _onMessage(msg) {
    const data = (msg && msg.data) || {};
    switch (msg && msg.event) {
      case "joined_room": return this._onJoined(data);
      case "webrtc_answer":
        if (data.target === PUBLISHER && this._pendingAnswer) {
          const p = this._pendingAnswer;
          this._pendingAnswer = null;
          p.resolve(data.sdp);
        }
        return;
      case "webrtc_offer":
        if (data.target === SUBSCRIBER) return this._onSubscriberOffer(data.sdp);
        return;
      case "user_joined": {
        const p = this._participant(data.peer_id, data);
        this._emit("participantjoined", { participant: p });
        return;
      }
      case "user_left": return this._removeParticipant(data.peer_id);
      case "track_published": {
        const p = this._participant(data.peer_id, {});
        const t = this._trackRecord(p, data.track_id);
        Object.assign(t, { kind: data.kind, source: data.source });
        this._emit("trackpublished", { participant: p, ...t });
        return;
      }
      case "track_unpublished": return this._removeTrack(data.peer_id, data.track_id);
      case "track_paused":
      case "track_resumed": return this._onPaused(data, msg.event === "track_paused");
      case "audio_toggled":
      case "video_toggled":
      case "screen_share_toggled": {
        const kind = { audio_toggled: "audio", video_toggled: "video", screen_share_toggled: "screen" }[msg.event];
        const self = data.peer_id === this.peerId;
        if (self && kind === "audio") this._applyLocal("audio", data.enabled);
        if (self && kind === "video") this._applyLocal("video", data.enabled);
        const p = self ? null : this.participants.get(data.peer_id);
        if (p) p[{ audio: "audioEnabled", video: "videoEnabled", screen: "screenSharing" }[kind]] = !!data.enabled;
        this._emit("toggle", { kind, peerId: data.peer_id, userId: data.user_id, enabled: !!data.enabled,
                               self, participant: p });
        return;
      }
      case "chat_message": {
        const p = this.participants.get(data.peer_id);
        const name = data.peer_id === this.peerId ? (this.name || "you") : p && p.name;
        this._emit("chat", { peerId: data.peer_id, userId: data.user_id, name: name || data.user_id,
                             message: data.message, timestamp: data.timestamp,
                             self: data.peer_id === this.peerId });
        return;
      }
      case "recording_started":
      case "recording_stopped":
        this._emit("recording", { active: msg.event === "recording_started", recordingId: data.recording_id });
        return;
      case "ice_restarted":
        this._emit("icerestarted", { target: data.target });
        return;
      case "recording_consent":
        this.consents.set(data.user_id, !!data.granted);
        this._emit("recordingconsent", { userId: data.user_id, granted: !!data.granted, recordingId: data.recording_id,
                                         self: data.user_id === this.userId });
        return;
      case "error": return this._onError(data);
      default: return; // unknown events are ignored
    }
  }

  /** The room's recording rule and the answers so far, from `joined_room` (a resume's too). */
  _takeConsents(data) {
    this.recordingConsent = data.recording_consent || "notice";
    this.consents = new Map((data.consents || []).map((c) => [c.user_id, !!c.granted]));
  }

  _onJoined(data) {
    if (this._reconnect) return this._onRejoined(data);
    this.state = "joined";
    this.roomId = data.room_id;
    this.peerId = data.peer_id;
    this.userId = data.user_id;
    this.role = data.role;
    this._takeConsents(data);
    this.iceServers = [...iceServersFrom(data.ice_servers), ...this.options.iceServers];
    for (const p of data.participants || []) {
      const rec = this._participant(p.peer_id, p);
      for (const t of p.tracks || []) {
        Object.assign(this._trackRecord(rec, t.track_id),
                      { kind: t.kind, source: t.source, muted: !!t.muted, simulcast: !!t.simulcast });
      }
    }
    this._subscriberPc(); // ready before the first subscriber offer
    if (this._joinWaiter) {
      this._joinWaiter.resolve(data);
      this._joinWaiter = null;
    }
    this._emit("joined", data);
    for (const p of this.participants.values()) this._emit("participantjoined", { participant: p });
    // The room's recent chat, said before we came (history: true).
    for (const m of data.messages || []) {
      const p = this.participants.get(m.peer_id);
      this._emit("chat", { peerId: m.peer_id, userId: m.user_id, name: (p && p.name) || m.user_id, message: m.message,
                           timestamp: m.timestamp, self: false, history: true });
    }
  }

  _onPaused(data, paused) {
    // The server stopped (or restarted) forwarding one of the tracks we receive: not enough
    // downlink bandwidth for it (audio is kept before video).
    const p = this.participants.get(data.peer_id);
    if (!p) return;
    const t = this._trackRecord(p, data.track_id);
    t.paused = paused;
    const detail = { participant: p, ...t };
    this._emit(paused ? "trackpaused" : "trackresumed", detail);
    const callback = paused ? this.options.onTrackPaused : this.options.onTrackResumed;
    if (typeof callback === "function") callback(detail);
  }

  _onError(data) {
    const code = data.code || "error", message = data.message || "";
    if (this._joinWaiter) {
      this._joinWaiter.reject(Object.assign(new Error(`${code}: ${message}`), { code }));
      this._joinWaiter = null;
    }
    if (this._pendingAnswer && OFFER_ERRORS.has(code)) {
      const p = this._pendingAnswer;
      this._pendingAnswer = null;
      p.reject(Object.assign(new Error(`${code}: ${message}`), { code }));
    }
    this._emitError(code, message);
  }

  _onClose(e) {
    if (this._joinWaiter) {
      this._joinWaiter.reject(new Error(`signaling closed before joining (code ${e.code}${e.reason ? ": " + e.reason : ""})`));
      this._joinWaiter = null;
    }
    if (this.state === "closed") return;
    // The server ends a joined session with 1000 (after telling why) or a 4xxx code; anything else
    // (1006: the connection vanished) is a drop we come back from.
    const dropped = e.code !== 1000 && e.code < 4000;
    if (this.options.reconnect && dropped && (this.state === "joined" || this.state === "reconnecting")) {
      return this._scheduleReconnect();
    }
    this._close(`signaling closed (code ${e.code}${e.reason ? ": " + e.reason : ""})`, e.code);
  }

  _scheduleReconnect() {
    const now = Date.now();
    if (!this._reconnect) this._reconnect = { since: now, attempt: 0, timer: null };
    const r = this._reconnect;
    if (now - r.since > this.options.resumeWindowMs + 5000) {
      this._reconnect = null;
      return this._close("signaling lost: could not reconnect");
    }
    r.attempt += 1;
    this.state = "reconnecting";
    this._emit("reconnecting", { attempt: r.attempt });
    const delay = Math.min(4000, 500 * 2 ** (r.attempt - 1));
    r.timer = setTimeout(() => {
      r.timer = null;
      if (this.state !== "reconnecting") return;
      try {
        this._openSocket(true);
      } catch {
        this._scheduleReconnect();
      }
    }, delay);
  }

  /** joined_room on a reopened socket: the same peer (resumed), or a new one after the window. */
  _onRejoined(data) {
    this._reconnect = null;
    if (data.resumed) {
      this.state = "joined";
      this.iceServers = [...iceServersFrom(data.ice_servers), ...this.options.iceServers];
      this._takeConsents(data);
      // Reconcile who is here; the events that came meanwhile follow this one.
      const present = new Set((data.participants || []).map((p) => p.peer_id));
      for (const peerId of [...this.participants.keys()]) if (!present.has(peerId)) this._removeParticipant(peerId);
      for (const p of data.participants || []) {
        const known = this.participants.has(p.peer_id);
        const rec = this._participant(p.peer_id, p);
        if (!known) this._emit("participantjoined", { participant: rec });
      }
      this._emit("reconnected", { resumed: true });
      this._runIceRestarts();
      return;
    }
    // A new peer: our connections belonged to the old one. Start again and publish what we had.
    const stream = this.localStream;
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    this.publisher = null;
    this.subscriber = null;
    this._mids = {};
    this._screenTransceiver = null;
    for (const peerId of [...this.participants.keys()]) this._removeParticipant(peerId);
    this._pendingIceRestarts = new Set();   // new connections: nothing to restart
    this._onJoined(data);
    this._emit("reconnected", { resumed: false });
    if (stream) {
      this.publish({ stream }).catch((e) => this._emitError("republish_failed", e && e.message || String(e)));
    }
  }

  _close(reason, code = null) {
    this.state = "closed";
    if (this._livenessTimer) clearInterval(this._livenessTimer);
    this._livenessTimer = null;
    if (this._reconnect && this._reconnect.timer) clearTimeout(this._reconnect.timer);
    this._reconnect = null;
    if (this._pendingAnswer) {
      this._pendingAnswer.reject(new Error(reason));
      this._pendingAnswer = null;
    }
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.onmessage = null;
      try { this.ws.close(); } catch {}
    }
    for (const pc of [this.publisher, this.subscriber]) if (pc) pc.close();
    for (const s of [this.localStream, this.screenStream]) if (s) s.getTracks().forEach((t) => t.stop());
    this.screenStream = null;
    for (const peerId of [...this.participants.keys()]) this._removeParticipant(peerId);
    this._emit("closed", { reason, code });
  }

  _applyLocal(kind, enabled) {
    // The server may mute us (POST .../mute): keep the local track in step with what others see.
    if (kind === "audio") this.audioEnabled = !!enabled;
    else this.videoEnabled = !!enabled;
    const tracks = this.localStream ? (kind === "audio" ? this.localStream.getAudioTracks()
                                                          : this.localStream.getVideoTracks()) : [];
    for (const t of tracks) t.enabled = !!enabled;
  }

  // --- participants and tracks -----------------------------------------------------------------

  _participant(peerId, info) {
    let p = this.participants.get(peerId);
    if (!p) {
      p = { peerId, userId: null, name: null, role: null, audioEnabled: true, videoEnabled: true,
            screenSharing: false, tracks: new Map() };
      this.participants.set(peerId, p);
    }
    if (info.user_id !== undefined) p.userId = info.user_id;
    if (info.name !== undefined) p.name = info.name;
    if (info.role !== undefined) p.role = info.role;
    if (!p.name) p.name = p.userId || peerId;
    return p;
  }

  _trackRecord(p, trackId) {
    let t = p.tracks.get(trackId);
    if (!t) {
      t = { trackId, kind: null, source: null, muted: false, simulcast: false, paused: false,
            track: null, stream: null, mid: null };
      p.tracks.set(trackId, t);
    }
    return t;
  }

  _removeTrack(peerId, trackId) {
    const p = this.participants.get(peerId);
    const t = p && p.tracks.get(trackId);
    if (!t) return;
    p.tracks.delete(trackId);
    if (t.track) this._emit("trackremoved", { participant: p, ...t });
  }

  _removeParticipant(peerId) {
    const p = this.participants.get(peerId);
    if (!p) return;
    for (const trackId of [...p.tracks.keys()]) this._removeTrack(peerId, trackId);
    this.participants.delete(peerId);
    this._emit("participantleft", { participant: p });
  }

  // --- peer connections ------------------------------------------------------------------------

  _config() {
    return { iceServers: this.iceServers, iceTransportPolicy: this.options.iceTransportPolicy || "all",
             bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" };
  }

  _watch(pc, target) {
    pc.onicecandidate = (e) => {
      if (!e.candidate || !e.candidate.candidate) return;
      this._emit("localcandidate", { target, candidate: e.candidate.candidate, iceState: pc.iceConnectionState });
      this._send("ice_candidate", { target, candidate: e.candidate.candidate, sdpMid: e.candidate.sdpMid,
                                    sdpMLineIndex: e.candidate.sdpMLineIndex });
    };
    pc.onconnectionstatechange = () => {
      this._emit("connectionstate", { target, state: pc.connectionState });
      if (pc.connectionState === "failed") this._emitError("ice_failed", `${target} connection failed`);
    };
    // A path that broke (network change, Wi-Fi to mobile): restart ICE on "failed", or on
    // "disconnected" that lasts 2 s. The publisher restarts with a new offer (iceRestart); the
    // subscriber asks the server, which offers new credentials (`restart_ice`).
    pc.oniceconnectionstatechange = () => {
      const state = pc.iceConnectionState;
      this._emit("iceconnectionstate", { target, state });
      // The browser says so after ~5 s without answers to its checks; the watch below is faster.
      if (state === "failed" || state === "disconnected") this._restartIce(pc, target);
    };
    this._watchLiveness();
  }

  /**
   * A broken path is noticed sooner than the browser's ICE says "disconnected" (~5 s): the server
   * sends a publishing client something all the time (transport-cc feedback every 100 ms, receiver
   * reports every second), so a connected publisher transport that received no byte for
   * `options.livenessMs` (default 2000) has lost its path: ICE is restarted on both connections
   * (they share the network). A subscribe-only client relies on the browser's "disconnected" (the
   * server may rightly send it nothing while its video is paused for bandwidth).
   */
  _watchLiveness() {
    if (this._livenessTimer || typeof setInterval !== "function") return;
    const seen = {};   // target -> {bytes, changed}
    this._livenessTimer = setInterval(async () => {
      if (this.state !== "joined") return;
      for (const [target, pc] of [[PUBLISHER, this.publisher]]) {
        if (!pc || !["connected", "completed"].includes(pc.iceConnectionState)) { delete seen[target]; continue; }
        let bytes = 0;
        try {
          (await pc.getStats()).forEach((r) => { if (r.type === "transport") bytes += r.bytesReceived || 0; });
        } catch { continue; }
        const now = Date.now(), last = seen[target];
        if (!last || bytes !== last.bytes) { seen[target] = { bytes, changed: now }; continue; }
        if (bytes > 0 && now - last.changed > (this.options.livenessMs || 2000)) {
          delete seen[target];
          for (const [t, p] of [[PUBLISHER, this.publisher], [SUBSCRIBER, this.subscriber]]) if (p) this._restartIce(p, t);
        }
      }
    }, 500);
  }

  /**
   * Restarts ICE on one connection, at most once every 5 s. A path that broke usually took the
   * signaling socket with it (a browser notices a dead WebSocket only after minutes), so the
   * socket is reopened first (`join_room {resume: true}`: the same peer; the server closes the old
   * socket) and the restart is made on the new one.
   */
  _restartIce(pc, target) {
    if ((this.state !== "joined" && this.state !== "reconnecting") || pc.signalingState === "closed") return;
    const now = Date.now();
    this._lastRestart = this._lastRestart || {};
    if (now - (this._lastRestart[target] || 0) < 5000) return;
    this._lastRestart[target] = now;
    this._pendingIceRestarts = this._pendingIceRestarts || new Set();
    this._pendingIceRestarts.add(target);
    if (this.state === "joined") this._reopenSignaling();
  }

  /** Replaces a signaling socket that may be dead by a resumed one. */
  _reopenSignaling() {
    const old = this.ws;
    if (old) {
      old.onclose = null;
      old.onmessage = null;
      old.onerror = null;
      try { old.close(); } catch {}
    }
    this._reconnect = { since: Date.now(), attempt: 1, timer: null };
    this.state = "reconnecting";
    this._emit("reconnecting", { attempt: 1 });
    try {
      this._openSocket(true);
    } catch {
      this._scheduleReconnect();
    }
  }

  _runIceRestarts() {
    const targets = this._pendingIceRestarts || new Set();
    this._pendingIceRestarts = new Set();
    for (const target of targets) {
      this._emit("icerestart", { target });
      if (target === PUBLISHER && this.publisher) {
        this.publisher.restartIce();
        this._negotiatePublisher().catch((e) => this._emitError("ice_restart_failed", e && e.message || String(e)));
      } else if (target === SUBSCRIBER && this.subscriber) {
        this._send("restart_ice", { target: SUBSCRIBER });
      }
    }
  }

  /** The sendEncodings for the camera, or null for a single encoding. */
  _simulcastEncodings(option) {
    if (!option) return null;
    const list = Array.isArray(option) ? option : DEFAULT_SIMULCAST;
    return list.length > 1 ? list.map((e) => ({ ...e })) : null;
  }

  /** addTransceiver, retried without scalabilityMode for browsers that refuse it. */
  _addTransceiver(pc, track, init) {
    try {
      return pc.addTransceiver(track, init);
    } catch (e) {
      if (!init.sendEncodings || !init.sendEncodings.some((x) => x.scalabilityMode)) throw e;
      const sendEncodings = init.sendEncodings.map(({ scalabilityMode, ...rest }) => rest);
      return pc.addTransceiver(track, { ...init, sendEncodings });
    }
  }

  _publisherPc() {
    if (!this.publisher) {
      this.publisher = new RTCPeerConnection(this._config());
      this._watch(this.publisher, PUBLISHER);
    }
    return this.publisher;
  }

  _subscriberPc() {
    if (!this.subscriber) {
      const pc = new RTCPeerConnection(this._config());
      this._watch(pc, SUBSCRIBER);
      pc.ontrack = (e) => this._onRemoteTrack(e);
      this.subscriber = pc;
    }
    return this.subscriber;
  }

  /** Offers on the publisher connection and applies the answer; one offer at a time. */
  _negotiatePublisher() {
    const run = async () => {
      const pc = this.publisher;
      if (!pc || pc.signalingState === "closed") return;
      await pc.setLocalDescription(await pc.createOffer());
      const answer = new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          if (this._pendingAnswer && this._pendingAnswer.resolve === done) this._pendingAnswer = null;
          reject(new Error("no answer to the publisher offer"));
        }, this.options.answerTimeoutMs);
        const done = (sdp) => { clearTimeout(timer); resolve(sdp); };
        this._pendingAnswer = { resolve: done, reject: (e) => { clearTimeout(timer); reject(e); } };
      });
      this._send("webrtc_offer", { target: PUBLISHER, sdp: pc.localDescription.sdp });
      let sdp;
      try {
        sdp = await answer;
      } catch (e) {
        // Back to stable so that a later offer can still be made.
        if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
        throw e;
      }
      await pc.setRemoteDescription({ type: "answer", sdp });
    };
    const p = this._publisherChain.then(run);
    this._publisherChain = p.catch(() => {});
    return p;
  }

  async _onSubscriberOffer(sdp) {
    const pc = this._subscriberPc();
    const sections = parseSdpSections(sdp);
    this._mids = sections;
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    this._send("webrtc_answer", { target: SUBSCRIBER, sdp: pc.localDescription.sdp });
    // A section that went inactive (or lost its msid) no longer carries a track.
    for (const [mid, info] of Object.entries(sections)) {
      if (info.trackId && info.direction !== "inactive") continue;
      for (const p of this.participants.values()) {
        for (const t of [...p.tracks.values()]) if (t.mid === mid) this._removeTrack(p.peerId, t.trackId);
      }
    }
  }

  _onRemoteTrack(e) {
    const mid = e.transceiver && e.transceiver.mid;
    const info = mid !== null && mid !== undefined ? this._mids[mid] : null;
    // The stream id is the peer_id; the track id comes from the m-line's msid (browsers differ on
    // whether MediaStreamTrack.id follows it, so the SDP is the reference).
    const peerId = (info && info.peerId) || (e.streams[0] && e.streams[0].id);
    const trackId = (info && info.trackId) || e.track.id;
    if (!peerId) return;
    const p = this._participant(peerId, {});
    const t = this._trackRecord(p, trackId);
    t.kind = t.kind || e.track.kind;
    t.track = e.track;
    t.stream = e.streams[0] || new MediaStream([e.track]);
    t.mid = mid;
    this._emit("trackadded", { participant: p, ...t });
  }
}

export default SFUClient;
