/**
 * The control protocol between detourd and its clients (the `detour` CLI, the tray app, tests), defined once:
 * newline-delimited JSON over a unix socket, zod schemas for runtime validation, TypeScript types derived from them.
 *
 * Conversation (one JSON object per line, both directions):
 *
 *   client                                              detourd
 *   {type:"hello", protocol:1, client:"detour-cli/0.1"}  ->
 *                                                       <- {type:"hello", protocol:1, daemon:"detourd/0.1.0"}
 *                                                          or {type:"error", id:null, code:"unsupported-protocol", ...}, then close
 *   {type:"request", id:7, command:"status"}             ->
 *                                                       <- {type:"response", id:7, command:"status", result:{...}}
 *                                                          or {type:"error", id:7, code:"internal", message:"..."}
 *   {type:"request", id:8, command:"subscribe"}          ->
 *                                                       <- {type:"response", id:8, command:"subscribe", result:<snapshot>}
 *                                                       <- {type:"event", event:{type:"state", ...}}   (until the connection closes)
 *   {type:"request", id:9, command:"set-gateway", params:{gateway:"gw2"}} ->
 *                                                       <- {type:"response", id:9, command:"set-gateway", result:{gateway:"gw2"}}
 *
 * Every request gets exactly one reply carrying its id; replies may come out of order. An error not tied to a
 * request (bad JSON with no readable id, a line over MAX_LINE_LENGTH, no hello) has `id: null`. Envelopes are
 * strict (an unknown field is an error); payloads are loose objects, so a newer daemon may add fields.
 */
import type { CaptiveStatus } from "../captive.ts";
import {
  LOCAL_NETWORK_ACCESS_MODES,
  type LocalNetwork,
  type LocalNetworkAccessMode,
  type RefusedLocalNetwork,
} from "../net/local-networks.ts";
import type { LockdownStateReport } from "../lockdown-state.ts";
import { z } from "zod";
import {
  LEG_KINDS,
  PATH_MTU_CHANGES,
  type PathMtuChange,
  type Candidate,
  type ConnectionEvent,
  type ConnectionSnapshot,
  type ConnectionStateName,
  type DrillResult,
  type FailoverRecord,
  type HealthVerdict,
  type Leg,
  type LegOutcome,
  type LegRecord,
  type RaceRecord,
} from "../connection/types.ts";
import { MAX_SLA_MS, MIN_SLA_MS } from "../drill.ts";
import {
  KILL_SWITCH_CHANGES,
  KILL_SWITCH_ENFORCEMENTS,
  type KillSwitchChange,
  type KillSwitchEnforcement,
  type KillSwitchStatus,
} from "../killswitch-status.ts";
import type { EngineErrorCode } from "../tunnel/engine-types.ts";
import type { TelemetryStatus } from "../telemetry/status.ts";
import { SETTING_KEY_LIST } from "../policy/settings.ts";
import type { RefusedInput } from "../net/refusals.ts";
import type { PolicyEvent, PolicyStatus, PrefsPayload } from "../policy/status.ts";
import { REJECTION_CODES } from "../policy/verify.ts";

/** The protocol spoken here; a hello with any other number is refused with "unsupported-protocol". */
export const PROTOCOL_VERSION = 1;

/**
 * Longest line either side accepts, in characters (the JSON is ASCII apart from names). A status with dozens of
 * candidates and a full race record is ~20 KB; 1 Mi characters leaves room while bounding what a peer can make
 * the other side buffer. A longer line is an error and closes the connection: it is never buffered further.
 */
export const MAX_LINE_LENGTH = 1_048_576;

/** Where detourd listens unless told otherwise (`--socket`, or DETOUR_SOCKET). */
export const DEFAULT_SOCKET_PATH = "/run/detour/detourd.sock";

/** The group whose members may use the control socket (besides root). */
export const DEFAULT_CONTROL_GROUP = "detour";

export const COMMANDS = [
  "status",
  "connect",
  "disconnect",
  "gateways",
  "race",
  "subscribe",
  "drill",
  "policy",
  "prefs",
  "prefs-set",
  "diag",
  "diag-upload",
  "set-gateway",
] as const;
export type Command = (typeof COMMANDS)[number];

/**
 * The parameters of the commands that take some; every other command takes none. `set-gateway` chooses the
 * gateway the daemon races (a candidate's name), or null for automatic (every candidate, by ranking).
 */
export interface CommandParams {
  "set-gateway": { gateway: string | null };
  /** The SLA to judge the drill by (the daemon's default when absent). */
  drill: { slaMs?: number | undefined };
}
export type CommandWithParams = keyof CommandParams;
/** What a drill request may ask for. */
export const DrillParamsSchema = z.strictObject({ slaMs: z.int().min(MIN_SLA_MS).max(MAX_SLA_MS).optional() });
export type DrillParams = z.infer<typeof DrillParamsSchema>;
export const PARAM_SCHEMAS = {
  "set-gateway": z.strictObject({ gateway: z.string().min(1).max(253).nullable() }),
  drill: DrillParamsSchema,
} satisfies { [C in CommandWithParams]: z.ZodType<CommandParams[C]> };
function takesParams(c: Command): c is CommandWithParams {
  return Object.hasOwn(PARAM_SCHEMAS, c);
}

/**
 * Stable error codes a daemon replies with:
 * - bad-request: the line is not a valid message (bad JSON, wrong field, no hello yet, line too long)
 * - unknown-command: a well-formed request for a command this daemon does not know
 * - internal: the daemon failed while answering (a handler threw, or its answer could not be sent)
 * - unauthorized: the caller may not do this (reserved: today the socket's file permissions decide who connects)
 * - unsupported-protocol: the hello asked for a protocol version this daemon does not speak
 * - busy: too many clients, or too many requests in flight on this connection; retry later
 * - timeout: the daemon did not answer within its own bound (a hello, or a handler that hung)
 * - refused: the daemon understood and will not do it, with why (e.g. a setting locked by the managed policy)
 */
