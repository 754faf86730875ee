// videocall demo page: 1:1 calls through the Janus VideoCall plugin API, spoken by the
// official janus.js (npm janus-gateway) with webrtc-adapter, both served by videocall
// serve from node_modules. The page talks only to the host and port it was loaded from.
//
// Flow (the VideoCall plugin's): register -> list (polled) -> call (offer) / incomingcall
// -> accept (answer) -> accepted -> webrtcup ... set (audio, video, bitrate) ... hangup.
// `update` carries a renegotiation from the other side, answered as Janus's demo does.
//
// This module holds the page's state and talks to janus.js; phases.js is the table of phase
// changes (every one goes through `go`), view.js writes the page from the state, words.js
// says things (a VideoCall error in words by its code).

import { PHASES, next } from "./phases.js";
import {
  $, clearMessage, render as renderPage, renderCallState, renderClock, renderPeople, renderRemote, renderStats,
  renderToggles, say, setConn,
} from "./view.js";
import {
  ALREADY_IN_CALL, ALREADY_REGISTERED, CONSENT_HINT, DECLINED, EXPLICIT_HANGUP, MAX_NAME, NO_SUCH_USERNAME,
  REGISTER_FIRST, USERNAME_TAKEN, after, hangupWords, mediaProblem, pluginErrorWords, quote, rate,
} from "./words.js";

const JANUS_URL = "/node_modules/janus-gateway/npm/dist/janus.es.js";
const SERVER = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
// A token from the page's address (?token=...), for a server with token_auth; janus.js sends it.
const TOKEN = new URLSearchParams(location.search).get("token") || undefined;
const LIST_EVERY_MS = 3000;
const RETRY_MS = 5000;
// A broken connection is first reclaimed (janus.js's `reconnect`: `claim` of the same session,
// its name and call kept): this often, this many times, well within the server's
// reclaim_session_timeout (30 s by default). A session the server no longer has starts over.
const RECLAIM_RETRY_MS = 2000;
const RECLAIM_TRIES = 8;
const RECLAIM_ANSWER_MS = 5000;
const STATS_EVERY_MS = 1000;

const state = {
  phase: "loading",
  unusable: false,         // no janus.js or no WebRTC: this page can't make calls
  janus: null,
  handle: null,
  everConnected: false,
  me: null,
  wantName: null,          // register this name once attached (after a reconnect)
  pending: null,           // {request, username} awaiting its result or error
  call: null,              // the call being set up or held (newCall), or null
  people: [],
  updates: 0,              // renegotiations received (`update` events)
  localStream: new MediaStream(),
  remoteStream: new MediaStream(),
  timers: {},
};

/** One call's state; callbacks that outlive their call compare it with `state.call`. */
function newCall(peer, incomingJsep = null) {
  return {
    peer,
    incomingJsep,
    ringing: false,        // the server said `calling`: the other side rings
    mediaUp: false,        // janus.js said webrtcup
    startedAt: 0,
    reconnecting: false,   // ICE disconnected during the call
    // What `set` asked for; the server resets it when a call ends, and so does a new call here.
    audioOn: true,
    videoOn: true,
    bitrate: 0,
    sending: "both",       // what we capture: both | audio | none
    remoteMuted: {},
    noVideoSeconds: 0,
    lastStats: null,
    statsText: "",
    lossNote: "",          // janus.js's slowLink, shown with the next stats line
  };
}

let Janus = null;
const canCapture = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);

const error = (text, action) => say(text, "error", action);
const warn = (text, action) => say(text, "warn", action);
const render = () => renderPage(state, dial);
const can = (event) => next(state.phase, event) !== null;

/** Move to the phase `event` leads to (phases.js); false, changing nothing, if not allowed now. */
function go(event) {
  const phase = next(state.phase, event);
  if (phase === null) return false;
  state.phase = phase;
  render();
  return true;
}

// --- connecting to the server ---------------------------------------------------------------

function connect() {
  clearTimeout(state.timers.retry);
  if (state.janus) { try { state.janus.destroy({ notifyDestroyed: false }); } catch (_) { /* already gone */ } }
  setConn("connecting", `Connecting to ${location.host}…`);
  go("connect");
  const janus = new Janus({
    server: SERVER,
    token: TOKEN,
    success: () => attach(janus),
    error: (cause) => connectionLost(janus, cause),
    destroyed: () => serverLost(janus, "session ended"),
  });
  state.janus = janus;
}

