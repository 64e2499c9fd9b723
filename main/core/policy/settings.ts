/**
 * The settings that a managed policy may set and a user may prefer: a curated subset of the configuration (plus
 * two user-preference keys the configuration file does not have), with the same bounds as the configuration.
 * Both a policy's `settings` and the user's preferences are this shape; every field is optional and nothing has
 * a default here, so "set" always means "someone wrote it" and a key the policy sets can be reported as locked.
 */
import { z } from "zod";
import {
  CaptivePolicy,
  Gateway,
  HealthPolicy,
  RacePolicy,
  RetryPolicy,
  StandbyPolicy,
  Telemetry,
} from "../config/schema.ts";
import { LOCAL_NETWORK_ACCESS_MODES } from "../net/local-networks.ts";

/** The protocols a gateway can offer, as the configuration names them (AnyConnect covers its TLS and DTLS legs). */
export const PROTOCOL_NAMES = ["wireguard", "ikev2", "anyconnect"] as const;
export type ProtocolName = (typeof PROTOCOL_NAMES)[number];

const GatewayName = Gateway.shape.name;
const race = RacePolicy.shape;
const health = HealthPolicy.shape;
const standby = StandbyPolicy.shape;
const retry = RetryPolicy.shape;

export const Settings = z
  .object({
    /** Connect when detourd starts. */
    autoConnect: z.boolean().optional(),
    /** Race this gateway first (it outranks every other priority); null: the configuration's priorities. */
    preferredGateway: GatewayName.nullable().optional(),
    /** Only these configured gateways may be used; the others are dropped from every race. */
    allowedGateways: z.array(GatewayName).min(1).optional(),
    /** Only these protocols may be used. */
    allowedProtocols: z.array(z.enum(PROTOCOL_NAMES)).min(1).optional(),
    lockdown: z.boolean().optional(),
    /** On a trusted network: stay disconnected or connect anyway (the configuration's trustedNetworks.policy). */
    trustedNetworkPolicy: z.enum(["disconnect", "connect"]).optional(),
    /** false: always-on, a disconnect through the control socket is refused. */
    allowDisconnect: z.boolean().optional(),
    race: z
      .object({
        staggerMs: race.staggerMs.unwrap().optional(),
        legDeadlineMs: race.legDeadlineMs.unwrap().optional(),
        order: race.order.unwrap().optional(),
        maxGateways: race.maxGateways.unwrap().optional(),
      })
      .strict()
      .optional(),
    health: z
      .object({
        probeIntervalMs: health.probeIntervalMs.unwrap().optional(),
        idleProbeIntervalMs: health.idleProbeIntervalMs.unwrap().optional(),
        probeTimeoutMs: health.probeTimeoutMs.unwrap().optional(),
        deadAfterMs: health.deadAfterMs.unwrap().optional(),
      })
      .strict()
      .optional(),
    standby: z
      .object({
        mode: standby.mode.unwrap().optional(),
        probeIntervalMs: standby.probeIntervalMs.unwrap().optional(),
        idleProbeIntervalMs: standby.idleProbeIntervalMs.unwrap().optional(),
        freshMs: standby.freshMs.unwrap().optional(),
      })
      .strict()
      .optional(),
    retry: z
      .object({
        initialMs: retry.initialMs.unwrap().optional(),
        maxMs: retry.maxMs.unwrap().optional(),
      })
      .strict()
      .optional(),
    telemetry: z
      .object({
        endpoint: Telemetry.shape.endpoint.optional(),
        intervalMs: Telemetry.shape.intervalMs.unwrap().optional(),
      })
      .strict()
      .optional(),
    /** Allow local network access: "auto" (on for a split tunnel without lockdown), "on" or "off". */
    localNetworkAccess: z.enum(LOCAL_NETWORK_ACCESS_MODES).optional(),
    captive: z
      .object({
        exceptionMs: CaptivePolicy.shape.exceptionMs.unwrap().optional(),
        allowException: CaptivePolicy.shape.allowException.unwrap().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type Settings = z.infer<typeof Settings>;

/**
 * Every key by its dotted path. `user`: a user may set it with `detour prefs set` (unless a policy locks it; a
 * security setting such as lockdown only tighter than the configuration, see layers.ts' preferenceRefusal);
 * `managed`: only a policy (or the configuration file) sets it: a user widening the allowed gateways, or
 * pointing telemetry elsewhere, would defeat the organisation's intent.
 */
export const SETTING_KEYS = {
  autoConnect: "user",
  preferredGateway: "user",
  allowedGateways: "managed",
  allowedProtocols: "managed",
  lockdown: "user",
  trustedNetworkPolicy: "managed",
  allowDisconnect: "managed",
  "race.staggerMs": "managed",
  "race.legDeadlineMs": "managed",
  "race.order": "user",
  "race.maxGateways": "managed",
  "health.probeIntervalMs": "managed",
  "health.idleProbeIntervalMs": "managed",
  "health.probeTimeoutMs": "managed",
  "health.deadAfterMs": "managed",
  "standby.mode": "user",
  "standby.probeIntervalMs": "managed",
  "standby.idleProbeIntervalMs": "managed",
  "standby.freshMs": "managed",
  "retry.initialMs": "managed",
  "retry.maxMs": "managed",
  "telemetry.endpoint": "managed",
  "telemetry.intervalMs": "managed",
  "captive.exceptionMs": "managed",
  "captive.allowException": "managed",
  localNetworkAccess: "user",
} as const satisfies Record<string, "user" | "managed">;
export type SettingKey = keyof typeof SETTING_KEYS;
export const SETTING_KEY_LIST = Object.keys(SETTING_KEYS) as SettingKey[];

export function isSettingKey(key: string): key is SettingKey {
  return Object.hasOwn(SETTING_KEYS, key);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The keys a settings object sets, as dotted paths, each with its value (arrays are values, not branches). */
export function flattenSettings(s: Settings): Map<SettingKey, unknown> {
  const out = new Map<SettingKey, unknown>();
  const walk = (v: unknown, prefix: string): void => {
    if (isPlainObject(v) && !isSettingKey(prefix)) {
      for (const [k, child] of Object.entries(v))
        if (child !== undefined) walk(child, prefix === "" ? k : `${prefix}.${k}`);
      return;
    }
    if (isSettingKey(prefix)) out.set(prefix, v);
  };
  walk(s, "");
  return out;
}

/** The settings object holding exactly these keys (the inverse of flattenSettings); unknown keys are ignored. */
export function unflattenSettings(entries: Iterable<[string, unknown]>): Settings {
  const out: Record<string, unknown> = {};
  for (const [key, value] of entries) {
    if (!isSettingKey(key)) continue;
    const parts = key.split(".");
    let node = out;
    for (const p of parts.slice(0, -1)) {
      const next = node[p];
      if (isPlainObject(next)) node = next;
      else {
        const fresh: Record<string, unknown> = {};
        node[p] = fresh;
        node = fresh;
      }
    }
    node[parts[parts.length - 1] ?? key] = value;
  }
  // Only known keys went in; values are checked wherever settings are parsed (policy, preferences, the CLI).
  return out;
}

/** `b` over `a`, key by key. */
export function overlaySettings(a: Settings, b: Settings): Settings {
  const merged = new Map([...flattenSettings(a), ...flattenSettings(b)]);
  return unflattenSettings(merged);
}

export type SettingParse = { ok: true; value: unknown } | { ok: false; message: string };

/**
 * Reads a value typed on a command line for one key: booleans as true/false, numbers as digits, lists as
 * comma-separated words, `none` for a nullable key; then checks it against the key's schema.
 */
export function parseSettingValue(key: SettingKey, text: string): SettingParse {
  const t = text.trim();
  let value: unknown = t;
  if (t === "true" || t === "false") value = t === "true";
  else if (/^-?\d+$/.test(t)) value = Number(t);
  else if (t === "none" || t === "null") value = null;
  if (key === "allowedGateways" || key === "allowedProtocols" || key === "race.order")
    value = t === "" ? [] : t.split(",").map((x) => x.trim());
  const r = Settings.safeParse(unflattenSettings([[key, value]]));
  if (r.success) return { ok: true, value };
  return { ok: false, message: r.error.issues.map((i) => i.message).join("; ") };
}
