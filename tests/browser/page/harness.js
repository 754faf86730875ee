// Test harness for the browser tests: drives the VideoCall plugin through the official
// janus.js (npm janus-gateway) and exposes small helpers on window.vc for Playwright.
// Everything janus.js reports is appended to vc.log as {t, what, ...}.
import Janus from "/node_modules/janus-gateway/npm/dist/janus.es.js";
import { ssrcSimulcast } from "/simulcast_sdp.js";

const TRACKS = [
  { type: "audio", capture: true, recv: true },
  { type: "video", capture: true, recv: true },
];
// With a data channel (janus.js's default label) after the media.
const tracksFor = (data) => (data ? [...TRACKS, { type: "data" }] : TRACKS);

const $ = (id) => document.getElementById(id);
const t0 = performance.now();

const vc = {
  log: [],
  janus: null,
  handle: null,
  username: null,
  peer: null,
  incomingJsep: null,
  remoteStream: new MediaStream(),
  localStream: new MediaStream(),
  ready: false,
  // Close the PeerConnection on the plugin's `hangup` event; when false, janus.js closes it
  // itself on the core `hangup` event that follows the relay's close ("Close PC").
  closeOnHangupEvent: true,
};
window.vc = vc;
window.Janus = Janus;

function record(what, extra) {
  const entry = Object.assign({ t: Math.round(performance.now() - t0), what }, extra || {});
  vc.log.push(entry);
  return entry;
}
function setState(s) { $("state").textContent = s; }

function fail(where) {
  return (err) => record("error", { where, error: String(err && err.message || err) });
}

// A promise for the next plugin message resolved by onmessage (for request/response helpers).
function sendMessage(message, jsep) {
  return new Promise((resolve, reject) => {
    const req = { message, success: resolve, error: reject };
    if (jsep) req.jsep = jsep;
    vc.handle.send(req);
  });
}

function onmessage(msg, jsep) {
  record("message", { msg, jsep: jsep ? { type: jsep.type } : null });
  const result = msg.result;
  if (msg.error) { setState("error: " + msg.error); return; }
  if (!result) return;
  const ev = result.event;
  if (ev === "registered") { vc.username = result.username; $("me").textContent = result.username; setState("registered"); }
  else if (ev === "calling") setState("calling");
  else if (ev === "incomingcall") { vc.peer = result.username; vc.incomingJsep = jsep; $("peer").textContent = vc.peer; setState("ringing"); }
  else if (ev === "accepted") {
    if (result.username) { vc.peer = result.username; $("peer").textContent = vc.peer; }
    if (jsep) vc.handle.handleRemoteJsep({ jsep, error: fail("handleRemoteJsep") });
    setState("in call");
  } else if (ev === "update") {
    // Renegotiation from the other side: answer offers with `set` + answer, apply answers.
    if (jsep && jsep.type === "offer") {
      vc.handle.createAnswer({
        jsep, tracks: TRACKS,
        success: (answer) => sendMessage({ request: "set" }, answer).catch(fail("update-answer")),
        error: fail("update-createAnswer"),
      });
    } else if (jsep) {
      vc.handle.handleRemoteJsep({ jsep, error: fail("handleRemoteJsep") });
    }
  } else if (ev === "hangup") {
    setState("hung up: " + (result.reason || ""));
    vc.peer = null; vc.incomingJsep = null;
    if (vc.closeOnHangupEvent) vc.handle.hangup();
  }
}

// janus.js's own `reconnect` (after "Lost connection"): `claim` of the session on a new WebSocket.
vc.reconnect = () => new Promise((resolve, reject) => vc.janus.reconnect({
  success: () => { record("reconnected", { id: vc.janus.getSessionId() }); resolve(vc.janus.getSessionId()); },
  error: (e) => { record("error", { where: "reconnect", error: String(e) }); reject(new Error(String(e))); },
}));

