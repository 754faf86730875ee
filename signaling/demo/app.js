// videocall demo page: 1:1 calls through the Janus VideoCall plugin API, spoken by the
// official janus.js (npm janus-gateway) with webrtc-adapter, both served by videocall
// serve from node_modules. The page talks only to the host and port it was loaded from.
//
// Flow (the VideoCall plugin's): register -> list (polled) -> call (offer) / incomingcall
// -> accept (answer) -> accepted -> webrtcup ... set (audio, video, bitrate) ... hangup.
// `update` carries a renegotiation from the other side, answered as Janus's demo does.

const JANUS_URL = "/node_modules/janus-gateway/npm/dist/janus.es.js";
const SERVER = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/`;
const LIST_EVERY_MS = 3000;
const RETRY_MS = 5000;
const STATS_EVERY_MS = 1000;
const MAX_NAME = 128;
// Reasons the server puts in `hangup` events (Janus's texts).
const BUSY = "User busy";
const REMOTE_HANGUP = "Remote WebRTC hangup";
const EXPLICIT_HANGUP = "Explicit hangup";
const DECLINED = "Call declined";
const CONSENT_HINT = "Allow the camera and microphone when your browser asks.";

const $ = (id) => document.getElementById(id);
const CALL_PHASES = ["calling", "ringing", "answering", "connecting", "in-call"];

const state = {
  phase: "loading",
  janus: null,
  handle: null,
  everConnected: false,
  me: null,
  wantName: null,          // register this name once attached (after a reconnect)
  peer: null,
  outgoing: false,
  incomingJsep: null,
  pending: null,           // {request, username} awaiting its result or error
  mediaUp: false,
  startedAt: 0,
  audioOn: true,
  videoOn: true,
  bitrate: 0,
  sending: "both",         // what we capture: both | audio | none
  localStream: new MediaStream(),
  remoteStream: new MediaStream(),
  remoteMuted: {},
  noVideoSeconds: 0,
  lastStats: null,
  people: [],
  peopleKey: "",
  updates: 0,              // renegotiations received (`update` events)
  timers: {},
};

let Janus = null;
const canCapture = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);

// --- small UI helpers ---------------------------------------------------------------------

function show(el, on) { el.hidden = !on; }

function initials(name) {
  const clean = (name || "?").trim();
  return (Array.from(clean)[0] || "?").toUpperCase();
}

function paintAvatar(el, name) {
  el.textContent = initials(name);
  let hash = 0;
  for (const ch of name || "") hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  el.style.setProperty("--hue", String(hash % 360));
}

function quote(name) { return `“${name}”`; }

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function rate(bps) {
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}

let messageTimer = null;
function say(text, level = "info", action = null) {
  clearTimeout(messageTimer);
  const box = $("message");
  box.dataset.level = level;
  $("message-text").textContent = text;
  const button = $("message-action");
  if (action) {
    button.textContent = action.label;
    button.onclick = () => { clearMessage(); action.run(); };
  }
  show(button, !!action);
  show(box, true);
  if (level === "info" && !action) messageTimer = setTimeout(clearMessage, 8000);
}
function clearMessage() { clearTimeout(messageTimer); show($("message"), false); }
const error = (text, action) => say(text, "error", action);
const warn = (text, action) => say(text, "warn", action);

function setConn(kind, text) {
  $("conn").dataset.state = kind;
  $("conn-text").textContent = text;
}

// --- phases: what the page shows follows from state.phase ----------------------------------

function setPhase(phase) {
  state.phase = phase;
  document.body.dataset.phase = phase;
  render();
}

function render() {
  const { phase, me, peer } = state;
  const online = !!state.handle;
  const inCall = CALL_PHASES.includes(phase);
  const live = phase === "in-call" || phase === "connecting";

  // Registration and the people list.
  show($("register-form"), !me);
  $("username").disabled = !online || phase === "registering";
  $("register").disabled = !online || phase === "registering";
  $("register").textContent = phase === "registering" ? "Joining…" : "Join";
  show($("me-card"), !!me);
  show($("people-card"), !!me);
  if (me) { $("me").textContent = me; paintAvatar($("me-avatar"), me); }
  $("dial").disabled = phase !== "idle";
  $("callee").disabled = phase !== "idle";
  renderPeople();

  // The stage.
  document.body.toggleAttribute("data-in-call", inCall);
  show($("pip"), live || phase === "calling" || phase === "answering");
  const caption = {
    loading: "Loading…",
    "connecting-server": "Connecting to the server…",
    offline: "Not connected to the server",
    ready: "Choose a name to start",
    registering: "Joining…",
    idle: "Call someone from the list, or wait for a call",
    calling: `Calling ${peer}…`,
    ringing: `${peer} is calling you`,
    answering: `Answering ${peer}…`,
  }[phase];
  const stateText = {
    calling: state.pending && state.pending.request === "call" ? `Calling ${peer}…` : `Ringing ${peer}…`,
    ringing: `Incoming call from ${peer}`,
    answering: `Answering ${peer}…`,
    connecting: `Connecting to ${peer}…`,
    "in-call": `In call with ${peer}`,
  }[phase];
  $("call-state").textContent = stateText || (me ? "Not in a call" : "");
  if (!live) $("call-timer").textContent = "";
  if (caption !== undefined) $("remote-caption").textContent = caption;
  paintAvatar($("remote-avatar"), inCall ? peer : "");
  $("remote-avatar").hidden = !inCall;
  renderRemoteOverlay();

  // Controls: only while a call is set up.
  for (const id of ["toggle-audio", "toggle-video", "bitrate"]) $(id).disabled = !live;
  $("hangup").disabled = !["calling", "answering", "connecting", "in-call"].includes(phase);
  $("hangup").querySelector(".label").textContent = phase === "calling" ? "Cancel" : "Hang up";
  renderToggles();

  // The incoming call dialog.
  show($("incoming"), phase === "ringing");
  if (phase === "ringing") {
    $("incoming-name").textContent = peer;
    paintAvatar($("incoming-avatar"), peer);
  }
  document.title = phase === "ringing" ? `📞 ${peer} is calling` : phase === "in-call" ? `In call with ${peer} · videocall`
    : me ? `${me} · videocall` : "videocall";
}

function renderToggles() {
  const audio = $("toggle-audio"), video = $("toggle-video");
  audio.setAttribute("aria-pressed", String(!state.audioOn));
  audio.querySelector(".label").textContent = state.audioOn ? "Mute" : "Unmute";
  audio.title = state.audioOn ? "Mute your microphone" : "Unmute your microphone";
  video.setAttribute("aria-pressed", String(!state.videoOn));
  video.querySelector(".label").textContent = state.videoOn ? "Stop video" : "Start video";
  video.title = state.videoOn ? "Stop sending your camera" : "Send your camera again";
  $("bitrate").value = String(state.bitrate);
  const hasCamera = state.localStream.getVideoTracks().length > 0;
  const localCaption = !hasCamera ? (state.sending === "none" ? "Not sending" : "No camera") : state.videoOn ? "" : "Camera off";
  $("local-caption").textContent = localCaption;
  show($("local-caption"), !!localCaption && !$("pip").hidden);
}

function renderRemoteOverlay() {
  const { phase, peer } = state;
  let text = null;
  if (phase === "connecting") text = `Connecting to ${peer}…`;
  else if (phase === "in-call") {
    const video = state.remoteStream.getVideoTracks()[0];
    if (!video || state.remoteMuted.video || state.noVideoSeconds >= 2) text = `No video from ${peer}`;
  } else text = $("remote-caption").textContent;
  if (text !== null) $("remote-caption").textContent = text;
  show($("remote-overlay"), text !== null);
}

function renderPeople() {
  const others = state.people.filter((name) => name !== state.me);
  const key = JSON.stringify([others, state.phase, state.peer]);
  if (key === state.peopleKey) return;
  state.peopleKey = key;
  const list = $("people");
  const focused = document.activeElement && document.activeElement.closest("li");
  const focusedName = focused ? focused.dataset.user : null;
  list.replaceChildren();
  for (const name of others) {
    const li = document.createElement("li");
    li.dataset.user = name;
    const avatar = document.createElement("span");
    avatar.className = "avatar small";
    avatar.setAttribute("aria-hidden", "true");
    paintAvatar(avatar, name);
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "call-button";
    const withThem = CALL_PHASES.includes(state.phase) && state.peer === name;
    button.textContent = withThem ? "In call" : "Call";
    button.disabled = state.phase !== "idle";
    button.setAttribute("aria-label", `Call ${name}`);
    button.addEventListener("click", () => call(name));
    li.append(avatar, label, button);
    list.append(li);
    if (name === focusedName) button.focus();
  }
  $("people-count").textContent = others.length ? String(others.length) : "";
  show($("people-empty"), others.length === 0);
}

// --- connecting to the server ---------------------------------------------------------------

function connect() {
  clearTimeout(state.timers.retry);
  if (state.janus) { try { state.janus.destroy({ notifyDestroyed: false }); } catch (_) { /* already gone */ } }
  setConn("connecting", `Connecting to ${location.host}…`);
  setPhase("connecting-server");
  const janus = new Janus({
    server: SERVER,
    success: () => attach(janus),
    error: (cause) => serverLost(janus, cause),
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
      if ($("message").dataset.kind === "connection") clearMessage();
      setPhase("ready");
      if (state.wantName) register(state.wantName);
      else $("username").focus();
    },
    error: (cause) => error(`The server would not start a video call for this page (${cause}). Reload to try again.`),
    consentDialog: (on) => {
      if (on) say(CONSENT_HINT);
      else if ($("message-text").textContent === CONSENT_HINT) clearMessage();
    },
    iceState: (s) => onIceState(s),
    webrtcState: (on, reason) => onWebrtcState(on, reason),
    slowLink: (uplink, lost) => {
      $("stats").dataset.warn = uplink ? `Your connection is losing packets (${lost} lost)` : `Packets from ${state.peer} are being lost (${lost})`;
    },
    onmessage: onMessage,
    onlocaltrack: onLocalTrack,
    onremotetrack: onRemoteTrack,
    oncleanup: onCleanup,
    ondetached: () => { if (state.janus === janus) serverLost(janus, "detached"); },
  });
}

function serverLost(janus, cause) {
  if (state.janus !== janus) return;
  const wasInCall = CALL_PHASES.includes(state.phase);
  if (state.me) state.wantName = state.me;
  stopCallTimers();
  resetCall();
  if (state.handle) state.handle.hangup();  // stop the camera and close the PeerConnection
  state.janus = null;
  state.handle = null;
  state.me = null;
  state.people = [];
  clearInterval(state.timers.list);
  setConn("offline", "Offline");
  setPhase("offline");
  const where = location.host;
  const text = !state.everConnected
    ? `Can't reach the videocall server at ${where}. Is it running? Trying again every ${RETRY_MS / 1000} s.`
    : `Lost the connection to the server at ${where}${wasInCall ? ", so the call ended" : ""}. Reconnecting…`;
  console.warn("videocall: server connection lost:", cause);
  error(text, { label: "Try now", run: connect });
  $("message").dataset.kind = "connection";
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
  state.pending = { request: "register", username: name };
  setPhase("registering");
  send({ request: "register", username: name });
}