export const ERROR_CODES = [
  "bad-request",
  "unknown-command",
  "internal",
  "unauthorized",
  "unsupported-protocol",
  "busy",
  "timeout",
  "refused",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

// ---- payloads: loose enough not to restate main/core/connection/types.ts, strict enough to catch garbage ----

/** Listing every name in a Record makes the compiler reject a list that misses one or adds a stranger. */
const STATE_SET: Record<ConnectionStateName, true> = {
  disconnected: true,
  resolving: true,
  racing: true,
  connected: true,
  "failing-over": true,
  error: true,
  "waiting-for-network": true,
};
export const CONNECTION_STATES = Object.keys(STATE_SET) as ConnectionStateName[];
const RACE_REASON_SET: Record<RaceRecord["reason"], true> = {
  connect: true,
  failover: true,
  recover: true,
  retry: true,
  standby: true,
};
const RACE_REASONS = Object.keys(RACE_REASON_SET) as RaceRecord["reason"][];
const OUTCOME_SET: Record<LegOutcome, true> = {
  pending: true,
  starting: true,
  won: true,
  failed: true,
  cancelled: true,
  lost: true,
};
const LEG_OUTCOMES = Object.keys(OUTCOME_SET) as LegOutcome[];
const ENGINE_CODE_SET: Record<EngineErrorCode, true> = {
  timeout: true,
  unreachable: true,
  "auth-failed": true,
  "identity-mismatch": true,
  "engine-crashed": true,
  "bad-config": true,
  cancelled: true,
};
const ENGINE_ERROR_CODES = Object.keys(ENGINE_CODE_SET) as EngineErrorCode[];

type Kind = "string" | "number" | "boolean" | "array" | "object" | "string|null" | "number|null" | "object|null";

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function hasKind(v: unknown, kind: Kind): boolean {
  if (v === null) return kind.endsWith("|null");
  const base = kind.replace("|null", "");
  if (base === "array") return Array.isArray(v);
  if (base === "object") return isObject(v);
  if (base === "number") return typeof v === "number" && Number.isFinite(v);
  return typeof v === base;
}

/**
 * A nested record checked by the kind of each listed field only (the full shape lives in types.ts). The field
 * list is typed by T's keys, so a renamed field in types.ts fails to compile here instead of drifting.
 */
function record<T>(what: string, fields: { readonly [K in keyof T]?: Kind }): z.ZodType<T> {
  return z.custom<T>().superRefine((v, ctx) => {
    if (!isObject(v)) {
      ctx.addIssue({ code: "custom", message: `expected ${what} (an object), got ${describe(v)}` });
      return;
    }
    for (const [key, kind] of Object.entries(fields) as [string, Kind][]) {
      if (!hasKind(v[key], kind))
        ctx.addIssue({
          code: "custom",
          path: [key],
          message: `expected ${kind.replace("|", " or ")} in ${what}, got ${describe(v[key])}`,
        });
    }
  });
}

const LegSchema = record<Leg>("a leg", { id: "string", gateway: "string", kind: "string" });
const LegRecordSchema = z.looseObject({
  leg: LegSchema,
  outcome: z.enum(LEG_OUTCOMES),
  startedAt: z.number().nullable(),
  endedAt: z.number().nullable(),
  error: z.looseObject({ code: z.enum(ENGINE_ERROR_CODES), message: z.string() }).nullable(),
}) satisfies z.ZodType<LegRecord>;
export const RaceRecordSchema = z.looseObject({
  id: z.string(),
  reason: z.enum(RACE_REASONS),
  startedAt: z.number(),
  endedAt: z.number().nullable(),
  winner: LegSchema.nullable(),
  legs: z.array(LegRecordSchema),
}) satisfies z.ZodType<RaceRecord>;
const GatewayKind = z.looseObject({ gateway: z.string(), kind: z.enum(LEG_KINDS) });
export const FailoverRecordSchema = z.looseObject({
  from: GatewayKind,
  to: GatewayKind.nullable(),
  reason: z.string(),
  via: z.enum(["standby", "race"]),
  lastReplyAt: z.number(),
  detectedAt: z.number(),
  restoredAt: z.number().nullable(),
  detectedAfterMs: z.number(),
  restoredAfterMs: z.number().nullable(),
}) satisfies z.ZodType<FailoverRecord>;
const CandidateSchema = record<Candidate>("a candidate", {
  name: "string",
  hostname: "string",
  address: "string|null",
  priority: "number",
  region: "string",
  kinds: "array",
  sources: "array",
  probe: "object|null",
});
const HealthVerdictSchema = record<HealthVerdict>("a health verdict", { state: "string" });
const nullableMs = z.number().nullable();
export const DrillResultSchema = z.looseObject({
  id: z.string(),
  startedAt: z.number(),
  endedAt: z.number(),
  slaMs: z.number(),
  verdict: z.enum(["pass", "fail", "refused"]),
  reason: z.string(),
  from: GatewayKind.nullable(),
  to: GatewayKind.nullable(),
  blockedAt: nullableMs,
  liftedAt: nullableMs,
  detectedAt: nullableMs,
  detectedAfterMs: nullableMs,
  restoredAt: nullableMs,
  restoredAfterMs: nullableMs,
  probesSent: z.int().min(0),
  probesLost: z.int().min(0),
  failover: FailoverRecordSchema.nullable(),
}) satisfies z.ZodType<DrillResult>;

const snapshotShape = {
  state: z.enum(CONNECTION_STATES),
  summary: z.string(),
  gateway: z.string().nullable(),
  protocol: z.enum(LEG_KINDS).nullable(),
  activeLegId: z.string().nullable(),
  standby: z
    .looseObject({
      gateway: z.string(),
      protocol: z.enum(LEG_KINDS),
      legId: z.string(),
      lastReplyAt: z.number().nullable(),
    })
    .nullable(),
  since: z.number().nullable(),
  candidates: z.array(CandidateSchema),
  lastRace: RaceRecordSchema.nullable(),
  lastFailover: FailoverRecordSchema.nullable(),
  error: z.looseObject({ reason: z.string(), nextRetryAt: z.number().nullable() }).nullable(),
};
export const ConnectionSnapshotSchema = z.looseObject(snapshotShape) satisfies z.ZodType<ConnectionSnapshot>;

/**
 * Whether a successor of a crashed detourd would resume the connection the user asked for (and keep the kill switch
 * held meanwhile): the ownership record's copies on disk (main/agent/ownership.ts) and how their writes fare.
 */
// A type, not an interface: status's loose schema (DaemonInfoSchema) accepts it only with an implicit index signature.
export type CrashProtection = {
  /** false: a connection is wanted but no copy of the record on disk says so; a crash now lifts the kill switch. */
  inForce: boolean;
  /** Copies whose last write failed: the file, the system's code (ENOSPC, EROFS, EIO, ...) and the message. */
  failedCopies: { path: string; code: string | null; message: string }[];
  /** Retries of the failed writes since the first failure, and when the next runs (wall ms; null: none pending). */
  retries: number;
  nextRetryAt: number | null;
};
export const CrashProtectionSchema = z.looseObject({
  inForce: z.boolean(),
  failedCopies: z.array(z.looseObject({ path: z.string(), code: z.string().nullable(), message: z.string() })).max(10),
  retries: z.int().min(0),
  nextRetryAt: z.number().nullable(),
}) satisfies z.ZodType<CrashProtection>;

export const DaemonInfoSchema = z.looseObject({
  version: z.string(),
  pid: z.int().min(0),
  startedAt: z.number(),
  configPath: z.string(),
  /** What the start-up reclaim of a crashed instance's leftovers did, and faults caught at the top of detourd. */
  recovery: z
    .looseObject({
      reclaimed: z.array(z.string()).max(100),
      reclaimFailed: z.array(z.string()).max(100),
      recordError: z.string().nullable(),
      recordWriteFailures: z.int().min(0),
      lastRecordWriteError: z.string().nullable(),
      faults: z.int().min(0),
      lastFault: z.string().nullable(),
      /** Why the original resolv.conf was not put back (a damaged backup is never restored blindly). */
      dnsRestoreError: z.string().nullable().optional(),
      /** State files that could not be written (a full disk): the old content stays, the failure is counted. */
      stateWriteFailures: z.int().min(0).optional(),
      lastStateWriteError: z.string().nullable().optional(),
      /** This instance resumed the connection a crashed predecessor held (the kill switch held throughout). */
      resumedConnection: z.boolean().optional(),
      /** Whether a crash now would be resumed with the kill switch held (the ownership record's copies on disk). */
      crashProtection: CrashProtectionSchema.optional(),
    })
    .optional(),
  /** The daemon's memory in bytes (Node's process.memoryUsage): tells a leak (heap grows) from warm-up. */
  memory: z
    .looseObject({
      rss: z.number().min(0),
      heapUsed: z.number().min(0),
      external: z.number().min(0),
      arrayBuffers: z.number().min(0),
    })
    .optional(),
});
export type DaemonInfo = z.infer<typeof DaemonInfoSchema>;

const num = z.number().nullable();
export const TelemetryStatusSchema = z.looseObject({
  rttMs: num,
  rttP95Ms: num,
  jitterMs: num,
  lossPct: num,
  samples: z.number(),
  export: z
    .looseObject({
      endpoint: z.string(),
      deviceId: z.string(),
      policyHash: z.string(),
      pending: z.number(),
      dropped: z.number(),
      rejected: z.number(),
      delivered: z.number(),
      lastDeliveredAt: num,
      lastError: z.string().nullable(),
      nextAttemptAt: num,
    })
    .nullable(),
  reachability: z.array(
    z.looseObject({ target: z.string(), ok: z.boolean(), latencyMs: num, status: num, error: z.string().nullable() }),
  ),
}) satisfies z.ZodType<TelemetryStatus>;

const SettingKeySchema = z.enum(SETTING_KEY_LIST);
const RejectionSchema = z.looseObject({
  at: z.number(),
  code: z.enum(REJECTION_CODES),
  field: z.string().optional(),
  message: z.string(),
  source: z.string(),
});
export const PolicyStatusSchema = z.looseObject({
  version: z.number().nullable(),
  organisation: z.string().nullable(),
  source: z.string().nullable(),
  keyId: z.string().nullable(),
  issuedAt: z.string().nullable(),
  expiresAt: z.string().nullable(),
  appliedAt: z.number().nullable(),
  locked: z.array(SettingKeySchema),
  lastRejection: RejectionSchema.nullable(),
  ignoredPrefs: z.array(z.looseObject({ key: SettingKeySchema, value: z.unknown(), reason: z.string() })).optional(),
}) satisfies z.ZodType<PolicyStatus>;
export const PrefsPayloadSchema = z.looseObject({
  organisation: z.string().nullable(),
  entries: z.array(
    z.looseObject({
      key: SettingKeySchema,
      value: z.unknown(),
      source: z.enum(["default", "user", "policy"]),
      locked: z.boolean(),
      scope: z.enum(["user", "managed"]),
      ignored: z.string().optional(),
    }),
  ),
}) satisfies z.ZodType<PrefsPayload>;
/** A policy event (see PolicyEvent): one object schema, so it can join the event union under its "type". */
export const PolicyEventSchema = z.looseObject({
  type: z.literal("policy"),
  at: z.number(),
  change: z.enum(["applied", "rejected"]),
  source: z.string(),
  version: z.number().optional(),
  locked: z.array(SettingKeySchema).optional(),
  moved: z.boolean().optional(),
  code: z.enum(REJECTION_CODES).optional(),
  field: z.string().optional(),
  message: z.string().optional(),
});

export const KillSwitchStatusSchema = z.looseObject({
  state: z.enum(KILL_SWITCH_ENFORCEMENTS as [KillSwitchEnforcement, ...KillSwitchEnforcement[]]),
  mode: z.enum(["blocking", "tunnel-only"]).nullable(),
  ownGroup: z.number().nullable(),
  lastError: z.string().nullable(),
  lastErrorAt: num,
  applyFailures: z.number(),
  fallbacks: z.number(),
  restorations: z.number(),
  lastRestoredAt: num,
  watcherRestarts: z.number(),
  nextRetryAt: num,
}) satisfies z.ZodType<KillSwitchStatus>;

/** What `connect` answers once the kill switch for connecting was applied: whether it is in force. */
export interface ConnectPayload {
  killSwitch: KillSwitchStatus;
  /** Whether a crash from now on keeps the connection (and its kill switch); absent from a daemon without a record. */
  crashProtection?: CrashProtection;
}
export const ConnectPayloadSchema = z.looseObject({
  killSwitch: KillSwitchStatusSchema,
  crashProtection: CrashProtectionSchema.optional(),
}) satisfies z.ZodType<ConnectPayload>;

/**
 * What `status` answers (and `subscribe` starts with): the connection snapshot plus who is answering and, from
 * a daemon that measures them, the active tunnel's numbers and the telemetry export's health, the managed policy,
 * and the last failover drill (absent from a daemon that cannot drill).
 */
export type StatusPayload = ConnectionSnapshot & {
  daemon: DaemonInfo;
  telemetry?: TelemetryStatus;
  policy?: PolicyStatus;
  lastDrill?: DrillResult | null;
  /** The gateway chosen with set-gateway, or null for automatic; absent from a daemon without set-gateway. */
  gatewayChoice?: string | null;
  /** What detourd refused to take from the network (gateway addresses, pushed routes and resolvers), newest last. */
  refused?: RefusedInput[];
  /** The lockdown state recorded for the early-boot step; `error` says why the last write failed. */
  lockdownState?: LockdownStateReport;
  /** Whether the kill switch is in force, its failures and restorations; absent from a daemon without one. */
  killSwitch?: KillSwitchStatus;
  /** The tunnel's resolvers: in force or not, and how often other software's rewrite of them was undone. */
  dns?: DnsStatus;
  /** Trusted network detection and always-on; absent from a daemon without them. */
  trusted?: TrustedStatus;
  /** The active tunnel's MTU as checked with full-size echoes, and the TCP MSS clamp; absent without checks. */
  pathMtu?: PathMtuStatus;
  /** Which network this is (hashed key), what won on it, and what the network monitor said last. */
  network?: NetworkStatus;
  /** Captive networks: "Sign in to this network" and the kill switch's sign-in exception (core/captive.ts). */
  captive?: CaptiveStatus;
  /** Allow local network access: which connected networks are reachable outside the tunnel, and which were refused. */
  localNetworks?: LocalNetworksStatus;
};

/** Local network access as status shows it (`localNetworks`; core/net/local-networks.ts decides). */
export interface LocalNetworksStatus {
  /** The setting as configured or set by policy. */
  mode: LocalNetworkAccessMode;
  /** Whether it is in force here ("auto" is off for a full tunnel and under lockdown). */
  enabled: boolean;
  /** The connected networks a protected network overlaps that stay reachable, each through its own device only. */
  allowed: LocalNetwork[];
  /** Connected networks that were not allowed, with why (too wide, covering the tunnel's resolvers, ...). */
  refused: RefusedLocalNetwork[];
  /** Wall time of the last change of the allowed or refused set; null before any. */
  changedAt: number | null;
  changes: number;
  /** Why the connected networks could not be read (none is allowed meanwhile); null when they could. */
  lastError: string | null;
}
const LocalNetworkSchema = z.looseObject({
  prefix: z.string(),
  dev: z.string(),
  kind: z.enum(["connected", "bridge"]),
});
export const LocalNetworksStatusSchema = z.looseObject({
  mode: z.enum(LOCAL_NETWORK_ACCESS_MODES),
  enabled: z.boolean(),
  allowed: z.array(LocalNetworkSchema),
  refused: z.array(z.intersection(LocalNetworkSchema, z.looseObject({ reason: z.string() }))),
  changedAt: z.number().nullable(),
  changes: z.int().min(0),
  lastError: z.string().nullable(),
}) satisfies z.ZodType<LocalNetworksStatus>;

/** Trusted network detection as status shows it: which rule matched (or why none did) and what it means. */
export interface TrustedStatus {
  /** Whether the configuration names trusted networks. */
  configured: boolean;
  /** What a trusted network means: stay disconnected or connect anyway; null when none are configured. */
  policy: "disconnect" | "connect" | null;
  trusted: boolean;
  /** The rule that matched (its DNS and its pinned TLS host), null when none did. */
  rule: string | null;
  reason: string;
  /** Wall time of the last check, null before the first. */
  checkedAt: number | null;
  /** detourd keeps the tunnel down because of the trusted network; leaving it connects. */
  heldDown: boolean;
  /** Policy's autoConnect: connects at start and after every network change. */
  alwaysOn: boolean;
  /** false: the control socket refuses a disconnect. */
  allowDisconnect: boolean;
}

/** The active tunnel's path MTU as detourd checks it (status `pathMtu`). */
export interface PathMtuStatus {
  /** The active tunnel's device and its MTU; null while none is active. */
  ifname: string | null;
  mtu: number | null;
  /** The TCP MSS clamp on the tunnel devices. */
  mssClamp: "in-force" | "off" | "failed";
  lastCheckAt: number | null;
  lastVerdict: "ok" | "lowered" | "black-hole" | "silent" | null;
  /** Tunnels whose MTU was lowered after full-size packets vanished, since detourd started. */
  lowered: number;
  /** Paths on which not even 1280 bytes crossed (the leg was given up), since detourd started. */
  blackHoles: number;
  lastError: string | null;
}
export const PathMtuStatusSchema = z.looseObject({
  ifname: z.string().nullable(),
  mtu: z.int().nullable(),
  mssClamp: z.enum(["in-force", "off", "failed"]),
  lastCheckAt: z.number().nullable(),
  lastVerdict: z.enum(["ok", "lowered", "black-hole", "silent"]).nullable(),
  lowered: z.int().min(0),
  blackHoles: z.int().min(0),
  lastError: z.string().nullable(),
}) satisfies z.ZodType<PathMtuStatus>;

/** The network the device is on, as status shows it (`network`). */
export interface NetworkStatus {
  id: string | null;
  remembered: { gateway: string; kind: string } | null;
  monitor?: {
    /** Null until the monitor's first look. */
    online: boolean | null;
    lastChange: { at: number; kind: "online" | "offline" | "path-changed"; reason: string } | null;
    changes: number;
    watcherDeaths: number;
    wakes: number;
    /** How sleep is detected and the last sleep and wake (main/agent/network-watch.ts). */
    sleep?: {
      /** The clocks always; logind while its PrepareForSleep can be heard. */
      sources: ("clock" | "logind")[];
      logind: "starting" | "listening" | "no-logind" | "unavailable" | "unsupported";
      logindDetail: string | null;
      lastSleepAt: number | null;
      lastWake: { at: number; source: "clock" | "logind"; sleptMs: number } | null;
      /** A resume reported by the second detector too, not dispatched again. */
      absorbed: number;
      watcherDeaths: number;
      /** PrepareForSleep signals from a sender that does not own org.freedesktop.login1, ignored. */
      impostors: number;
    };
  };
}

/** The tunnel's DNS as detourd keeps it (status `dns`). */
export interface DnsStatus {
  /** The tunnel's resolvers are in force (resolv.conf is detourd's). */
  managed: boolean;
  /** Rewrites by other software that detourd undid since it started. */
  reassertions: number;
  lastReassertAt: number | null;
  /** Why the last attempt to put them in force or back failed, null once one succeeds. */
  lastError: string | null;
  /** Where they went: resolv.conf written by detourd, or systemd-resolved's settings on the tunnel's link. */
  backend?: "resolv.conf" | "resolved" | null;
  /** The device whose resolved link holds them (backend "resolved"). */
  link?: string | null;
  servers?: string[];
  /** resolvectl's spelling: "corp.example" a search domain, "~corp.example" routing only, "~." every name. */
  domains?: string[];
}
export const StatusPayloadSchema = z.looseObject({
  ...snapshotShape,
  daemon: DaemonInfoSchema,
  telemetry: TelemetryStatusSchema.optional(),
  policy: PolicyStatusSchema.optional(),
  lastDrill: DrillResultSchema.nullable().optional(),
  gatewayChoice: z.string().nullable().optional(),
  refused: z
    .array(
      z.looseObject({
        kind: z.enum(["gateway-address", "pushed-route", "pushed-dns"]),
        source: z.string(),
        gateway: z.string(),
        value: z.string(),
        reason: z.string(),
        at: z.number(),
        count: z.int().min(1),
      }),
    )
    .optional(),
  lockdownState: z
    .looseObject({
      path: z.string(),
      lockdown: z.boolean().nullable(),
      error: z.string().nullable(),
      bootBlock: z
        .looseObject({
          at: z.string(),
          action: z.enum(["block", "none", "failed"]),
          reason: z.string(),
          failClosed: z.boolean(),
        })
        .nullable(),
    })
    .optional(),
  killSwitch: KillSwitchStatusSchema.optional(),
  dns: z
    .looseObject({
      managed: z.boolean(),
      reassertions: z.int().min(0),
      lastReassertAt: z.number().nullable(),
      lastError: z.string().nullable(),
      backend: z.enum(["resolv.conf", "resolved"]).nullable().optional(),
      link: z.string().nullable().optional(),
      servers: z.array(z.string()).optional(),
      domains: z.array(z.string()).optional(),
    })
    .optional(),
  trusted: z
    .looseObject({
      configured: z.boolean(),
      policy: z.enum(["disconnect", "connect"]).nullable(),
      trusted: z.boolean(),
      rule: z.string().nullable(),
      reason: z.string(),
      checkedAt: z.number().nullable(),
      heldDown: z.boolean(),
      alwaysOn: z.boolean(),
      allowDisconnect: z.boolean(),
    })
    .optional(),
  pathMtu: PathMtuStatusSchema.optional(),
  network: z
    .looseObject({
      id: z.string().nullable(),
      remembered: z.looseObject({ gateway: z.string(), kind: z.string() }).nullable(),
      monitor: z
        .looseObject({
          online: z.boolean().nullable(),
          lastChange: z
            .looseObject({ at: z.number(), kind: z.enum(["online", "offline", "path-changed"]), reason: z.string() })
            .nullable(),
          changes: z.int().min(0),
          watcherDeaths: z.int().min(0),
          wakes: z.int().min(0),
          sleep: z
            .looseObject({
              sources: z.array(z.enum(["clock", "logind"])),
              logind: z.enum(["starting", "listening", "no-logind", "unavailable", "unsupported"]),
              logindDetail: z.string().nullable(),
              lastSleepAt: z.number().nullable(),
              lastWake: z
                .looseObject({ at: z.number(), source: z.enum(["clock", "logind"]), sleptMs: z.number().min(0) })
                .nullable(),
              absorbed: z.int().min(0),
              watcherDeaths: z.int().min(0),
              impostors: z.int().min(0),
            })
            .optional(),
        })
        .optional(),
    })
    .optional(),
  captive: z
    .looseObject({
      state: z.enum(["unknown", "checking", "open", "sign-in-required"]),
      reason: z.string().nullable(),
      portalUrl: z.string().nullable(),
      checkedAt: z.number().nullable(),
      checks: z.int().min(0),
      exception: z.looseObject({
        state: z.enum(["closed", "open", "forbidden"]),
        openedAt: z.number().nullable(),
        closesAt: z.number().nullable(),
        portalAddresses: z.array(z.string()),
        resolvers: z.array(z.string()),
        closedReason: z.string().nullable(),
        opened: z.int().min(0),
      }),
    })
    .optional(),
  localNetworks: LocalNetworksStatusSchema.optional(),
}) satisfies z.ZodType<StatusPayload>;

/** A candidate with its place in the daemon's ranking (1 is tried first). */
export type RankedCandidate = Candidate & { rank: number };
/** What `gateways` answers: every candidate with its probe result, best-ranked first. */
export interface GatewaysPayload {
  candidates: RankedCandidate[];
}
export const GatewaysPayloadSchema = z.looseObject({
  candidates: z.array(z.intersection(CandidateSchema, z.looseObject({ rank: z.int().min(1) }))),
}) satisfies z.ZodType<GatewaysPayload>;

const at = z.number();
/** One schema per event type; `satisfies` makes the compiler check every ConnectionEvent type is here and matches. */
const EVENT_SCHEMAS = {
  state: z.looseObject({ type: z.literal("state"), at, state: z.enum(CONNECTION_STATES), detail: z.string() }),
  "race-started": z.looseObject({
    type: z.literal("race-started"),
    at,
    raceId: z.string(),
    reason: z.enum(RACE_REASONS),
    legs: z.array(LegSchema),
  }),
  leg: z.looseObject({ type: z.literal("leg"), at, raceId: z.string(), record: LegRecordSchema }),
  "race-ended": z.looseObject({ type: z.literal("race-ended"), at, race: RaceRecordSchema }),
  failover: z.looseObject({ type: z.literal("failover"), at, failover: FailoverRecordSchema }),
  health: z.looseObject({ type: z.literal("health"), at, legId: z.string(), verdict: HealthVerdictSchema }),
  drill: z.looseObject({ type: z.literal("drill"), at, drill: DrillResultSchema }),
  "kill-switch": z.looseObject({
    type: z.literal("kill-switch"),
    at,
    change: z.enum(KILL_SWITCH_CHANGES as [KillSwitchChange, ...KillSwitchChange[]]),
    status: KillSwitchStatusSchema,
    detail: z.string(),
  }),
  "path-mtu": z.looseObject({
    type: z.literal("path-mtu"),
    at,
    legId: z.string(),
    gateway: z.string(),
    protocol: z.enum(LEG_KINDS),
    ifname: z.string(),
    change: z.enum(PATH_MTU_CHANGES as [PathMtuChange, ...PathMtuChange[]]),
    from: z.int().nullable(),
    to: z.int().nullable(),
    detail: z.string(),
  }),
  "crash-protection": z.looseObject({
    type: z.literal("crash-protection"),
    at,
    inForce: z.boolean(),
    detail: z.string(),
  }),
} satisfies { [K in ConnectionEvent["type"]]: z.ZodType<Extract<ConnectionEvent, { type: K }>> };
export const EVENT_TYPES = Object.keys(EVENT_SCHEMAS) as ConnectionEvent["type"][];
export const ConnectionEventSchema = z.discriminatedUnion("type", [
  EVENT_SCHEMAS.state,
  EVENT_SCHEMAS["race-started"],
  EVENT_SCHEMAS.leg,
  EVENT_SCHEMAS["race-ended"],
  EVENT_SCHEMAS.failover,
  EVENT_SCHEMAS.health,
  EVENT_SCHEMAS.drill,
  EVENT_SCHEMAS["kill-switch"],
  EVENT_SCHEMAS["path-mtu"],
  EVENT_SCHEMAS["crash-protection"],
]) satisfies z.ZodType<ConnectionEvent>;

/** What `diag` answers: the bundle detourd wrote (root-only, mode 0600) and what its redaction replaced. */
export interface DiagPayload {
  path: string;
  bytes: number;
  sha256: string;
  files: number;
  tookMs: number;
  redactions: { removed: Record<string, number>; pseudonymised: Record<string, number> };
}
export const DiagPayloadSchema = z.looseObject({
  path: z.string(),
  bytes: z.number(),
  sha256: z.string(),
  files: z.number(),
  tookMs: z.number(),
  redactions: z.looseObject({
    removed: z.record(z.string(), z.number()),
    pseudonymised: z.record(z.string(), z.number()),
  }),
}) satisfies z.ZodType<DiagPayload>;

/** What `diag-upload` answers: the bundle (the latest, or a new one) and each configured destination's outcome. */
export interface DiagUploadPayload {
  path: string;
  uploads: {
    target: "collector" | "sftp";
    ok: boolean;
    attempts: number;
    location: string | null;
    error: string | null;
  }[];
}
export const DiagUploadPayloadSchema = z.looseObject({
  path: z.string(),
  uploads: z.array(
    z.looseObject({
      target: z.enum(["collector", "sftp"]),
      ok: z.boolean(),
      attempts: z.number(),
      location: z.string().nullable(),
      error: z.string().nullable(),
    }),
  ),
}) satisfies z.ZodType<DiagUploadPayload>;

/**
 * Commands that legitimately take longer than the usual handler bound: a bundle reads the host and the engines
 * (seconds), an upload retries with backoff (about half a minute). Both sides use these bounds.
 */
export const SLOW_COMMAND_TIMEOUT_MS: Partial<Record<Command, number>> = { diag: 60_000, "diag-upload": 300_000 };

/** The result each command answers with. */
export interface CommandResults {
  status: StatusPayload;
  /** Null from a daemon that does not say whether its kill switch is in force. */
  connect: ConnectPayload | null;
  disconnect: null;
  gateways: GatewaysPayload;
  race: RaceRecord | null;
  subscribe: StatusPayload;
  /** The drill's result; a refusal is a result too (verdict "refused"), so only protocol trouble is an error. */
  drill: DrillResult;
  policy: PolicyStatus;
  prefs: PrefsPayload;
  "prefs-set": PrefsPayload;
  diag: DiagPayload;
  "diag-upload": DiagUploadPayload;
  /** The choice now in force. */
  "set-gateway": { gateway: string | null };
}
export const RESULT_SCHEMAS = {
  status: StatusPayloadSchema,
  connect: ConnectPayloadSchema.nullable(),
  disconnect: z.null(),
  gateways: GatewaysPayloadSchema,
  race: RaceRecordSchema.nullable(),
  subscribe: StatusPayloadSchema,
  drill: DrillResultSchema,
  policy: PolicyStatusSchema,
  prefs: PrefsPayloadSchema,
  "prefs-set": PrefsPayloadSchema,
  diag: DiagPayloadSchema,
  "diag-upload": DiagUploadPayloadSchema,
  "set-gateway": z.looseObject({ gateway: z.string().nullable() }),
} satisfies { [C in Command]: z.ZodType<CommandResults[C]> };

// ---- envelopes ----

/** Request ids are chosen by the client (a counter); any safe non-negative integer. */
export const RequestIdSchema = z.int().min(0);
export type RequestId = z.infer<typeof RequestIdSchema>;

export const ClientHelloSchema = z.strictObject({
  type: z.literal("hello"),
  protocol: z.int().min(0),
  client: z.string().min(1).max(128),
});
/** `args` carries the string parameters of the policy commands (prefs-set: key, and value or null to clear); bounded. */
export const RequestArgsSchema = z.record(z.string().max(64), z.string().max(4096).nullable());
/** The envelope; `params` is then checked against the command's own schema (PARAM_SCHEMAS), see parseClientMessage. */
export const RequestSchema = z.strictObject({
  type: z.literal("request"),
  id: RequestIdSchema,
  command: z.enum(COMMANDS),
  params: z.unknown().optional(),
  args: RequestArgsSchema.optional(),
});
export type ClientHello = z.infer<typeof ClientHelloSchema>;
/** A request: commands with parameters carry them, the others carry none. */
export type Request = (
  | { type: "request"; id: RequestId; command: Exclude<Command, CommandWithParams> }
  | {
      [C in CommandWithParams]: { type: "request"; id: RequestId; command: C; params: CommandParams[C] };
    }[CommandWithParams]
) & { args?: Record<string, string | null> };
/** What a client sends. */
export type ClientMessage = ClientHello | Request;

export const DaemonHelloSchema = z.strictObject({
  type: z.literal("hello"),
  protocol: z.int().min(0),
  daemon: z.string().min(1).max(128),
});
export const ErrorMessageSchema = z.strictObject({
  type: z.literal("error"),
  id: RequestIdSchema.nullable(),
  code: z.enum(ERROR_CODES),
  message: z.string().max(4096),
});
export const EventMessageSchema = z.strictObject({
  type: z.literal("event"),
  event: z.discriminatedUnion("type", [
    EVENT_SCHEMAS.state,
    EVENT_SCHEMAS["race-started"],
    EVENT_SCHEMAS.leg,
    EVENT_SCHEMAS["race-ended"],
    EVENT_SCHEMAS.failover,
    EVENT_SCHEMAS.health,
    EVENT_SCHEMAS.drill,
    EVENT_SCHEMAS["kill-switch"],
    EVENT_SCHEMAS["path-mtu"],
    EVENT_SCHEMAS["crash-protection"],
    PolicyEventSchema,
  ]),
});
const ResponseEnvelopeSchema = z.strictObject({
  type: z.literal("response"),
  id: RequestIdSchema,
  command: z.enum(COMMANDS),
  result: z.unknown(),
});
export type DaemonHello = z.infer<typeof DaemonHelloSchema>;
export type ErrorMessage = z.infer<typeof ErrorMessageSchema>;
export type EventMessage = { type: "event"; event: ConnectionEvent | PolicyEvent };
export type ResponseMessage<C extends Command = Command> = {
  [K in C]: { type: "response"; id: RequestId; command: K; result: CommandResults[K] };
}[C];
/** What the daemon sends. */
export type DaemonMessage = DaemonHello | ResponseMessage | ErrorMessage | EventMessage;

// ---- decoding and encoding ----

/** A decoded line, or why it is not a message: the error code to reply with and the request id if one was readable. */
export type Decoded<T> = { ok: true; message: T } | DecodeFailure;
export interface DecodeFailure {
  ok: false;
  code: "bad-request" | "unknown-command";
  id: RequestId | null;
  message: string;
}

/** Longest explanation put into an error reply: enough to name the bad fields, bounded whatever the input. */
const MAX_EXPLANATION = 600;

function describe(v: unknown): string {
  if (v === undefined) return "nothing";
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return v.length > 40 ? `a string (${v.length} characters)` : JSON.stringify(v);
  if (typeof v === "number" || typeof v === "boolean") return `${typeof v} ${v}`;
  return typeof v;
}

function pathOf(path: readonly PropertyKey[]): string {
  if (path.length === 0) return "(message)";
  return path
    .map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`))
    .join("")
    .replace(/^\./, "");
}

/** Names each bad field by its path, e.g. `result.lastRace.legs[0].outcome: Invalid option: expected one of ...`. */
export function explainIssues(issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[] = []): string {
  const text = issues.map((i) => `${pathOf([...prefix, ...i.path])}: ${i.message}`).join("; ");
  return text.length > MAX_EXPLANATION ? `${text.slice(0, MAX_EXPLANATION)}...` : text;
}

function fail(id: RequestId | null, message: string, code: DecodeFailure["code"] = "bad-request"): DecodeFailure {
  return { ok: false, code, id, message };
}

/** JSON.parse to a plain object, and the request id if it has a valid one (so even a bad request gets a matched reply). */
function decodeObject(
  line: string,
): { ok: true; value: Record<string, unknown>; id: RequestId | null } | DecodeFailure {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (e) {
    return fail(null, `not valid JSON: ${(e as Error).message.slice(0, 200)}`);
  }
  if (!isObject(value)) return fail(null, `expected a JSON object, got ${describe(value)}`);
  const id = RequestIdSchema.safeParse(value.id);
  return { ok: true, value, id: id.success ? id.data : null };
}

function badType(id: RequestId | null, t: unknown, known: readonly string[]): DecodeFailure {
  return fail(id, `type: expected one of ${known.join(", ")}; got ${describe(t)}`);
}

/** Decodes one line a client sent. Never throws. */
export function parseClientMessage(line: string): Decoded<ClientMessage> {
  const d = decodeObject(line);
  if (!d.ok) return d;
  const { value, id } = d;
  if (value.type === "hello") {
    const r = ClientHelloSchema.safeParse(value);
    return r.success ? { ok: true, message: r.data } : fail(null, explainIssues(r.error.issues));
  }
  if (value.type === "request") {
    const r = RequestSchema.safeParse(value);
    if (r.success) {
      const { command, params, args } = r.data;
      const withArgs = args === undefined ? {} : { args };
      if (!takesParams(command)) {
        return params === undefined
          ? { ok: true, message: { type: "request", id: r.data.id, command, ...withArgs } }
          : fail(r.data.id, `params: ${command} takes no parameters`);
      }
      // A drill without params takes the daemon's default SLA.
      const p = PARAM_SCHEMAS[command].safeParse(params ?? (command === "drill" ? {} : params));
      if (!p.success) return fail(r.data.id, explainIssues(p.error.issues, ["params"]));
      const message: Request =
        command === "drill"
          ? { type: "request", id: r.data.id, command, params: p.data as DrillParams, ...withArgs }
          : { type: "request", id: r.data.id, command, params: p.data as CommandParams["set-gateway"], ...withArgs };
      return { ok: true, message };
    }
    const onlyCommand = r.error.issues.every((i) => i.path.length === 1 && i.path[0] === "command");
    if (onlyCommand && id !== null && typeof value.command === "string") {
      return fail(
        id,
        `unknown command ${describe(value.command)}; this daemon knows ${COMMANDS.join(", ")}`,
        "unknown-command",
      );
    }
    return fail(id, explainIssues(r.error.issues));
  }
  return badType(id, value.type, ["hello", "request"]);
}

/** Decodes one line the daemon sent, including the result of a response (checked against its command). Never throws. */
export function parseDaemonMessage(line: string): Decoded<DaemonMessage> {
  const d = decodeObject(line);
  if (!d.ok) return d;
  const { value, id } = d;
  switch (value.type) {
    case "hello": {
      const r = DaemonHelloSchema.safeParse(value);
      return r.success ? { ok: true, message: r.data } : fail(null, explainIssues(r.error.issues));
    }
    case "error": {
      const r = ErrorMessageSchema.safeParse(value);
      return r.success ? { ok: true, message: r.data } : fail(id, explainIssues(r.error.issues));
    }
    case "event": {
      const r = EventMessageSchema.safeParse(value);
      return r.success ? { ok: true, message: r.data as EventMessage } : fail(null, explainIssues(r.error.issues));
    }
    case "response": {
      const env = ResponseEnvelopeSchema.safeParse(value);
      if (!env.success) return fail(id, explainIssues(env.error.issues));
      const result = RESULT_SCHEMAS[env.data.command].safeParse(env.data.result);
      if (!result.success) return fail(env.data.id, explainIssues(result.error.issues, ["result"]));
      // RESULT_SCHEMAS satisfies CommandResults per command (checked at its definition), so this pairing holds.
      return { ok: true, message: { ...env.data, result: result.data } as ResponseMessage };
    }
    default:
      return badType(id, value.type, ["hello", "response", "error", "event"]);
  }
}

/** One message as a line (JSON + "\n"), or why it cannot be sent (not serialisable, or longer than MAX_LINE_LENGTH). */
export function encodeLine(
  message: ClientMessage | DaemonMessage,
): { ok: true; line: string } | { ok: false; reason: string } {
  let json: string;
  try {
    json = JSON.stringify(message);
  } catch (e) {
    return { ok: false, reason: `not serialisable: ${(e as Error).message}` };
  }
  if (json.length > MAX_LINE_LENGTH)
    return {
      ok: false,
      reason: `message of ${json.length} characters exceeds the ${MAX_LINE_LENGTH}-character line limit`,
    };
  return { ok: true, line: `${json}\n` };
}

/**
 * Splits a character stream into lines without ever holding more than `maxLength` characters of an unfinished
 * line. Blank lines are skipped and a trailing "\r" is dropped. Once a line is too long the decoder is spent:
 * the caller must close the connection, since the rest of the stream cannot be framed reliably.
 */
export class LineDecoder {
  readonly maxLength: number;
  #parts: string[] = [];
  #length = 0;
  #overflowed = false;

  constructor(maxLength: number = MAX_LINE_LENGTH) {
    this.maxLength = maxLength;
  }

  /** Characters of an unfinished line held so far (a truncated message, if the stream ends now). */
  get buffered(): number {
    return this.#length;
  }

  push(chunk: string): { lines: string[]; overflow: boolean } {
    const lines: string[] = [];
    if (this.#overflowed) return { lines, overflow: true };
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf("\n", start);
      const end = nl === -1 ? chunk.length : nl;
      if (this.#length + (end - start) > this.maxLength) {
        this.#overflowed = true;
        this.#parts = [];
        this.#length = 0;
        return { lines, overflow: true };
      }
      if (nl === -1) {
        if (end > start) {
          this.#parts.push(chunk.slice(start));
          this.#length += end - start;
        }
        return { lines, overflow: false };
      }
      let line = this.#parts.length === 0 ? chunk.slice(start, nl) : this.#parts.join("") + chunk.slice(start, nl);
      this.#parts = [];
      this.#length = 0;
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line.trim().length > 0) lines.push(line);
      start = nl + 1;
    }
  }
}
