/**
 * The persisted lockdown state and what the early-boot step makes of it. detourd records whether lockdown is on
 * and what it protects (main/agent/lockdown-state-store.ts) whenever that changes; at the next boot, before the
 * network comes up, the early step (main/agent/early-block.ts) reads it and puts the blocking kill-switch table
 * in force, which detourd later replaces in one atomic transaction (the same table). Pure: the file's text comes
 * in, the decision goes out.
 *
 * A missing file means detourd never recorded a state (first boot after installing, or root removed it): nothing
 * is known to protect, so nothing is blocked. A file that is there but cannot be read or parsed fails closed: it
 * exists only because detourd wrote it, atomically, so its last known content may well have been lockdown, and a
 * wrong block lasts only until detourd starts and puts its own table (or none) in force, while a wrong pass
 * would let everything out in clear for that whole time.
 */
import { z } from "zod";
import { killSwitchPolicy, type KillSwitchRules } from "./killswitch.ts";

export const LOCKDOWN_STATE_FORMAT = "detour-lockdown-state/1";
/** The file's name in detourd's state folder (/var/lib/detour). */
export const LOCKDOWN_STATE_FILE = "lockdown-state.json";

const Prefix = z.string().regex(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, "an IPv4 prefix such as 198.19.0.0/16");
const DevicePattern = z.string().regex(/^(?:[A-Za-z0-9._-]{1,15}|[A-Za-z0-9._-]{1,14}\*)$/, "an interface name");

export const LockdownState = z
  .object({
    format: z.literal(LOCKDOWN_STATE_FORMAT),
    lockdown: z.boolean(),
    /** The protected networks of the effective configuration (0.0.0.0/0: full tunnel). */
    protectedNetworks: z.array(Prefix),
    /** detourd's tunnel device patterns, let through as detourd's own table does. */
    tunnelDevices: z.array(DevicePattern),
  })
  .strict();
export type LockdownState = z.infer<typeof LockdownState>;

/** The state to record for an effective configuration and detourd's device prefix. */
export function lockdownStateFor(
  config: { lockdown: boolean; protectedRoutes: readonly string[] },
  ifnamePrefix: string,
): LockdownState {
  return {
    format: LOCKDOWN_STATE_FORMAT,
    lockdown: config.lockdown,
    protectedNetworks: [...config.protectedRoutes],
    tunnelDevices: [`${ifnamePrefix}-*`, "ipsec*"],
  };
}

/** The early step's report file, beside the state: what it did at which boot (detourd shows it). */
export const EARLY_BLOCK_REPORT_FILE = "early-block-report.json";

/** What the early step did this boot: blocked, nothing, or a block that was due and failed. */
export const EarlyBlockReport = z
  .object({
    /** The kernel's boot id (/proc/sys/kernel/random/boot_id): a report of an earlier boot says nothing of this one. */
    bootId: z.string().min(1),
    at: z.string(),
    action: z.enum(["block", "none", "failed"]),
    reason: z.string(),
    failClosed: z.boolean(),
  })
  .strict();
export type EarlyBlockReport = z.infer<typeof EarlyBlockReport>;

/** The early step's report if it is of this boot, else null (no report, an unreadable one, or an earlier boot's). */
export function earlyBlockOfThisBoot(text: string | null, bootId: string): EarlyBlockReport | null {
  if (text === null) return null;
  try {
    const r = EarlyBlockReport.safeParse(JSON.parse(text));
    return r.success && r.data.bootId === bootId ? r.data : null;
  } catch {
    return null;
  }
}

/** What `detour status` shows of the recorded state (`lockdownState`). */
export interface LockdownStateReport {
  path: string;
  /** Lockdown as last recorded (null: nothing recorded yet). */
  lockdown: boolean | null;
  /** Why the last write failed; null once a write succeeded. */
  error: string | null;
  /** What the early-boot step did this boot; null when it did not run this boot (not installed, or detourd alone). */
  bootBlock: Omit<EarlyBlockReport, "bootId"> | null;
}

export function encodeLockdownState(s: LockdownState): string {
  return JSON.stringify(s, null, 2) + "\n";
}

/** What the early step found: the file's text, no file at all, or a file it could not read (with the reason). */
export type StateRead = { kind: "text"; text: string } | { kind: "missing" } | { kind: "unreadable"; reason: string };

export type EarlyBlockDecision =
  { action: "none"; reason: string } | { action: "block"; rules: KillSwitchRules; reason: string; failClosed: boolean };

/** Everything is protected and only loopback and the underlay's upkeep (DHCP, IPv6 ND) may leave. */
function blockingRules(protectedNetworks: readonly string[], tunnelDevices: readonly string[]): KillSwitchRules {
  const rules = killSwitchPolicy({
    state: "disconnected",
    lockdown: true,
    protectedNetworks,
    gatewayEndpoints: [],
    tunnelDevices,
    dnsServers: [],
  });
  if (rules === null) throw new Error("lockdown while disconnected always blocks");
  return rules;
}

/** What the early step does with what it read (see the module comment for missing and unreadable files). */
export function earlyBlockDecision(read: StateRead): EarlyBlockDecision {
  const failClosed = (why: string): EarlyBlockDecision => ({
    action: "block",
    rules: blockingRules(["0.0.0.0/0"], []),
    reason: `${why}; blocking everything until detourd starts (fail closed)`,
    failClosed: true,
  });
  if (read.kind === "missing") return { action: "none", reason: "no lockdown state recorded" };
  if (read.kind === "unreadable") return failClosed(`the lockdown state cannot be read: ${read.reason}`);
  let value: unknown;
  try {
    value = JSON.parse(read.text);
  } catch (e) {
    return failClosed(`the lockdown state is not JSON: ${(e as Error).message}`);
  }
  const parsed = LockdownState.safeParse(value);
  if (!parsed.success) {
    const i = parsed.error.issues[0];
    return failClosed(`the lockdown state is invalid: ${i === undefined ? "" : `${i.path.join(".")}: ${i.message}`}`);
  }
  const s = parsed.data;
  if (!s.lockdown) return { action: "none", reason: "lockdown is off" };
  try {
    return {
      action: "block",
      rules: blockingRules(s.protectedNetworks, s.tunnelDevices),
      reason: "lockdown is on",
      failClosed: false,
    };
  } catch (e) {
    return failClosed(`the lockdown state is invalid: ${(e as Error).message}`);
  }
}
