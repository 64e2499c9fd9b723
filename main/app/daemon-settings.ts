/**
 * detourd's settings in words, for the Settings view's "Managed by <organisation>'s policy" section: a label per
 * key and its value as a person reads it ("On", "gw2, gw3", "250 ms"). Pure; every key of the policy schema must
 * have a label and a kind here, so a new key cannot reach the page unnamed.
 */
import type { ManagedSection } from "../core/protocol/app-api.ts";
import type { SettingKey } from "../core/policy/settings.ts";
import type { PrefsPayload } from "../core/policy/status.ts";

/** How a key's value reads. */
type Kind = "switch" | "gateway" | "gateways" | "protocols" | "legs" | "ms" | "count" | "text";

export const DAEMON_SETTINGS: Record<SettingKey, { label: string; kind: Kind }> = {
  autoConnect: { label: "Connect when the Detour service starts", kind: "switch" },
  preferredGateway: { label: "Preferred gateway", kind: "gateway" },
  allowedGateways: { label: "Allowed gateways", kind: "gateways" },
  allowedProtocols: { label: "Allowed protocols", kind: "protocols" },
  lockdown: { label: "Block traffic while disconnected (lockdown)", kind: "switch" },
  trustedNetworkPolicy: { label: "On a trusted network", kind: "text" },
  allowDisconnect: { label: "You may disconnect", kind: "switch" },
  "race.staggerMs": { label: "Delay between connection attempts", kind: "ms" },
  "race.legDeadlineMs": { label: "Time limit per connection attempt", kind: "ms" },
  "race.order": { label: "Protocol order", kind: "legs" },
  "race.maxGateways": { label: "Gateways tried on every protocol at once", kind: "count" },
  "health.probeIntervalMs": { label: "Tunnel check interval", kind: "ms" },
  "health.idleProbeIntervalMs": { label: "Tunnel check interval while idle", kind: "ms" },
  "health.probeTimeoutMs": { label: "Tunnel check timeout", kind: "ms" },
  "health.deadAfterMs": { label: "Tunnel counts as down after", kind: "ms" },
  "standby.mode": { label: "Warm standby", kind: "switch" },
  "standby.probeIntervalMs": { label: "Standby check interval", kind: "ms" },
  "standby.idleProbeIntervalMs": { label: "Standby check interval while idle", kind: "ms" },
  "standby.freshMs": { label: "Standby trusted if it answered within", kind: "ms" },
  "retry.initialMs": { label: "First retry after", kind: "ms" },
  "retry.maxMs": { label: "Longest wait between retries", kind: "ms" },
  "telemetry.endpoint": { label: "Telemetry collector", kind: "text" },
  "telemetry.intervalMs": { label: "Telemetry report interval", kind: "ms" },
  "captive.exceptionMs": { label: "Time allowed to sign in to a captive network", kind: "ms" },
  "captive.allowException": { label: "Allow signing in to captive networks", kind: "switch" },
  localNetworkAccess: { label: "Allow local network access (home network, containers)", kind: "text" },
};

/** Protocol and leg names as the rest of the app writes them. */
const PROTOCOL_WORDS: Record<string, string> = {
  wireguard: "WireGuard",
  ikev2: "IKEv2",
  anyconnect: "AnyConnect",
  "anyconnect-tls": "AnyConnect (TLS)",
  "anyconnect-dtls": "AnyConnect (DTLS)",
};

/** "250 ms", "5 s", "1.5 s", "2 min", "90 s". */
export function millis(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  return `${Number((ms / 1000).toFixed(1))} s`;
}

const words = (v: unknown[]): string =>
  v.map((x) => (typeof x === "string" ? (PROTOCOL_WORDS[x] ?? x) : JSON.stringify(x))).join(", ");

/**
 * A value as a person reads it. The value crossed a process boundary as `unknown`: one of an unexpected type
 * (a newer daemon) is shown as its JSON rather than dropped, so the page never hides what the policy enforces.
 */
export function daemonValueText(key: SettingKey, value: unknown): string {
  const kind = DAEMON_SETTINGS[key].kind;
  switch (kind) {
    case "switch":
      if (value === true || value === "on") return "On";
      if (value === false || value === "off") return "Off";
      break;
    case "gateway":
      if (value === null) return "Automatic";
      if (typeof value === "string") return value;
      break;
    case "gateways":
    case "protocols":
    case "legs":
      if (Array.isArray(value)) return kind === "gateways" ? value.map(String).join(", ") : words(value);
      break;
    case "ms":
      if (typeof value === "number" && Number.isFinite(value)) return millis(value);
      // The idle intervals: null keeps the fast pace always.
      if (value === null) return "Off";
      break;
    case "count":
    case "text":
      if (typeof value === "number" || typeof value === "string") return String(value);
      break;
  }
  return value === undefined ? "not set" : JSON.stringify(value);
}

/** Who manages the locked keys, as the page says it. */
export function managedByText(organisation: string | null): string {
  return `${organisation ?? "your organisation"}'s policy`;
}

/** The section of detourd's settings the policy sets, in the daemon's own order; null when it sets none. */
export function managedSection(p: PrefsPayload): ManagedSection | null {
  const settings = p.entries
    .filter((e) => e.locked)
    .map((e) => ({ key: e.key, label: DAEMON_SETTINGS[e.key].label, value: daemonValueText(e.key, e.value) }));
  return settings.length === 0 ? null : { managedBy: managedByText(p.organisation), settings };
}