function attach(janus) {
  janus.attach({
    plugin: "janus.plugin.videocall",
    opaqueId: "videocall-demo-" + Janus.randomString(12),
    success: (handle) => {
      if (state.janus !== janus) return;
      state.handle = handle;
      state.everConnected = true;
      setConn("online", `Connected to ${location.host}`);
      clearMessage("connection");
      go("attached");
      if (state.wantName) register(state.wantName);
      else $("username").focus();
    },
    error: (cause) => error(`The server would not start a video call for this page (${cause}). Reload to try again.`),
    consentDialog: (on) => {
      if (on) say(CONSENT_HINT, "info", null, "consent");
      else clearMessage("consent");
    },
    iceState: (s) => onIceState(s),
    webrtcState: (on, reason) => onWebrtcState(on, reason),
    slowLink: (uplink, lost) => {
      if (state.call) {
        state.call.lossNote = uplink ? `Your connection is losing packets (${lost} lost)` : `Packets from ${state.call.peer} are being lost (${lost})`;
      }
    },
    onmessage: onMessage,
    onlocaltrack: onLocalTrack,
    onremotetrack: onRemoteTrack,
    oncleanup: onCleanup,
    ondetached: () => { if (state.janus === janus) serverLost(janus, "detached"); },
  });
}

/** The connection broke: claim the session back on a new one (the call goes on meanwhile, its
 * media does not use this connection); if the server no longer has it, start over. */
function connectionLost(janus, cause) {
  if (state.janus !== janus) return;
  if (!state.handle) { serverLost(janus, cause); return; }  // nothing to keep yet
  console.warn("videocall: server connection lost, reclaiming the session:", cause);
  setConn("connecting", `Connection lost, reconnecting to ${location.host}…`);
  reclaim(janus, cause, 1);
}

function reclaim(janus, cause, attempt) {
  if (state.janus !== janus) return;
  // janus.js calls neither callback when the new socket closes before the claim is answered:
  // an attempt not answered in time counts as failed.
  let settled = false;
  const failed = (why) => {
    if (settled || state.janus !== janus) return;
    settled = true;
    clearTimeout(state.timers.reclaim);
    const gone = /no such session/i.test(String(why));
    if (gone || attempt >= RECLAIM_TRIES) { serverLost(janus, `${cause}; ${why}`); return; }
    state.timers.retry = setTimeout(() => reclaim(janus, cause, attempt + 1), RECLAIM_RETRY_MS);
  };
  state.timers.reclaim = setTimeout(() => failed("no answer to the claim"), RECLAIM_ANSWER_MS);
  janus.reconnect({
    success: () => {
      if (settled || state.janus !== janus) return;
      settled = true;
      clearTimeout(state.timers.reclaim);
      setConn("online", `Connected to ${location.host}`);
      clearMessage("connection");
    },
    error: failed,
  });
}

function serverLost(janus, cause) {
  if (state.janus !== janus) return;
  const wasInCall = !!PHASES[state.phase].call;
  if (state.me) state.wantName = state.me;
  stopCallTimers();
  state.call = null;
  state.pending = null;
  if (state.handle) state.handle.hangup();  // stop the camera and close the PeerConnection
  state.janus = null;
  state.handle = null;
  state.me = null;
  state.people = [];
  clearInterval(state.timers.list);
  setConn("offline", "Offline");
  go("lost");
  const where = location.host;
  const text = !state.everConnected
    ? `Can't reach the videocall server at ${where}. Is it running? Trying again every ${RETRY_MS / 1000} s.`
    : `Lost the connection to the server at ${where}${wasInCall ? ", so the call ended" : ""}. Reconnecting…`;
  console.warn("videocall: server connection lost:", cause);
  say(text, "error", { label: "Try now", run: connect }, "connection");
  state.timers.retry = setTimeout(connect, RETRY_MS);
}

function send(message, jsep) {
  if (!state.handle) { error("Not connected to the server."); return; }
  const request = { message, error: (cause) => error(`Couldn't send that to the server (${cause}).`) };
  if (jsep) request.jsep = jsep;
  state.handle.send(request);
}

