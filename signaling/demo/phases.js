// The demo page's phases, and the one table of what moves the page from one phase to the next.
//
// app.js changes the phase only through `next(phase, event)`: an event the table does not allow
// in the current phase changes nothing (a late callback, a second click, a server event for a
// call that already ended). What the page shows follows from the phase (view.js).

/** What each phase is: in a call (`call`), with a PeerConnection negotiated (`media`), one that
 * a person can end with the hang-up button (`hangup`), with the local preview shown (`pip`). */
export const PHASES = {
  loading: {},
  "connecting-server": {},
  offline: {},
  ready: {},          // connected, no name yet
  registering: {},
  idle: {},           // registered, not in a call
  calling: { call: true, hangup: true, pip: true },
  ringing: { call: true },
  answering: { call: true, hangup: true, pip: true },
  connecting: { call: true, media: true, hangup: true, pip: true },
  "in-call": { call: true, media: true, hangup: true, pip: true },
};

const ANY = Object.keys(PHASES);
const where = (flag) => ANY.filter((phase) => PHASES[phase][flag]);

/** event -> [the phases it may happen in, the phase it leads to]. */
export const TRANSITIONS = {
  connect: [ANY, "connecting-server"],            // to the server, at start and after a loss
  attached: [["connecting-server"], "ready"],     // session and plugin handle are there
  lost: [ANY, "offline"],                         // the server connection ended
  unusable: [ANY, "offline"],                     // no janus.js or no WebRTC: no calls from here
  register: [["ready"], "registering"],
  registered: [["registering"], "idle"],
  refused: [["registering"], "ready"],            // the name was refused: pick another
  dial: [["idle"], "calling"],
  ring: [["idle"], "ringing"],                    // an incoming call
  answer: [["ringing"], "answering"],
  unanswered: [["answering"], "ringing"],         // no camera or microphone: allow them, or decline
  accepted: [["calling", "answering"], "connecting"],
  "media-up": [["connecting"], "in-call"],
  hangup: [where("hangup"), "idle"],              // the person hung up, or cancelled while calling
  decline: [["ringing"], "idle"],
  dropped: [where("media"), "idle"],              // the media connection was lost
  end: [where("call"), "idle"],                   // the other side hung up, or the server refused
};

/** The phase `event` leads to from `phase`, or null when the table does not allow it there. */
export function next(phase, event) {
  const [from, to] = TRANSITIONS[event];
  return from.includes(phase) ? to : null;
}
