// What the demo page shows, written from app.js's state: the DOM is only written here, never
// read back as state. The message bar keeps what it shows in this module.

import { PHASES } from "./phases.js";
import { duration, initials } from "./words.js";

export const $ = (id) => document.getElementById(id);

function show(el, on) { el.hidden = !on; }

export function paintAvatar(el, name) {
  el.textContent = initials(name);
  let hash = 0;
  for (const ch of name || "") hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  el.style.setProperty("--hue", String(hash % 360));
}

// --- the message bar ----------------------------------------------------------------------------

let message = null;  // {text, level, kind}: what the bar shows, or null
let messageTimer = null;

/** Show `text` (level info, warn or error), with an optional {label, run} button; `kind` names
 * a message that something may take back later ("connection", "consent"). */
export function say(text, level = "info", action = null, kind = "") {
  clearTimeout(messageTimer);
  message = { text, level, kind };
  $("message").dataset.level = level;
  $("message-text").textContent = text;
  const button = $("message-action");
  if (action) {
    button.textContent = action.label;
    button.onclick = () => { clearMessage(); action.run(); };
  }
  show(button, !!action);
  show($("message"), true);
  if (level === "info" && !action) messageTimer = setTimeout(clearMessage, 8000);
}

/** Hide the message bar; with `kind`, only if it shows a message of that kind. */
export function clearMessage(kind = "") {
  if (kind && (!message || message.kind !== kind)) return;
  clearTimeout(messageTimer);
  message = null;
  show($("message"), false);
}

export function setConn(kind, text) {
  $("conn").dataset.state = kind;
  $("conn-text").textContent = text;
}

// --- the page, from the state -------------------------------------------------------------------

const CAPTIONS = {
  loading: "Loading…",
  "connecting-server": "Connecting to the server…",
  offline: "Not connected to the server",
  ready: "Choose a name to start",
  registering: "Joining…",
  idle: "Call someone from the list, or wait for a call",
};

/** The whole page; `dial(name)` is what a person's "Call" button in the list does. */
export function render(state, dial) {
  const { phase, me } = state;
  const is = PHASES[phase];
  const online = !!state.handle;
  const peer = state.call ? state.call.peer : null;
  document.body.dataset.phase = phase;

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
  renderPeople(state, dial);

  // The stage.
  document.body.toggleAttribute("data-in-call", !!is.call);
  show($("pip"), !!is.pip);
  renderCallState(state);
  renderClock(state);
  paintAvatar($("remote-avatar"), is.call ? peer : "");
  $("remote-avatar").hidden = !is.call;
  renderRemote(state);
  renderStats(state);

  // Controls: only while a call is set up.
  for (const id of ["toggle-audio", "toggle-video", "bitrate"]) $(id).disabled = !is.media;
  $("hangup").disabled = !is.hangup;
  $("hangup").querySelector(".label").textContent = phase === "calling" ? "Cancel" : "Hang up";
  renderToggles(state);

  // The incoming call dialog.
  show($("incoming"), phase === "ringing");
  if (phase === "ringing") {
    $("incoming-name").textContent = peer;
    paintAvatar($("incoming-avatar"), peer);
  }
  document.title = phase === "ringing" ? `📞 ${peer} is calling` : phase === "in-call" ? `In call with ${peer} · videocall`
    : me ? `${me} · videocall` : "videocall";
}

export function renderCallState(state) {
  const { phase, call } = state;
  const peer = call ? call.peer : null;
  const text = {
    calling: () => (call.ringing ? `Ringing ${peer}…` : `Calling ${peer}…`),
    ringing: () => `Incoming call from ${peer}`,
    answering: () => `Answering ${peer}…`,
    connecting: () => `Connecting to ${peer}…`,
    "in-call": () => (call.reconnecting ? `Reconnecting to ${peer}…` : `In call with ${peer}`),
  }[phase];
  $("call-state").textContent = text ? text() : state.me ? "Not in a call" : "";
}

export function renderClock(state) {
  const started = state.phase === "in-call" && state.call.startedAt;
  $("call-timer").textContent = started ? duration(Date.now() - started) : "";
}

export function renderStats(state) {
  $("stats").textContent = state.call ? state.call.statsText : "";
}

export function renderToggles(state) {
  const call = state.call;
  const audioOn = call ? call.audioOn : true, videoOn = call ? call.videoOn : true;
  const audio = $("toggle-audio"), video = $("toggle-video");
  audio.setAttribute("aria-pressed", String(!audioOn));
  audio.querySelector(".label").textContent = audioOn ? "Mute" : "Unmute";
  audio.title = audioOn ? "Mute your microphone" : "Unmute your microphone";
  video.setAttribute("aria-pressed", String(!videoOn));
  video.querySelector(".label").textContent = videoOn ? "Stop video" : "Start video";
  video.title = videoOn ? "Stop sending your camera" : "Send your camera again";
  $("bitrate").value = String(call ? call.bitrate : 0);
  const hasCamera = state.localStream.getVideoTracks().length > 0;
  const sending = call ? call.sending : "both";
  const localCaption = !hasCamera ? (sending === "none" ? "Not sending" : "No camera") : videoOn ? "" : "Camera off";
  $("local-caption").textContent = localCaption;
  show($("local-caption"), !!localCaption && !!PHASES[state.phase].pip);
}

/** The caption over the remote video, or null when the remote video plays. */
function remoteCaption(state) {
  const { phase, call } = state;
  const peer = call ? call.peer : null;
  switch (phase) {
    case "offline": return state.unusable ? "This page can't make calls" : CAPTIONS.offline;
    case "calling": return `Calling ${peer}…`;
    case "ringing": return `${peer} is calling you`;
    case "answering": return `Answering ${peer}…`;
    case "connecting": return `Connecting to ${peer}…`;
    case "in-call": {
      const video = state.remoteStream.getVideoTracks()[0];
      return !video || call.remoteMuted.video || call.noVideoSeconds >= 2 ? `No video from ${peer}` : null;
    }
    default: return CAPTIONS[phase];
  }
}

export function renderRemote(state) {
  const text = remoteCaption(state);
  if (text !== null) $("remote-caption").textContent = text;
  show($("remote-overlay"), text !== null);
}

let peopleShown = "";  // the list as last drawn: redrawn only when it changed

export function renderPeople(state, dial) {
  const others = state.people.filter((name) => name !== state.me);
  const inCall = !!PHASES[state.phase].call;
  const peer = state.call ? state.call.peer : null;
  const key = JSON.stringify([others, state.phase, peer]);
  if (key === peopleShown) return;
  peopleShown = key;
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
    button.textContent = inCall && peer === name ? "In call" : "Call";
    button.disabled = state.phase !== "idle";
    button.setAttribute("aria-label", `Call ${name}`);
    button.addEventListener("click", () => dial(name));
    li.append(avatar, label, button);
    list.append(li);
    if (name === focusedName) button.focus();
  }
  $("people-count").textContent = others.length ? String(others.length) : "";
  show($("people-empty"), others.length === 0);
}
