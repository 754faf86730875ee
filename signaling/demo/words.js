// What the demo page says, and how it writes names, durations and rates. A VideoCall error is
// told apart by its code, never by the server's text: that is shown as it is, where it helps.

/** Reasons the server puts in `hangup` events: Janus's texts (the VideoCall API gives them no code). */
export const BUSY = "User busy";
export const REMOTE_HANGUP = "Remote WebRTC hangup";
export const EXPLICIT_HANGUP = "Explicit hangup";
export const DECLINED = "Call declined";

export const MAX_NAME = 128;
export const CONSENT_HINT = "Allow the camera and microphone when your browser asks.";

/** VideoCall error codes (janus_videocall.c's JANUS_VIDEOCALL_ERROR_*; signaling/videocall_body.py). */
export const REGISTER_FIRST = 473;
export const INVALID_ELEMENT = 474;
export const MISSING_ELEMENT = 475;
export const USERNAME_TAKEN = 476;
export const ALREADY_REGISTERED = 477;
export const NO_SUCH_USERNAME = 478;
export const USE_ECHO_TEST = 479;
export const ALREADY_IN_CALL = 480;
export const NO_CALL = 481;
export const MISSING_SDP = 482;
export const INVALID_SDP = 483;
export const UNKNOWN_ERROR = 499;  // also what the server answers while its media relay is unavailable

export function initials(name) {
  const clean = (name || "?").trim();
  return (Array.from(clean)[0] || "?").toUpperCase();
}

export function quote(name) { return `“${name}”`; }

export function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

export function rate(bps) {
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mbit/s`;
  return `${Math.round(bps / 1e3)} kbit/s`;
}

/** " after 1:23" for a call that started at `startedAt` (ms), "" for one that never did. */
export function after(startedAt) {
  return startedAt ? ` after ${duration(Date.now() - startedAt)}` : "";
}

/** [level, text] for a VideoCall error `code` answering `request` (with `name`, its username). */
export function pluginErrorWords(code, request, name, text) {
  switch (code) {
    case USERNAME_TAKEN: return ["error", `The name ${quote(name)} is taken. Pick another one.`];
    case ALREADY_REGISTERED: return ["error", "This page already has a name."];
    case REGISTER_FIRST: return ["error", "Choose a name first."];
    case INVALID_ELEMENT: case MISSING_ELEMENT:
      return ["error", request === "register" ? "That name can't be used: use 1 to 128 characters."
        : `The server refused the request (${text}).`];
    case NO_SUCH_USERNAME: return ["error", `No one called ${quote(name)} is online.`];
    case USE_ECHO_TEST: return ["error", "You can't call yourself."];
    case ALREADY_IN_CALL: return ["error", "You're already in a call."];
    case NO_CALL: return ["warn", `The call from ${name || "them"} is no longer there: they hung up.`];
    case MISSING_SDP: case INVALID_SDP:
      return ["error", request ? "The call couldn't be set up: the server couldn't use this browser's audio/video description."
        : `The server refused a media change (${text}).`];
    case UNKNOWN_ERROR: return ["error", "The server couldn't do that right now: its media service may be unavailable. Try again in a moment."];
    default: return ["error", `The server said: ${text}`];
  }
}

/** [level, text] for a `hangup` event with `reason` that ended a call in `phase` with `peer`. */
export function hangupWords(reason, phase, peer, startedAt) {
  if (reason === BUSY) return ["error", `${peer} is busy in another call. Try again later.`];
  if (phase === "calling") {
    return reason === REMOTE_HANGUP ? ["error", `${peer} is no longer available.`] : ["warn", `${peer} declined the call.`];
  }
  if (phase === "ringing" || phase === "answering") return ["warn", `Missed call: ${peer} hung up before you answered.`];
  if (reason === REMOTE_HANGUP) return ["warn", `${peer} left the call (their connection closed)${after(startedAt)}.`];
  return ["info", `${peer} hung up${after(startedAt)}.`];
}

export function mediaProblem(err) {
  const name = err && err.name;
  if (name === "NotAllowedError" || name === "SecurityError") {
    return "Your browser blocked the camera and microphone. Allow them for this page (the icon in the address bar), then try again.";
  }
  return `Couldn't start your camera or microphone (${(err && (err.message || err.name)) || err}).`;
}