// --- registration and the people list --------------------------------------------------------

function register(raw) {
  const name = (raw || "").trim();
  if (!name) { error("Type a name first."); $("username").focus(); return; }
  if ([...name].length > MAX_NAME) { error(`That name is too long (at most ${MAX_NAME} characters).`); return; }
  if (!can("register")) return;
  state.pending = { request: "register", username: name };
  go("register");
  send({ request: "register", username: name });
}

function onRegistered(name) {
  if (!can("registered")) return;
  state.me = name;
  state.wantName = null;
  state.pending = null;
  try { localStorage.setItem("videocall.name", name); } catch (_) { /* private mode */ }
  go("registered");
  say(`You're online as ${quote(name)}. Call someone, or wait for a call.`);
  refreshList();
  clearInterval(state.timers.list);
  state.timers.list = setInterval(refreshList, LIST_EVERY_MS);
}

function refreshList() {
  if (state.handle && state.me) send({ request: "list" });
}

// --- calls -------------------------------------------------------------------------------------

function tracksFor(mode) {
  return [
    { type: "audio", capture: mode !== "none", recv: true },
    { type: "video", capture: mode === "both", recv: true },
  ];
}

const FALLBACK_ERRORS = ["NotFoundError", "NotReadableError", "OverconstrainedError", "AbortError", "TypeError"];

// createOffer / createAnswer with the camera and microphone; without a camera, with the
// microphone only; without either, receive only (and say so).
function negotiate(kind, jsep, call, done, failed) {
  const modes = canCapture ? ["both", "audio", "none"] : ["none"];
  const attempt = (i) => {
    const options = {
      tracks: tracksFor(modes[i]),
      success: (local) => {
        call.sending = modes[i];
        if (modes[i] === "audio") warn(`No camera available: ${call.peer} will hear you but not see you.`);
        if (modes[i] === "none") {
          warn(canCapture ? `No camera or microphone available: you can see and hear ${call.peer}, but they can't see or hear you.`
            : `This page isn't secure (https or localhost), so the browser won't share your camera or microphone: ${call.peer} won't see or hear you.`);
        }
        done(local);
      },
      error: (err) => {
        console.warn("videocall: getUserMedia/WebRTC error", err);
        if (state.call !== call) return;
        if (FALLBACK_ERRORS.includes(err && err.name) && i + 1 < modes.length) {
          state.handle.hangup();  // a fresh PeerConnection for the next attempt
          attempt(i + 1);
          return;
        }
        failed(err);
      },
    };
    if (jsep) options.jsep = jsep;
    if (kind === "offer") state.handle.createOffer(options);
    else state.handle.createAnswer(options);
  };
  attempt(0);
}

function dial(raw) {
  const name = (raw || "").trim();
  if (!can("dial")) return;
  if (!name) { error("Type the name of the person to call."); return; }
  if (name === state.me) { error("You can't call yourself: open this page in another browser or device and call that name."); return; }
  clearMessage();
  const call = state.call = newCall(name);
  state.pending = { request: "call", username: name };
  go("dial");
  negotiate("offer", null, call,
    (offer) => {
      if (state.call === call) send({ request: "call", username: name }, offer);
      else if (!state.call && state.handle) state.handle.hangup();  // cancelled while the camera started
    },
    (err) => { endCall(); error(mediaProblem(err)); });
}

function onIncoming(caller, jsep) {
  if (!can("ring")) return;
  clearMessage();
  state.call = newCall(caller, jsep);
  go("ring");
  $("accept").focus();
}

function accept() {
  const call = state.call;
  if (!can("answer") || !call.incomingJsep) return;
  state.pending = { request: "accept", username: call.peer };
  go("answer");
  negotiate("answer", call.incomingJsep, call,
    (answer) => { if (state.call === call) send({ request: "accept" }, answer); },
    (err) => {
      // Back to ringing: the person can allow the camera and accept again, or decline.
      state.handle.hangup();
      state.pending = null;
      go("unanswered");
      error(mediaProblem(err));
    });
}

function decline() {
  if (!can("decline")) return;
  const caller = state.call.peer;
  send({ request: "hangup", reason: DECLINED });
  endCall("decline");
  say(`You declined the call from ${caller}.`);
}