// `auth`: janus.js's credentials, { apisecret } and/or { token }.
vc.connect = (server, auth) => new Promise((resolve, reject) => {
  Janus.init({
    debug: ["warn", "error"],
    dependencies: Janus.useDefaultDependencies({ adapter: window.adapter }),
    callback: () => {
      vc.janus = new Janus({
        server,
        ...(auth || {}),
        success: () => {
          record("session", { id: vc.janus.getSessionId() });
          vc.janus.attach({
            plugin: "janus.plugin.videocall",
            opaqueId: "browsertest-" + Janus.randomString(12),
            success: (h) => { vc.handle = h; record("attached", { id: h.getId() }); setState("attached"); vc.ready = true; resolve(h.getId()); },
            error: (e) => { record("error", { where: "attach", error: String(e) }); reject(new Error(String(e))); },
            iceState: (s) => record("iceState", { state: s }),
            mediaState: (kind, on, mid) => record("mediaState", { kind, on, mid }),
            webrtcState: (on, reason) => record("webrtcState", { on, reason: reason || null }),
            slowLink: (uplink, lost, mid) => record("slowLink", { uplink, lost, mid }),
            onmessage,
            ondataopen: (label, protocol) => record("dataopen", { label, protocol: protocol || null }),
            ondata: (data, label) => record("data", { label, data: String(data) }),
            onlocaltrack: (track, on) => {
              record("localtrack", { kind: track.kind, on });
              if (on) vc.localStream.addTrack(track); else vc.localStream.removeTrack(track);
              if ($("local").srcObject !== vc.localStream) $("local").srcObject = vc.localStream;
            },
            onremotetrack: (track, mid, on, metadata) => {
              record("remotetrack", { kind: track.kind, mid, on, reason: metadata && metadata.reason || null });
              for (const old of vc.remoteStream.getTracks()) if (old.kind === track.kind) vc.remoteStream.removeTrack(old);
              if (on) vc.remoteStream.addTrack(track);
              const video = $("remote");
              if (video.srcObject !== vc.remoteStream) video.srcObject = vc.remoteStream;
              video.play().catch(() => {});
            },
            oncleanup: () => {
              record("cleanup");
              vc.remoteStream = new MediaStream(); $("remote").srcObject = null;
              vc.localStream = new MediaStream(); $("local").srcObject = null;
            },
            ondetached: () => record("detached"),
          });
        },
        error: (e) => { record("error", { where: "session", error: String(e) }); reject(new Error(String(e))); },
        destroyed: () => record("destroyed"),
      });
    },
  });
});

vc.register = (username) => sendMessage({ request: "register", username });
vc.list = () => sendMessage({ request: "list" });
vc.set = (body) => sendMessage(Object.assign({ request: "set" }, body));
vc.hangup = () => sendMessage({ request: "hangup" });

vc.call = (username, data) => new Promise((resolve, reject) => {
  vc.peer = username; $("peer").textContent = username;
  vc.handle.createOffer({
    tracks: tracksFor(data),
    success: (jsep) => sendMessage({ request: "call", username }, jsep).then(resolve, reject),
    error: (e) => { fail("createOffer")(e); reject(new Error(String(e && e.message || e))); },
  });
});

// SSRC simulcast is an offer munged before janus.js sets and sends it. janus.js's own
// `customizeSdp` cannot do it in today's Chromium: it assigns to the RTCSessionDescription's
// read-only `sdp`, so the page wraps createOffer, as munging apps do.
const createOffer = RTCPeerConnection.prototype.createOffer;
RTCPeerConnection.prototype.createOffer = async function (...args) {
  const offer = await createOffer.apply(this, args);
  if (!vc.mungeOffer) return offer;
  const sdp = vc.mungeOffer(offer.sdp);
  record("munged", { changed: sdp !== offer.sdp });
  return { type: offer.type, sdp };
};

