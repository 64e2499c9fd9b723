/**
 * What the tray shows for a daemon status: which of five icons, the one human sentence saying what is happening
 * and why, and the menu (as plain data with an action per item, which main.ts turns into Electron's Menu).
 */
import type { LegKind } from "../core/connection/types.ts";
import type { StatusPayload } from "../core/protocol/messages.ts";
import { actions, situation } from "../core/status-words.ts";
import { trustedSentence } from "../core/trusted-networks.ts";

export type TrayState = "disconnected" | "connecting" | "connected" | "degraded" | "error";
export const TRAY_STATES: readonly TrayState[] = ["disconnected", "connecting", "connected", "degraded", "error"];

/**
 * Loss over the health window from which a working tunnel is shown as degraded: a few percent already stalls
 * TCP and breaks calls, while 1-2 % is ordinary Wi-Fi noise that users would not notice.
 */
export const DEGRADED_LOSS_PCT = 5;
/** Round trip from which a working tunnel is shown as degraded: past ~300 ms calls and remote desktops lag. */
export const DEGRADED_RTT_MS = 300;
/** Windows truncates tray tooltips at 127 characters; keep every platform the same. */
export const MAX_TOOLTIP = 127;

export const PROTOCOL_LABELS: Record<LegKind, string> = {
  wireguard: "WireGuard",
  ikev2: "IKEv2",
  "anyconnect-tls": "AnyConnect (TLS)",
  "anyconnect-dtls": "AnyConnect (DTLS)",
};

/** Why the app has no status: detourd is not running or the user may not use its socket. */
export interface Unreachable {
  code: string;
  message: string;
}

function degradedBy(s: StatusPayload): string | null {
  const t = s.telemetry;
  if (t === undefined) return null;
  if (t.lossPct !== null && t.lossPct >= DEGRADED_LOSS_PCT) return `${Math.round(t.lossPct)} % loss`;
  if (t.rttMs !== null && t.rttMs >= DEGRADED_RTT_MS) return `${Math.round(t.rttMs)} ms`;
  return null;
}