function hangUp() {
  const { phase, call } = state;
  if (!can("hangup")) return;
  send({ request: "hangup" });
  endCall("hangup");
  if (phase === "calling") say(`Call to ${call.peer} cancelled.`);
  else say(`Call with ${call.peer} ended${after(call.startedAt)}.`);
}

function onCalling() {
  if (!state.call) return;
  state.call.ringing = true;
  if (state.pending && state.pending.request === "call") state.pending = null;
  renderCallState(state);
}

function onAccepted(username, jsep) {
  if (!can("accepted")) return;
  const call = state.call;
  if (username) call.peer = username;
  state.pending = null;
  if (jsep) {
    state.handle.handleRemoteJsep({
      jsep,
      error: (err) => { send({ request: "hangup" }); endCall(); error(`The call couldn't start: ${err && err.message || err}.`); },
    });
  }
  go("accepted");
  if (call.mediaUp) callStarted();
}

function onWebrtcState(on, reason) {
  const call = state.call;
  if (!call) return;
  call.mediaUp = on;
  if (on) callStarted();
  // The server closed our PeerConnection without a hangup event: our media leg failed.
  else if (endCall("dropped")) error(`The call with ${call.peer} dropped: the media connection was lost${reason ? ` (${reason})` : ""}.`);
}

function onIceState(ice) {
  const call = state.call;
  if (!call) return;
  if (ice === "failed") {
    if (!can("dropped")) return;
    send({ request: "hangup" });
    endCall("dropped");
    error(`The call with ${call.peer} couldn't connect: the network between you and the server is blocking media.`);
  } else if (ice === "disconnected" || ice === "connected" || ice === "completed") {
    call.reconnecting = ice === "disconnected";
    renderCallState(state);
  }
}

function callStarted() {
  if (!can("media-up")) return;
  state.call.startedAt = Date.now();
  go("media-up");
  stopCallTimers();
  state.timers.clock = setInterval(() => renderClock(state), 1000);
  state.timers.stats = setInterval(updateStats, STATS_EVERY_MS);
}

function onHangupEvent(result) {
  const who = result.username, reason = result.reason || "";
  if (who === state.me && reason === EXPLICIT_HANGUP) return;  // the answer to our own hangup
  const { phase, call } = state;
  if (!endCall()) return;
  const [level, text] = hangupWords(reason, phase, call.peer, call.startedAt);
  say(text, level);
}

function onPluginError(code, text) {
  const { request, username } = state.pending || {};
  state.pending = null;
  console.warn("videocall: plugin error", code, text);
  const [level, words] = pluginErrorWords(code, request, username, text);
  if (request === "register" || code === USERNAME_TAKEN || code === REGISTER_FIRST) go("refused");
  else if ((request === "call" || request === "accept") && code !== ALREADY_REGISTERED && code !== ALREADY_IN_CALL) endCall();
  say(words, level);
  if (code === USERNAME_TAKEN) $("username").select();
  if (code === NO_SUCH_USERNAME) refreshList();
}

// A renegotiation from the other side (an ICE restart, a changed track set): answer offers
// with `set` + answer, apply answers, as Janus's videocall demo does. Unlike the demo, the
// answer passes no tracks, so janus.js keeps the senders as they are instead of capturing
// the camera and microphone a second time.
function onUpdate(jsep) {
  if (!jsep || !state.handle) return;
  state.updates += 1;
  if (jsep.type === "answer") {
    state.handle.handleRemoteJsep({ jsep, error: (err) => warn(`A media update failed (${err && err.message || err}).`) });
    return;
  }
  const peer = state.call ? state.call.peer : null;
  state.handle.createAnswer({
    jsep,
    success: (answer) => send({ request: "set" }, answer),
    error: (err) => warn(`A media update from ${peer} failed (${err && err.message || err}).`),
  });
}

function onMessage(msg, jsep) {
  if (msg.error) { onPluginError(msg.error_code, String(msg.error)); return; }
  const result = msg.result;
  if (!result) return;
  if (Array.isArray(result.list)) {
    state.people = result.list.slice().sort((a, b) => a.localeCompare(b));
    renderPeople(state, dial);
    return;
  }
  switch (result.event) {
    case "registered": onRegistered(result.username); break;
    case "calling": onCalling(); break;
    case "incomingcall": onIncoming(result.username, jsep); break;
    case "accepted": onAccepted(result.username, jsep); break;
    case "update": onUpdate(jsep); break;
    case "hangup": onHangupEvent(result); break;
    default: break;  // "set" acknowledgements, "simulcast"
  }
}

