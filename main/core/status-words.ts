/**
 * The words every front end uses for detourd's status: one label per situation a user can be in (the connection
 * state, or what outranks it: a network that wants a sign-in, a trusted network), one line saying what it means and
 * what happens next, the always-on note, and which of Connect and Disconnect make sense (and why not). The tray,
 * `detour status` and the window all use this module, so they say the same things. The window (renderer/) may import
 * it, the one core module it may take values from (.dependency-cruiser.cjs): it must stay a leaf that imports types
 * only.
 */
import type { StatusPayload } from "./protocol/messages.ts";

/**
 *   sign-in               the network wants a sign-in (captive) and no tunnel is up
 *   waiting-for-network   no route to any gateway: detourd connects by itself once there is one
 *   trusted               disconnected on a trusted network
 *   disconnected, connecting, connected, reconnecting, error: the connection state in words
 */
export type Situation =
  | "sign-in"
  | "waiting-for-network"
  | "trusted"
  | "disconnected"
  | "connecting"
  | "connected"
  | "reconnecting"
  | "error";

export const SITUATION_LABELS: Record<Situation, string> = {
  "sign-in": "Sign in to this network",
  "waiting-for-network": "Waiting for a network",
  trusted: "On a trusted network",
  disconnected: "Disconnected",
  connecting: "Connecting",
  connected: "Connected",
  reconnecting: "Reconnecting",
  error: "Cannot connect",
};

export function situation(s: StatusPayload): Situation {
  if (s.captive?.state === "sign-in-required" && s.state !== "connected") return "sign-in";
  switch (s.state) {
    case "waiting-for-network":
      return "waiting-for-network";
    case "disconnected":
      return s.trusted?.trusted === true ? "trusted" : "disconnected";
    case "resolving":
    case "racing":
      return "connecting";
    case "connected":
      return "connected";
    case "failing-over":
      return "reconnecting";
    case "error":
      return "error";
  }
}

export interface WordsOptions {
  now: number;
  /** A wall time as a time of day. */
  clock(ms: number): string;
  /** A length of time in words. */
  duration(ms: number): string;
}

const oneLine = (s: string): string => s.replace(/\s+/g, " ").trim();
/** One line, capitalised and ending in a full stop (detourd's reasons start in lower case). */
const sentence = (s: string): string => {
  const t = oneLine(s);
  const c = t.charAt(0).toUpperCase() + t.slice(1);
  return c === "" || /[.!?]$/.test(c) ? c : `${c}.`;
};

/** What the kill switch's sign-in exception allows right now, with the time left. */
function signInException(s: StatusPayload, o: WordsOptions): string {
  const ex = s.captive?.exception;
  if (ex === undefined) return "Detour connects by itself once you have signed in.";
  switch (ex.state) {
    case "open":
      return ex.closesAt === null
        ? "Sign in now; Detour connects by itself once you have."
        : `Sign in within ${o.duration(Math.max(0, ex.closesAt - o.now))} (until ${o.clock(ex.closesAt)}); Detour connects by itself once you have.`;
    case "forbidden":
      return "Your organisation does not allow signing in to networks like this one while Detour blocks traffic.";
    case "closed":
      return ex.closedReason === "timed out"
        ? "The time to sign in ran out: connect again for a few more minutes."
        : "Connect to open the sign-in page; Detour connects by itself once you have signed in.";
  }
}

/** One line: what the situation means and what happens next. */
export function explanation(s: StatusPayload, o: WordsOptions): string {
  switch (situation(s)) {
    case "sign-in":
      return `${sentence(s.captive?.reason ?? "This network shows a sign-in page before it lets traffic through")} ${signInException(s, o)}`;
    case "waiting-for-network":
      return "No route to any gateway from this computer: Detour connects by itself as soon as a network is back.";
    case "trusted": {
      const t = s.trusted;
      const rule = t?.rule === null || t?.rule === undefined ? "a trusted network rule" : `trusted network "${t.rule}"`;
      if (t?.policy === "connect")
        return `This network matches ${rule}; your organisation's policy allows connecting here anyway.`;
      const leaving = t?.heldDown === true || t?.alwaysOn === true ? " and connects by itself when you leave it" : "";
      return `This network matches ${rule}: Detour stays disconnected here${leaving}.`;
    }
    case "disconnected":
      return s.killSwitch?.state === "in-force" && s.killSwitch.mode === "blocking"
        ? "Detour is not connected; lockdown blocks traffic until it is."
        : "Detour is not connected.";
    case "connecting":
    case "connected":
    case "reconnecting":
    case "error":
      return sentence(s.summary === "" ? SITUATION_LABELS[situation(s)] : s.summary);
  }
}

/** The always-on note (policy's allowDisconnect false, or autoConnect), or null. */
export function alwaysOnNote(s: StatusPayload): string | null {
  const t = s.trusted;
  if (t === undefined) return null;
  if (!t.allowDisconnect) return "Always on: your organisation's policy does not allow disconnecting.";
  if (t.alwaysOn) return "Detour connects by itself when it starts and after every network change.";
  return null;
}

export interface ActionWords {
  enabled: boolean;
  label: string;
  /** Why the action is not offered, for a disabled control; null when it is or nothing needs saying. */
  why: string | null;
}

/** Connect and Disconnect for a status: what they say, whether they work, and why not. */
export function actions(s: StatusPayload): { connect: ActionWords; disconnect: ActionWords } {
  const sit = situation(s);
  const idle = s.state === "disconnected" || s.state === "error";
  let connect: ActionWords = { enabled: idle, label: "Connect", why: null };
  if (sit === "waiting-for-network")
    connect = { enabled: false, label: "Connect", why: "Detour connects by itself as soon as a network is back." };
  else if (sit === "trusted")
    connect =
      s.trusted?.policy === "connect"
        ? { enabled: true, label: "Connect anyway", why: null }
        : {
            enabled: false,
            label: "Connect",
            why: "Your organisation's policy keeps Detour disconnected on trusted networks.",
          };
  const allowed = s.trusted?.allowDisconnect !== false;
  const disconnect: ActionWords = allowed
    ? { enabled: s.state !== "disconnected", label: "Disconnect", why: null }
    : { enabled: false, label: "Disconnect", why: "Your organisation's policy does not allow disconnecting." };
  return { connect, disconnect };
}
