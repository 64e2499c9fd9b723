/** Pure text for the views: durations, protocol names, timeline lines, health words. No DOM, unit-tested. */
import type {
  Candidate,
  ConnectionEvent,
  ConnectionStateName,
  FailoverRecord,
  LegKind,
  RaceRecord,
} from "../main/core/connection/types.ts";
import type { LocalNetworksStatus } from "../main/core/protocol/messages.ts";

export const PROTOCOL_LABELS: Record<LegKind, string> = {
  wireguard: "WireGuard",
  ikev2: "IKEv2",
  "anyconnect-tls": "AnyConnect (TLS)",
  "anyconnect-dtls": "AnyConnect (DTLS)",
};

/** detourd's connection states in words, where the page shows a state by name (the State field, the timeline). */
export const STATE_LABELS: Record<ConnectionStateName, string> = {
  disconnected: "Disconnected",
  resolving: "Connecting",
  racing: "Connecting",
  connected: "Connected",
  "failing-over": "Reconnecting",
  error: "Cannot connect",
  "waiting-for-network": "Waiting for a network",
};

const pad2 = (n: number): string => String(n).padStart(2, "0");

/** "850 ms", "4.2 s", "42 s", "2 min 14 s", "1 h 02 min". */
export function duration(ms: number): string {
  if (!Number.isFinite(ms)) return "unknown";
  const a = Math.max(0, ms);
  if (a < 1000) return `${Math.round(a)} ms`;
  if (a < 10_000) return `${(a / 1000).toFixed(1)} s`;
  const s = Math.floor(a / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${pad2(s % 60)} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${pad2(m % 60)} min`;
}

/**
 * Time left in whole minutes, rounded up ("5 min", "under a minute"): for text in a live region, which a screen
 * reader would otherwise announce every second.
 */
export function minutesLeft(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) return "no time";
  if (ms < 60_000) return "under a minute";
  return `${Math.ceil(ms / 60_000)} min`;
}

/** Time of day, HH:MM:SS, in the given time zone offset's local clock. */
export function clock(ms: number): string {
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

export function since(at: number | null, now: number): string {
  return at === null ? "-" : `${duration(now - at)} (since ${clock(at)})`;
}

/** A candidate's health as a user reads it, from its last port probe. */
export function health(c: Candidate): string {
  if (c.probe === null) return "not checked yet";
  const r = Object.values(c.probe.reachable);
  if (r.length > 0 && r.every((x) => x === "no")) return "unreachable";
  if (c.probe.latencyMs === null) return "no answer to probes";
  return r.some((x) => x === "no") ? "partly reachable" : "reachable";
}

export function probeLatency(c: Candidate): string {
  if (c.probe === null) return "-";
  return c.probe.latencyMs === null ? "no answer" : `${Math.round(c.probe.latencyMs)} ms`;
}

export function failoverText(f: FailoverRecord): string {
  const to = f.to === null ? "no other gateway (still looking)" : `${f.to.gateway} over ${PROTOCOL_LABELS[f.to.kind]}`;
  const restored =
    f.restoredAfterMs === null
      ? "traffic not restored yet"
      : `traffic restored after ${duration(f.restoredAfterMs)}${f.via === "standby" ? " (warm standby)" : ""}`;
  return `Moved from ${f.from.gateway} over ${PROTOCOL_LABELS[f.from.kind]} to ${to}: ${f.reason}; detected after ${duration(f.detectedAfterMs)}, ${restored}.`;
}

const RACE_REASONS: Record<RaceRecord["reason"], string> = {
  connect: "to connect",
  failover: "to fail over",
  recover: "to move back to a better gateway",
  retry: "to retry",
  standby: "for a warm standby",
};

export function raceText(r: RaceRecord): string {
  const winner =
    r.winner === null
      ? r.endedAt === null
        ? "still running"
        : "no leg won"
      : `${r.winner.gateway} over ${PROTOCOL_LABELS[r.winner.kind]} won`;
  const took = r.endedAt === null ? "" : ` in ${duration(r.endedAt - r.startedAt)}`;
  const failed = r.legs.filter((l) => l.outcome === "failed").length;
  return `Race ${RACE_REASONS[r.reason]}: ${r.legs.length} leg${r.legs.length === 1 ? "" : "s"}, ${winner}${took}${failed > 0 ? ` (${failed} failed)` : ""}.`;
}

/** One timeline line per event the user cares about; probe-level noise (single legs, health) is left out. */
export function eventText(e: ConnectionEvent): string | null {
  switch (e.type) {
    case "state":
      return e.detail === "" ? `${STATE_LABELS[e.state]}.` : `${e.detail}.`.replace(/\.\.$/, ".");
    case "race-started":
      return null;
    case "leg":
      return null;
    case "race-ended":
      return raceText(e.race);
    case "failover":
      return failoverText(e.failover);
    case "health":
      return e.verdict.state === "healthy" ? null : `Health: ${e.verdict.state}.`;
    case "kill-switch":
      return `Kill switch ${e.change}: ${e.detail}.`.replace(/\.\.$/, ".");
    case "crash-protection":
      return `Crash protection ${e.inForce ? "back in force" : "not in force"}: ${e.detail}.`.replace(/\.\.$/, ".");
    case "path-mtu":
      return `Tunnel MTU ${e.change}${e.to === null ? "" : ` to ${String(e.to)}`}: ${e.detail}.`.replace(/\.\.$/, ".");
    case "drill":
      return `Failover drill ${e.drill.verdict === "pass" ? "passed" : e.drill.verdict === "fail" ? "failed" : "refused"}: ${e.drill.reason}.`.replace(
        /\.\.$/,
        ".",
      );
  }
}

/** A fixed-size window of samples, oldest first; pushing past the size drops the oldest. */
/**
 * The latest reading of a chart's window in words: "no data" when the window holds none, and "no reading now" when
 * only the latest is missing (offline, between tunnels) while the chart still draws the earlier ones.
 */
export function latestReading(window: readonly (number | null)[], unit: string): string {
  const last = window.at(-1) ?? null;
  if (last !== null) return `${last.toFixed(1)} ${unit}`;
  return window.some((x) => x !== null) ? "no reading now" : "no data";
}

export function pushSample(window: readonly (number | null)[], sample: number | null, size: number): (number | null)[] {
  const next = [...window, sample];
  return next.length > size ? next.slice(next.length - size) : next;
}

/**
 * The Local networks field: what stays reachable outside the tunnel ("172.17.0.0/16 on docker0 (bridge)"), or why
 * nothing does; refused networks are counted here and named, with their reasons, in the field's title.
 */
export function localNetworksText(l: LocalNetworksStatus | undefined): { text: string; title: string } {
  if (l === undefined) return { text: "-", title: "" };
  if (l.lastError !== null) return { text: "none (cannot read this computer's networks)", title: l.lastError };
  if (!l.enabled) return { text: "through the tunnel (local network access is off)", title: `setting: ${l.mode}` };
  const allowed = l.allowed.map((n) => `${n.prefix} on ${n.dev}${n.kind === "bridge" ? " (bridge)" : ""}`);
  const refused = l.refused.map((n) => `${n.prefix} on ${n.dev} refused: ${n.reason}`);
  const text =
    (allowed.length === 0 ? "none needed here" : allowed.join(", ")) +
    (refused.length === 0 ? "" : `; ${String(refused.length)} refused`);
  return { text, title: refused.join("\n") };
}