function onRegistered(name) {
  state.me = name;
  state.wantName = null;
  state.pending = null;
  try { localStorage.setItem("videocall.name", name); } catch (_) { /* private mode */ }
  setPhase("idle");
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

function mediaProblem(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Your browser blocked the camera and microphone. Allow them for this page (the icon in the address bar), then try again.";
  }
  return `Couldn't start your camera or microphone (${(err && (err.message || err.name)) || err}).`;
}

// createOffer / createAnswer with the camera and microphone; without a camera, with the
// microphone only; without either, receive only (and say so).
function negotiate(kind, jsep, done, failed) {
  const modes = canCapture ? ["both", "audio", "none"] : ["none"];
  const attempt = (i) => {
    const options = {
      tracks: tracksFor(modes[i]),
      success: (local) => {
        state.sending = modes[i];
        if (modes[i] === "audio") warn(`No camera available: ${state.peer} will hear you but not see you.`);
        if (modes[i] === "none") {
          warn(canCapture ? `No camera or microphone available: you can see and hear ${state.peer}, but they can't see or hear you.`
            : `This page isn't secure (https or localhost), so the browser won't share your camera or microphone: ${state.peer} won't see or hear you.`);
        }
        done(local);
      },
      error: (err) => {
        console.warn("videocall: getUserMedia/WebRTC error", err);
        if (!CALL_PHASES.includes(state.phase)) return;
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

function call(raw) {
  const name = (raw || "").trim();
  if (state.phase !== "idle") return;
  if (!name) { error("Type the name of the person to call."); return; }
  if (name === state.me) { error("You can't call yourself: open this page in another browser or device and call that name."); return; }
  clearMessage();
  state.peer = name;
  state.outgoing = true;
  state.pending = { request: "call", username: name };
  setPhase("calling");
  negotiate("offer", null,
    (offer) => {
      if (state.phase === "calling" && state.peer === name) send({ request: "call", username: name }, offer);
      else if (state.phase === "idle") state.handle.hangup();  // cancelled while the camera started
    },
    (err) => { endCall(); error(mediaProblem(err)); });
}

function onIncoming(caller, jsep) {
  clearMessage();
  state.peer = caller;
  state.outgoing = false;
  state.incomingJsep = jsep;
  setPhase("ringing");
  $("accept").focus();
}

function accept() {
  if (state.phase !== "ringing" || !state.incomingJsep) return;
  const caller = state.peer;
  state.pending = { request: "accept", username: caller };
  setPhase("answering");
  negotiate("answer", state.incomingJsep,
    (answer) => { if (state.phase === "answering" && state.peer === caller) send({ request: "accept" }, answer); },
    (err) => {
      // Back to ringing: the person can allow the camera and accept again, or decline.
      state.handle.hangup();
      state.pending = null;
      setPhase("ringing");
      error(mediaProblem(err));
    });
}

function decline() {
  if (state.phase !== "ringing") return;
  const caller = state.peer;
  send({ request: "hangup", reason: DECLINED });
  endCall();
  say(`You declined the call from ${caller}.`);
}

function hangUp() {
  const { phase, peer, startedAt } = state;
  if (!["calling", "answering", "connecting", "in-call"].includes(phase)) return;
  send({ request: "hangup" });
  endCall();
  if (phase === "calling") say(`Call to ${peer} cancelled.`);
  else say(`Call with ${peer} ended${startedAt ? ` after ${duration(Date.now() - startedAt)}` : ""}.`);
}

function onAccepted(username, jsep) {
  if (!["calling", "answering"].includes(state.phase)) return;
  if (username) state.peer = username;
  state.pending = null;
  if (jsep) {
    state.handle.handleRemoteJsep({
      jsep,
      error: (err) => { send({ request: "hangup" }); endCall(); error(`The call couldn't start: ${err && err.message || err}.`); },
    });
  }
  setPhase("connecting");
  if (state.mediaUp) callStarted();
}

function onWebrtcState(on, reason) {
  if (on) {
    state.mediaUp = true;
    if (state.phase === "connecting") callStarted();
    return;
  }
  state.mediaUp = false;
  if (state.phase === "connecting" || state.phase === "in-call") {
    // The server closed our PeerConnection without a hangup event: our media leg failed.
    const peer = state.peer;
    endCall();
    error(`The call with ${peer} dropped: the media connection was lost${reason ? ` (${reason})` : ""}.`);
  }
}

function onIceState(ice) {
  if (ice === "failed" && (state.phase === "connecting" || state.phase === "in-call")) {
    const peer = state.peer;
    send({ request: "hangup" });
    endCall();
    error(`The call with ${peer} couldn't connect: the network between you and the server is blocking media.`);
  } else if (ice === "disconnected" && state.phase === "in-call") {
    $("call-state").textContent = `Reconnecting to ${state.peer}…`;
  } else if ((ice === "connected" || ice === "completed") && state.phase === "in-call") {
    $("call-state").textContent = `In call with ${state.peer}`;
  }
}

function callStarted() {
  state.startedAt = Date.now();
  setPhase("in-call");
  stopCallTimers();
  const tick = () => { $("call-timer").textContent = duration(Date.now() - state.startedAt); };
  tick();
  state.timers.clock = setInterval(tick, 1000);
  state.timers.stats = setInterval(updateStats, STATS_EVERY_MS);
}

function onHangupEvent(result) {
  const who = result.username, reason = result.reason || "";
  if (who === state.me && reason === EXPLICIT_HANGUP) return;  // the answer to our own hangup
  if (!CALL_PHASES.includes(state.phase)) return;
  const { phase, peer, startedAt } = state;
  endCall();
  if (reason === BUSY) error(`${peer} is busy in another call. Try again later.`);
  else if (phase === "calling") {
    if (reason === REMOTE_HANGUP) error(`${peer} is no longer available.`);
    else warn(`${peer} declined the call.`);
  } else if (phase === "ringing" || phase === "answering") warn(`Missed call: ${peer} hung up before you answered.`);
  else if (reason === REMOTE_HANGUP) warn(`${peer} left the call (their connection closed)${startedAt ? ` after ${duration(Date.now() - startedAt)}` : ""}.`);
  else say(`${peer} hung up${startedAt ? ` after ${duration(Date.now() - startedAt)}` : ""}.`);
}

function onPluginError(code, text) {
  const pending = state.pending || {};
  const name = pending.username;
  state.pending = null;
  console.warn("videocall: plugin error", code, text);
  const ended = () => { if (pending.request === "call" || pending.request === "accept") endCall(); };
  switch (code) {
    case 476:  // username taken
      setPhase("ready");
      error(`The name ${quote(name)} is taken. Pick another one.`);
      $("username").select();
      return;
    case 477: error("This page already has a name."); return;
    case 473: setPhase(state.me ? state.phase : "ready"); error("Choose a name first."); return;
    case 474: case 475:
      if (pending.request === "register") { setPhase("ready"); error("That name can't be used: use 1 to 128 characters."); return; }
      ended(); error(`The server refused the request (${text}).`); return;
    case 478: ended(); error(`No one called ${quote(name)} is online.`); refreshList(); return;
    case 479: ended(); error("You can't call yourself."); return;
    case 480: error("You're already in a call."); return;
    case 481: ended(); warn(`The call from ${name || "them"} is no longer there: they hung up.`); return;
    case 482: case 483:
      ended();
      error(pending.request ? "The call couldn't be set up: the server couldn't use this browser's audio/video description."
        : `The server refused a media change (${text}).`);
      return;
    case 499:
      ended();
      error(/relay unavailable/i.test(text) ? "The media server is not available right now. Try again in a moment."
        : `Something went wrong on the server (${text}).`);
      return;
    default:
      ended();
      error(`The server said: ${text}`);
  }
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
  state.handle.createAnswer({
    jsep,
    success: (answer) => send({ request: "set" }, answer),
    error: (err) => warn(`A media update from ${state.peer} failed (${err && err.message || err}).`),
  });
}

function onMessage(msg, jsep) {
  if (msg.error) { onPluginError(msg.error_code, String(msg.error)); return; }
  const result = msg.result;
  if (!result) return;
  if (Array.isArray(result.list)) { state.people = result.list.slice().sort((a, b) => a.localeCompare(b)); renderPeople(); return; }
  switch (result.event) {
    case "registered": onRegistered(result.username); break;
    case "calling": if (state.phase === "calling") { state.pending = null; render(); } break;
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

function resetCall() {
  state.peer = null;
  state.outgoing = false;
  state.incomingJsep = null;
  state.pending = null;
  state.mediaUp = false;
  state.startedAt = 0;
  state.audioOn = true;   // the server resets `set` when a call ends, so do we
  state.videoOn = true;
  state.bitrate = 0;
  state.sending = "both";
  state.remoteMuted = {};
  state.noVideoSeconds = 0;
  state.lastStats = null;
  $("stats").textContent = "";
  delete $("stats").dataset.warn;
}

function endCall() {
  stopCallTimers();
  resetCall();
  if (state.handle) state.handle.hangup();  // local clean-up only (no request)
  setPhase(state.me ? "idle" : state.handle ? "ready" : "offline");
  refreshList();
}

// --- media -------------------------------------------------------------------------------------

function onLocalTrack(track, on) {
  const stream = state.localStream;
  for (const old of stream.getTracks()) if (old.kind === track.kind && (on || old.id === track.id)) stream.removeTrack(old);
  if (on) {
    stream.addTrack(track);
    track.enabled = track.kind === "audio" ? state.audioOn : state.videoOn;
  }
  const video = $("local-video");
  if (video.srcObject !== stream) video.srcObject = stream;
  video.play().catch(() => {});
  renderToggles();
}

function onRemoteTrack(track, mid, on, metadata) {
  const reason = metadata && metadata.reason;
  const stream = state.remoteStream;
  if (on) {
    for (const old of stream.getTracks()) if (old.kind === track.kind && old.id !== track.id) stream.removeTrack(old);
    if (!stream.getTrackById(track.id)) stream.addTrack(track);
    state.remoteMuted[track.kind] = false;
    const video = $("remote-video");
    if (video.srcObject !== stream) video.srcObject = stream;
    video.play().catch((err) => {
      if (err && err.name === "NotAllowedError") {
        warn(`Your browser paused ${state.peer}'s audio.`, { label: "Play sound", run: () => video.play().catch(() => {}) });
      }
    });
  } else if (reason === "mute") {
    state.remoteMuted[track.kind] = true;
  } else {
    const old = stream.getTrackById(track.id);
    if (old) stream.removeTrack(old);
  }
  renderRemoteOverlay();
}

function onCleanup() {
  state.localStream = new MediaStream();
  state.remoteStream = new MediaStream();
  $("local-video").srcObject = null;
  $("remote-video").srcObject = null;
  renderToggles();
  renderRemoteOverlay();
}

function setLocalEnabled(kind, on) {
  for (const track of state.localStream.getTracks()) if (track.kind === kind) track.enabled = on;
}

function toggleAudio() {
  state.audioOn = !state.audioOn;
  setLocalEnabled("audio", state.audioOn);
  send({ request: "set", audio: state.audioOn });
  renderToggles();
}

function toggleVideo() {
  state.videoOn = !state.videoOn;
  setLocalEnabled("video", state.videoOn);
  send({ request: "set", video: state.videoOn });
  renderToggles();
}

function setBitrate(value) {
  state.bitrate = Number(value) || 0;
  send({ request: "set", bitrate: state.bitrate });
  say(state.bitrate ? `Your video to ${state.peer} is now capped at ${rate(state.bitrate)}.` : `Your video to ${state.peer} is no longer capped.`);
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
  if (state.phase !== "in-call") return;
  const now = await readStats();
  const before = state.lastStats;
  state.lastStats = now;
  if (!before) return;
  const seconds = (now.at - before.at) / 1000;
  const bits = (side, kind, field) => {
    const a = before[side][kind], b = now[side][kind];
    return a && b ? Math.max(0, (b[field] - a[field]) * 8 / seconds) : 0;
  };
  const inVideo = bits("inbound", "video", "bytesReceived");
  const inAll = inVideo + bits("inbound", "audio", "bytesReceived");
  const outAll = bits("outbound", "video", "bytesSent") + bits("outbound", "audio", "bytesSent");
  state.noVideoSeconds = inVideo > 0 ? 0 : state.noVideoSeconds + seconds;
  const v = now.inbound.video;
  const size = v && v.frameWidth ? ` · ${v.frameWidth}×${v.frameHeight}` : "";
  const note = $("stats").dataset.warn ? ` · ${$("stats").dataset.warn}` : "";
  $("stats").textContent = `Receiving ${rate(inAll)}${size} · sending ${rate(outAll)}${note}`;
  delete $("stats").dataset.warn;
  renderRemoteOverlay();
}

// --- start -----------------------------------------------------------------------------------

function wireUp() {
  $("register-form").addEventListener("submit", (e) => { e.preventDefault(); register($("username").value); });
  $("dial-form").addEventListener("submit", (e) => { e.preventDefault(); call($("callee").value); $("callee").value = ""; });
  $("accept").addEventListener("click", accept);
  $("decline").addEventListener("click", decline);
  $("hangup").addEventListener("click", hangUp);
  $("toggle-audio").addEventListener("click", toggleAudio);
  $("toggle-video").addEventListener("click", toggleVideo);
  $("bitrate").addEventListener("change", (e) => setBitrate(e.target.value));
  $("message-close").addEventListener("click", clearMessage);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && state.phase === "ringing") decline(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshList(); });
  $("share-link").href = location.href;
  $("share-link").textContent = location.host + location.pathname;
  try { $("username").value = localStorage.getItem("videocall.name") || ""; } catch (_) { /* private mode */ }
}

function fatal(text) {
  setConn("offline", "Unavailable");
  setPhase("offline");
  $("remote-caption").textContent = "This page can't make calls";
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
  get peer() { return state.peer; },
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
