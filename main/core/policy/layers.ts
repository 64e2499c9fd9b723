/**
 * Layering of settings: the configuration file (with the schema's built-in defaults) at the bottom, the user's
 * preferences over it, the managed policy over both. A key the policy sets is locked: the user's value for it is
 * ignored and refused. A preference never loosens what the configuration or the policy decided: managed keys are
 * never taken from preferences, and a security setting (lockdown) may only be tightened by one; a stored
 * preference that would loosen is ignored with its reason (preferenceRefusal), and `prefs set` refuses it with the
 * same reason. Pure: the result is a complete, validated DetourConfig plus what each key came from.
 */
import { parseConfig, type DetourConfig } from "../config/schema.ts";
import type { PolicyDocument } from "./document.ts";
import {
  flattenSettings,
  overlaySettings,
  SETTING_KEY_LIST,
  SETTING_KEYS,
  unflattenSettings,
  type ProtocolName,
  type SettingKey,
  type Settings,
} from "./settings.ts";
import type { Rejection } from "./verify.ts";

export type SettingSource = "default" | "user" | "policy";

export interface Effective {
  config: DetourConfig;
  autoConnect: boolean;
  preferredGateway: string | null;
  /** Keys the policy sets, sorted: the CLI and the UI show them as managed and refuse to change them. */
  locked: SettingKey[];
  /** Where each key's value comes from. */
  sources: Record<SettingKey, SettingSource>;
  /** Stored preferences not applied because they would loosen the configuration (see preferenceRefusal). */
  ignored: IgnoredPref[];
  /** Every key's value in force (undefined: not set anywhere, the configuration's own behaviour applies). */
  values: Record<SettingKey, unknown>;
}

/** A stored preference the layering set aside, and why: shown by `detour prefs get` and in the policy status. */
export interface IgnoredPref {
  key: SettingKey;
  value: unknown;
  reason: string;
}

/**
 * Security settings a preference may only tighten, each with its test: is `pref` at least as strict as `floor`, the
 * value the configuration gives it (a key the policy sets is locked, so the policy is never the floor here)? The
 * other security settings are managed keys (allowed gateways and protocols, telemetry) or not settings at all
 * (protected networks, i.e. full or split tunnel, and the kill switch, which follows them and lockdown).
 */
const TIGHTEN_ONLY: Partial<Record<SettingKey, (pref: unknown, floor: unknown) => boolean>> = {
  lockdown: (pref, floor) => pref === true || floor !== true,
  // Local network access opens traffic outside the tunnel: a user may turn it off, or state what is in force.
  localNetworkAccess: (pref, floor) => pref === "off" || pref === floor,
};

/**
 * Why a user preference `key` = `value` may not apply over this configuration, or null when it may: a managed key
 * (only policy or configuration set it), or a value that loosens a security setting the configuration tightened.
 * Locks by a policy are the caller's to report (they name the organisation).
 */
export function preferenceRefusal(base: DetourConfig, key: SettingKey, value: unknown): string | null {
  if (SETTING_KEYS[key] === "managed") return `${key} can only be set by your organisation's policy or configuration`;
  const tighter = TIGHTEN_ONLY[key];
  if (tighter === undefined) return null;
  const floor = defaultValue(base, key);
  if (tighter(value, floor)) return null;
  return `${key} is ${JSON.stringify(floor)} by this device's configuration; a preference may only tighten it, and ${JSON.stringify(value)} would loosen it`;
}

export type LayerResult = { ok: true; effective: Effective } | { ok: false; rejection: Rejection };

/** Lower priority numbers are preferred; a preferred gateway goes below every configured one. */
const PREFERRED_PRIORITY = 0;

function applyGatewayFilters(base: DetourConfig, s: Settings): { gateways: DetourConfig["gateways"] } | Rejection {
  const allowedGw = s.allowedGateways === undefined ? null : new Set(s.allowedGateways);
  const allowedProto = s.allowedProtocols === undefined ? null : new Set<ProtocolName>(s.allowedProtocols);
  const gateways = base.gateways
    .filter((g) => allowedGw === null || allowedGw.has(g.name))
    .map((g) => {
      if (allowedProto === null) return g;
      const p = g.protocols;
      return {
        ...g,
        protocols: {
          ...(p.wireguard !== undefined && allowedProto.has("wireguard") ? { wireguard: p.wireguard } : {}),
          ...(p.ikev2 !== undefined && allowedProto.has("ikev2") ? { ikev2: p.ikev2 } : {}),
          ...(p.anyconnect !== undefined && allowedProto.has("anyconnect") ? { anyconnect: p.anyconnect } : {}),
        },
      };
    })
    .filter(
      (g) =>
        g.protocols.wireguard !== undefined || g.protocols.ikev2 !== undefined || g.protocols.anyconnect !== undefined,
    );
  if (gateways.length > 0) return { gateways };
  const configured = base.gateways.map((g) => g.name).join(", ");
  if (allowedGw !== null && ![...allowedGw].some((n) => base.gateways.some((g) => g.name === n))) {
    return {
      code: "invalid-field",
      field: "settings.allowedGateways",
      message: `settings.allowedGateways: none of ${[...allowedGw].join(", ")} is configured on this device (configured: ${configured})`,
    };
  }
  return {
    code: "invalid-field",
    field: allowedProto === null ? "settings.allowedGateways" : "settings.allowedProtocols",
    message: "settings: the allowed gateways and protocols leave no way to connect with this device's configuration",
  };
}