// A call whose video simulcasts three layers of the 1280x720 fake camera ("hires"):
// form "rid" is janus.js's own `simulcast: true` (sendEncodings h/m/l), "ssrc" the munged
// a=ssrc-group:SIM offer (simulcast_sdp.js). `codec` ("vp8", "h264"...) goes first.
vc.callSimulcast = (username, form, codec) => new Promise((resolve, reject) => {
  vc.peer = username; $("peer").textContent = username;
  const video = { type: "video", capture: "hires", recv: true, codec };
  if (form === "rid") video.simulcast = true;
  vc.mungeOffer = form === "ssrc" ? ssrcSimulcast : null;
  vc.handle.createOffer({
    tracks: [TRACKS[0], video],
    success: (jsep) => { vc.offerSdp = jsep.sdp; sendMessage({ request: "call", username }, jsep).then(resolve, reject); },
    error: (e) => { fail("createOffer")(e); reject(new Error(String(e && e.message || e))); },
  });
});

vc.accept = (data) => new Promise((resolve, reject) => {
  if (!vc.incomingJsep) { reject(new Error("no incoming call")); return; }
  vc.handle.createAnswer({
    jsep: vc.incomingJsep,
    tracks: tracksFor(data),
    success: (jsep) => sendMessage({ request: "accept" }, jsep).then(resolve, reject),
    error: (e) => { fail("createAnswer")(e); reject(new Error(String(e && e.message || e))); },
  });
});

// A text on the data channel (janus.js's default label).
vc.sendData = (text) => new Promise((resolve, reject) => vc.handle.data({ text, success: resolve, error: reject }));

// Renegotiation from this side (an ICE restart or a changed track set): `set` + offer.
vc.renegotiate = (opts) => new Promise((resolve, reject) => {
  vc.handle.createOffer(Object.assign({
    tracks: TRACKS,
    success: (jsep) => sendMessage({ request: "set" }, jsep).then(resolve, reject),
    error: (e) => reject(new Error(String(e && e.message || e))),
  }, opts || {}));
});

// getStats summary: inbound/outbound RTP per kind, plus the selected candidate pair.
vc.stats = async () => {
  const pc = vc.handle && vc.handle.webrtcStuff && vc.handle.webrtcStuff.pc;
  const out = { connectionState: pc ? pc.connectionState : null, inbound: {}, outbound: {}, layers: {}, pair: null };
  if (!pc) return out;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      const codec = s.codecId && report.get(s.codecId);
      out.inbound[s.kind] = { bytesReceived: s.bytesReceived || 0, packetsReceived: s.packetsReceived || 0,
        framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0,
        framesPerSecond: s.framesPerSecond || 0, codecId: s.codecId || null,
        mimeType: codec ? codec.mimeType : null };
    } else if (s.type === "outbound-rtp") {
      // Simulcast: one outbound-rtp per layer, by rid (SSRC simulcast: by SSRC).
      const entry = { bytesSent: s.bytesSent || 0, packetsSent: s.packetsSent || 0, rid: s.rid || null,
        frameWidth: s.frameWidth || 0, qualityLimitationReason: s.qualityLimitationReason || null };
      if (!out.outbound[s.kind]) out.outbound[s.kind] = entry;
      (out.layers[s.kind] = out.layers[s.kind] || []).push(entry);
    } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
      const local = report.get(s.localCandidateId), remote = report.get(s.remoteCandidateId);
      out.pair = { local: local && `${local.address}:${local.port}/${local.candidateType}`,
                   remote: remote && `${remote.address}:${remote.port}/${remote.candidateType}` };
    }
  });
  return out;
};

vc.video = (id) => {
  const v = $(id || "remote");
  return { currentTime: v.currentTime, paused: v.paused, readyState: v.readyState,
           width: v.videoWidth, height: v.videoHeight,
           tracks: v.srcObject ? v.srcObject.getTracks().map((t) => `${t.kind}:${t.readyState}`) : [] };
};

vc.events = (what) => vc.log.filter((e) => !what || e.what === what);
vc.pluginEvents = () => vc.log.filter((e) => e.what === "message" && e.msg.result).map((e) => e.msg.result.event);

setState("loaded");
record("loaded");
window.vcLoaded = true;