/** The icon for a status; null means the daemon cannot be reached, which is an error for the user. */
export function trayState(s: StatusPayload | null): TrayState {
  if (s === null) return "error";
  switch (s.state) {
    case "disconnected":
      return "disconnected";
    case "resolving":
    case "racing":
    case "failing-over":
      return "connecting";
    // Not an error (nothing is wrong with Detour) and not idle: the disconnected icon, with its own sentence.
    case "waiting-for-network":
      return "disconnected";
    case "connected":
      // The daemon says "degraded" in its sentence when its own health check sees a brownout.
      return degradedBy(s) !== null || /, degraded \(/.test(s.summary) ? "degraded" : "connected";
    case "error":
      return "error";
  }
}

function unreachableSentence(u: Unreachable | null): string {
  if (u?.code === "permission-denied")
    return "Detour cannot talk to its service: your account is not allowed to use it";
  return "Detour's service is not running";
}

/**
 * The state sentence: "Connected to gw1 over WireGuard, 18 ms", "Reconnecting: gw1 stopped answering, trying
 * gw2", "No gateway reachable; retrying in 8 s". The daemon's own summary already says what and why; the tray
 * adds the latency a user feels while connected.
 */
export function traySentence(s: StatusPayload | null, unreachable: Unreachable | null = null): string {
  if (s === null) return unreachableSentence(unreachable);
  if (s.captive?.state === "sign-in-required" && s.state !== "connected")
    return `Sign in to this network: ${s.captive.reason ?? "it shows a sign-in page first"}`;
  const summary = s.summary.replace(/\s+/g, " ").trim();
  // Offline is no fault and needs nothing from the user: say so, so nobody presses Connect again and again.
  if (situation(s) === "waiting-for-network")
    return "Waiting for a network: Detour connects by itself when one is back";
  // Disconnected on purpose on a trusted network: say which rule, so nobody takes it for a failure.
  if (s.state === "disconnected" && s.trusted?.trusted === true && s.trusted.policy === "disconnect")
    return trustedSentence(s.trusted) ?? summary;
  if (s.state !== "connected" || s.gateway === null || s.protocol === null) return summary === "" ? s.state : summary;
  const base = `Connected to ${s.gateway} over ${PROTOCOL_LABELS[s.protocol]}`;
  if (summary !== base && summary.startsWith(base)) return summary; // degraded, or moving back to a better gateway
  const slow = degradedBy(s);
  if (slow !== null) return `${base}, but slow (${slow})`;
  const rtt = s.telemetry?.rttMs;
  return rtt == null ? base : `${base}, ${Math.max(1, Math.round(rtt))} ms`;
}

/** "Detour: <sentence>", cut to what every platform's tray shows. */
export function trayTooltip(s: StatusPayload | null, unreachable: Unreachable | null = null): string {
  const t = `Detour: ${traySentence(s, unreachable)}`;
  return t.length > MAX_TOOLTIP ? `${t.slice(0, MAX_TOOLTIP - 3)}...` : t;
}

export type TrayAction =
  | { type: "connect" }
  | { type: "disconnect" }
  | { type: "set-gateway"; gateway: string | null }
  | { type: "open-window" }
  | { type: "open-sign-in"; url: string }
  | { type: "diagnostics" }
  | { type: "quit" };

export type MenuItemModel =
  | { kind: "label"; label: string }
  | { kind: "separator" }
  | { kind: "action"; label: string; enabled: boolean; action: TrayAction }
  | { kind: "radio"; label: string; checked: boolean; enabled: boolean; action: TrayAction }
  | { kind: "submenu"; label: string; enabled: boolean; items: MenuItemModel[] };

/** The connect item: greyed with the reason where detourd would refuse it or has nothing to do. */
function connectItem(s: StatusPayload | null): MenuItemModel {
  if (s === null) return { kind: "action", label: "Connect", enabled: false, action: { type: "connect" } };
  const a = actions(s).connect;
  const sit = situation(s);
  const label =
    a.enabled || a.why === null
      ? a.label
      : sit === "waiting-for-network"
        ? "Connect (connects by itself when a network is back)"
        : "Connect (not on a trusted network)";
  return { kind: "action", label, enabled: a.enabled, action: { type: "connect" } };
}

/** The tray menu for a status: sentence, connect/disconnect, gateway choice, window, diagnostics, quit. */
export function trayMenu(
  s: StatusPayload | null,
  unreachable: Unreachable | null = null,
  clock: (ms: number) => string = timeOfDay,
): MenuItemModel[] {
  const up = s !== null;
  const idle = s === null || s.state === "disconnected";
  const choice = s?.gatewayChoice ?? null;
  const gateways: MenuItemModel[] = [
    {
      kind: "radio",
      label: "Automatic (best gateway)",
      checked: choice === null,
      enabled: up,
      action: { type: "set-gateway", gateway: null },
    },
    ...(s?.candidates ?? []).map((c): MenuItemModel => ({
      kind: "radio",
      label: c.region === "" ? c.name : `${c.name} (${c.region})`,
      checked: choice === c.name,
      enabled: up,
      action: { type: "set-gateway", gateway: c.name },
    })),
  ];
  return [
    { kind: "label", label: traySentence(s, unreachable) },
    { kind: "separator" },
    connectItem(s),
    // Always-on: the daemon refuses a disconnect, so the item says why instead of failing when chosen.
    s?.trusted?.allowDisconnect === false
      ? { kind: "action", label: "Disconnect (not allowed by policy)", enabled: false, action: { type: "disconnect" } }
      : { kind: "action", label: "Disconnect", enabled: up && !idle, action: { type: "disconnect" } },
    { kind: "submenu", label: "Gateway", enabled: up, items: gateways },
    ...signInItems(s, clock),
    { kind: "separator" },
    { kind: "action", label: "Open Detour", enabled: true, action: { type: "open-window" } },
    { kind: "action", label: "Create diagnostic bundle", enabled: true, action: { type: "diagnostics" } },
    { kind: "separator" },
    { kind: "action", label: "Quit Detour", enabled: true, action: { type: "quit" } },
  ];
}

/** HH:MM:SS in the machine's time zone. */
function timeOfDay(ms: number): string {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
}

/**
 * "Open sign-in page" while the network wants a sign-in and detourd found the page, and until when the kill switch
 * lets the sign-in through (a menu is rebuilt on every status, not every second: a time of day, not a countdown).
 */
export function signInItems(s: StatusPayload | null, clock: (ms: number) => string = timeOfDay): MenuItemModel[] {
  const c = s?.captive;
  if (c?.state !== "sign-in-required" || s?.state === "connected") return [];
  const ex = c.exception;
  const until: MenuItemModel[] =
    ex.state === "open" && ex.closesAt !== null
      ? [{ kind: "label", label: `Sign-in allowed until ${clock(ex.closesAt)}` }]
      : ex.state === "closed" && ex.closedReason === "timed out"
        ? [{ kind: "label", label: "The time to sign in ran out: connect again" }]
        : [];
  if (c.portalUrl === null) return until;
  return [
    { kind: "action", label: "Open sign-in page", enabled: true, action: { type: "open-sign-in", url: c.portalUrl } },
    ...until,
  ];
}

/**
 * Icon files per state, relative to the icons folder: Electron picks the @2x/@4x file for the screen's scale
 * factor; the SVG is the source they are rendered from.
 */
export function trayIconFile(state: TrayState): string {
  return `${state}.png`;
}