// --- ending a call ---------------------------------------------------------------------------

function stopCallTimers() {
  clearInterval(state.timers.clock);
  clearInterval(state.timers.stats);
}

/** End the call through `event` (phases.js): false, changing nothing, when there is no call to end. */
function endCall(event = "end") {
  if (!can(event)) return false;
  stopCallTimers();
  state.call = null;
  state.pending = null;
  if (state.handle) state.handle.hangup();  // local clean-up only (no request)
  go(event);
  refreshList();
  return true;
}

// --- media -------------------------------------------------------------------------------------

function onLocalTrack(track, on) {
  const stream = state.localStream;
  for (const old of stream.getTracks()) if (old.kind === track.kind && (on || old.id === track.id)) stream.removeTrack(old);
  if (on) {
    stream.addTrack(track);
    const call = state.call;
    track.enabled = !call || (track.kind === "audio" ? call.audioOn : call.videoOn);
  }
  const video = $("local-video");
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play().catch(() => {});
  renderToggles(state);
}

function onRemoteTrack(track, mid, on, metadata) {
  const reason = metadata && metadata.reason;
  const stream = state.remoteStream;
  const call = state.call;
  if (on) {
    for (const old of stream.getTracks()) if (old.kind === track.kind && old.id !== track.id) stream.removeTrack(old);
    if (!stream.getTrackById(track.id)) stream.addTrack(track);
    if (call) call.remoteMuted[track.kind] = false;
    const video = $("remote-video");
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play().catch((err) => {
      if (err && err.name === "NotAllowedError") {
        warn(`Your browser paused ${call ? call.peer : "the other side"}'s audio.`, { label: "Play sound", run: () => video.play().catch(() => {}) });
      }
    });
  } else if (reason === "mute") {
    if (call) call.remoteMuted[track.kind] = true;
  } else {
    const old = stream.getTrackById(track.id);
    if (old) stream.removeTrack(old);
  }
  renderRemote(state);
}

function onCleanup() {
  state.localStream = new MediaStream();
  state.remoteStream = new MediaStream();
  $("local-video").srcObject = null;
  $("remote-video").srcObject = null;
  renderToggles(state);
  renderRemote(state);
}

function setLocalEnabled(kind, on) {
  for (const track of state.localStream.getTracks()) if (track.kind === kind) track.enabled = on;
}

function toggleAudio() {
  const call = state.call;
  if (!call) return;
  call.audioOn = !call.audioOn;
  setLocalEnabled("audio", call.audioOn);
  send({ request: "set", audio: call.audioOn });
  renderToggles(state);
}

function toggleVideo() {
  const call = state.call;
  if (!call) return;
  call.videoOn = !call.videoOn;
  setLocalEnabled("video", call.videoOn);
  send({ request: "set", video: call.videoOn });
  renderToggles(state);
}

function setBitrate(value) {
  const call = state.call;
  if (!call) return;
  call.bitrate = Number(value) || 0;
  send({ request: "set", bitrate: call.bitrate });
  say(call.bitrate ? `Your video to ${call.peer} is now capped at ${rate(call.bitrate)}.` : `Your video to ${call.peer} is no longer capped.`);
}

async function readStats() {
  const pc = state.handle && state.handle.webrtcStuff && state.handle.webrtcStuff.pc;
  const out = { at: performance.now(), inbound: {}, outbound: {} };
  if (!pc) return out;
  const report = await pc.getStats();
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      out.inbound[s.kind] = { bytesReceived: s.bytesReceived || 0, packetsReceived: s.packetsReceived || 0,
        framesDecoded: s.framesDecoded || 0, frameWidth: s.frameWidth || 0, frameHeight: s.frameHeight || 0 };
    } else if (s.type === "outbound-rtp") {
      out.outbound[s.kind] = { bytesSent: s.bytesSent || 0, packetsSent: s.packetsSent || 0 };
    }
  });
  return out;
}