/** Puts a preferred gateway first: priority 0, every other gateway at least 1 (order among them unchanged). */
function preferGateway(gateways: DetourConfig["gateways"], name: string | null): DetourConfig["gateways"] {
  if (name === null || !gateways.some((g) => g.name === name)) return gateways;
  return gateways.map((g) => ({
    ...g,
    priority: g.name === name ? PREFERRED_PRIORITY : Math.min(1000, g.priority + 1),
  }));
}

/**
 * The configuration with preferences and policy applied. A policy whose settings cannot work with this device's
 * configuration is refused (invalid-field, naming the setting); user preferences that cannot apply are skipped,
 * since the user can always fix them and must never be locked out by them.
 */
export function layer(base: DetourConfig, prefs: Settings, policy: PolicyDocument | null): LayerResult {
  const policySettings = policy?.settings ?? {};
  const locked = new Set(flattenSettings(policySettings).keys());
  const ignored: IgnoredPref[] = [];
  const userOnly = new Map<SettingKey, unknown>();
  for (const [k, v] of flattenSettings(prefs)) {
    if (locked.has(k)) continue;
    const reason = preferenceRefusal(base, k, v);
    if (reason === null) userOnly.set(k, v);
    else ignored.push({ key: k, value: v, reason });
  }
  const all = overlaySettings(unflattenSettings(userOnly), policySettings);

  const filtered = applyGatewayFilters(base, all);
  if ("code" in filtered) return { ok: false, rejection: filtered };
  const preferred = all.preferredGateway ?? null;
  const candidate = {
    ...base,
    gateways: preferGateway(filtered.gateways, preferred),
    lockdown: all.lockdown ?? base.lockdown,
    allowDisconnect: all.allowDisconnect ?? base.allowDisconnect,
    trustedNetworks:
      base.trustedNetworks === undefined || all.trustedNetworkPolicy === undefined
        ? base.trustedNetworks
        : { ...base.trustedNetworks, policy: all.trustedNetworkPolicy },
    race: { ...base.race, ...all.race },
    health: { ...base.health, ...all.health },
    standby: { ...base.standby, ...all.standby },
    retry: { ...base.retry, ...all.retry },
    captive: { ...base.captive, ...all.captive },
    localNetworkAccess: all.localNetworkAccess ?? base.localNetworkAccess,
    telemetry:
      all.telemetry === undefined
        ? base.telemetry
        : base.telemetry === undefined
          ? all.telemetry.endpoint === undefined
            ? undefined
            : {
                endpoint: all.telemetry.endpoint,
                ...(all.telemetry.intervalMs === undefined ? {} : { intervalMs: all.telemetry.intervalMs }),
              }
          : { ...base.telemetry, ...all.telemetry },
  };
  const parsed = parseConfig(candidate);
  if (!parsed.ok) {
    const i = parsed.issues[0];
    const key = SETTING_KEY_LIST.find((k) => i !== undefined && i.path.startsWith(k));
    const from = key !== undefined && locked.has(key) ? "policy" : "preferences";
    return {
      ok: false,
      rejection: {
        code: "invalid-field",
        field: key === undefined ? "settings" : `settings.${key}`,
        message: `the ${from} make the configuration invalid: ${i?.path ?? ""}: ${i?.message ?? ""}`,
      },
    };
  }
  const flatAll = flattenSettings(all);
  const sources = {} as Record<SettingKey, SettingSource>;
  const values = {} as Record<SettingKey, unknown>;
  for (const k of SETTING_KEY_LIST) {
    sources[k] = locked.has(k) ? "policy" : userOnly.has(k) ? "user" : "default";
    values[k] = flatAll.get(k) ?? defaultValue(parsed.config, k);
  }
  return {
    ok: true,
    effective: {
      config: parsed.config,
      autoConnect: all.autoConnect ?? false,
      preferredGateway: preferred,
      locked: [...locked].sort(),
      sources,
      ignored,
      values,
    },
  };
}

/** What the configuration itself says for a key nobody set (for `detour prefs get`). */
function defaultValue(c: DetourConfig, k: SettingKey): unknown {
  switch (k) {
    case "autoConnect":
      return false;
    case "preferredGateway":
      return null;
    case "allowedGateways":
      return c.gateways.map((g) => g.name);
    case "allowedProtocols":
      return [...new Set(c.gateways.flatMap((g) => Object.keys(g.protocols)))];
    case "lockdown":
      return c.lockdown;
    case "allowDisconnect":
      return c.allowDisconnect;
    case "trustedNetworkPolicy":
      return c.trustedNetworks?.policy ?? null;
    case "localNetworkAccess":
      return c.localNetworkAccess;
    case "telemetry.endpoint":
      return c.telemetry?.endpoint ?? null;
    case "telemetry.intervalMs":
      return c.telemetry?.intervalMs ?? null;
    case "race.staggerMs":
    case "race.legDeadlineMs":
    case "race.order":
    case "race.maxGateways":
    case "health.probeIntervalMs":
    case "health.idleProbeIntervalMs":
    case "health.probeTimeoutMs":
    case "health.deadAfterMs":
    case "standby.mode":
    case "standby.probeIntervalMs":
    case "standby.idleProbeIntervalMs":
    case "standby.freshMs":
    case "retry.initialMs":
    case "retry.maxMs":
    case "captive.exceptionMs":
    case "captive.allowException": {
      const [section, field] = k.split(".") as ["race" | "health" | "standby" | "retry" | "captive", string];
      return (c[section] as Record<string, unknown>)[field];
    }
  }
}