async function updateStats() {
  const call = state.call;  // the timer runs only in a call (callStarted, stopCallTimers)
  if (!call) return;
  const now = await readStats();
  if (state.call !== call) return;  // the call ended meanwhile
  const before = call.lastStats;
  call.lastStats = now;
  if (!before) return;
  const seconds = (now.at - before.at) / 1000;
  const bits = (side, kind, field) => {
    const a = before[side][kind], b = now[side][kind];
    return a && b ? Math.max(0, (b[field] - a[field]) * 8 / seconds) : 0;
  };
  const inVideo = bits("inbound", "video", "bytesReceived");
  const inAll = inVideo + bits("inbound", "audio", "bytesReceived");
  const outAll = bits("outbound", "video", "bytesSent") + bits("outbound", "audio", "bytesSent");
  call.noVideoSeconds = inVideo > 0 ? 0 : call.noVideoSeconds + seconds;
  const v = now.inbound.video;
  const size = v && v.frameWidth ? ` · ${v.frameWidth}×${v.frameHeight}` : "";
  const note = call.lossNote ? ` · ${call.lossNote}` : "";
  call.statsText = `Receiving ${rate(inAll)}${size} · sending ${rate(outAll)}${note}`;
  call.lossNote = "";
  renderStats(state);
  renderRemote(state);
}

// --- start -----------------------------------------------------------------------------------

function wireUp() {
  $("register-form").addEventListener("submit", (e) => { e.preventDefault(); register($("username").value); });
  $("dial-form").addEventListener("submit", (e) => { e.preventDefault(); dial($("callee").value); $("callee").value = ""; });
  $("accept").addEventListener("click", accept);
  $("decline").addEventListener("click", decline);
  $("hangup").addEventListener("click", hangUp);
  $("toggle-audio").addEventListener("click", toggleAudio);
  $("toggle-video").addEventListener("click", toggleVideo);
  $("bitrate").addEventListener("change", (e) => setBitrate(e.target.value));
  $("message-close").addEventListener("click", () => clearMessage());
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") decline(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshList(); });
  const share = new URL(location.href);
  share.searchParams.delete("token"); // one's token is not to be passed on with the link
  $("share-link").href = share.href;
  $("share-link").textContent = location.host + location.pathname;
  try { $("username").value = localStorage.getItem("videocall.name") || ""; } catch (_) { /* private mode */ }
}

function fatal(text) {
  state.unusable = true;
  setConn("offline", "Unavailable");
  go("unusable");
  error(text);
}

async function main() {
  wireUp();
  try {
    ({ default: Janus } = await import(JANUS_URL));
    if (!window.adapter) throw new Error("webrtc-adapter did not load");
  } catch (err) {
    console.error("videocall: could not load janus.js / webrtc-adapter", err);
    fatal("This server is missing its browser libraries (janus.js and webrtc-adapter). Whoever runs it needs to run `npm ci` in the videocall folder; then reload this page.");
    return;
  }
  Janus.init({
    debug: ["warn", "error"],
    dependencies: Janus.useDefaultDependencies({ adapter: window.adapter }),
    callback: () => {
      if (!Janus.isWebrtcSupported()) {
        fatal("This browser can't make WebRTC calls. Try a recent Chrome, Firefox, Edge or Safari.");
        return;
      }
      if (!canCapture) {
        warn("This page isn't served over https (or from localhost), so your browser won't share your camera or microphone here. You can still join and see and hear others.");
      }
      connect();
    },
  });
}

// For the browser tests and the curious: a read-only view of the page's state, plus a
// renegotiation from this side (janus.js re-offer sent with `set`, answered via `update`).
window.videocallDemo = {
  get phase() { return state.phase; },
  get me() { return state.me; },
  get peer() { return state.call ? state.call.peer : null; },
  get people() { return state.people.slice(); },
  get updates() { return state.updates; },
  stats: readStats,
  video(id) {
    const v = $(id === "local" ? "local-video" : "remote-video");
    return { currentTime: v.currentTime, paused: v.paused, readyState: v.readyState, width: v.videoWidth, height: v.videoHeight };
  },
  renegotiate(options) {
    return new Promise((resolve, reject) => {
      state.handle.createOffer(Object.assign({
        success: (offer) => { send({ request: "set" }, offer); resolve(); },
        error: (err) => reject(new Error(String(err && err.message || err))),
      }, options || {}));
    });
  },
};

main();
