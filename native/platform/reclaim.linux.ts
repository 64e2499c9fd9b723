/**
 * Taking back what a previous detourd left behind after a crash or kill -9, from its ownership record: its engine
 * processes (only while PID, /proc start time and boot id all match, so a reused PID is never hit), its tunnel
 * devices, its routing rules and tables, its nftables tables. Besides the record, only detourd's own naming is
 * used: devices called `<ifname prefix>-*`; processes in detourd's own network namespace whose argv names such a
 * device as theirs, or charons configured from detourd's work folder (a spawn the record could not list in the
 * milliseconds before a kill); the protected table and its rule (routes.linux.ts); and the rule an IKE instance's
 * charon adds for its private table (ROUTING_RULE_PRIO, a table in detourd's IKE range) when a charon of detourd's
 * ran. Never a broad name match.
 *
 * Each step is independent: a failure is listed in the report and the rest still runs.
 */
import { revertLinkDns } from "./resolved.linux.ts";
import { readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { basename } from "node:path";
import { ROUTING_RULE_PRIO, ROUTING_TABLE_MAX, ROUTING_TABLE_MIN } from "../engines/ipsec/charon-config.ts";
import { uapiSocketPath } from "../engines/wireguard/uapi-client.ts";
import { DRILL_FAMILY, DRILL_TABLE } from "./drill-firewall.linux.ts";
import { MSS_FAMILY, MSS_TABLE } from "./mss.linux.ts";
import { ipJson } from "./ip.linux.ts";
import type { OwnedProcess, OwnedState, ReclaimReport } from "./platform.ts";
import { processTree, stopPids } from "./process-tree.linux.ts";
import { PROTECTED_RULE_PREF, PROTECTED_TABLE } from "./routes.linux.ts";
import { CAPTIVE_RULE_PREF } from "./captive-path.linux.ts";
import { run } from "./run.ts";

/** A previous instance's engines get this long to stop orderly (charon sends its IKE DELETE) before SIGKILL. */
const RECLAIM_STOP_GRACE_MS = 2000;

/** The boot id: a start time only names a process within one boot. */
function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

/** /proc/<pid>/stat's 22nd field (start time in clock ticks since boot), or null when the process is gone. */
export function processStartTime(pid: number): string | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${String(pid)}/stat`, "utf8");
  } catch {
    return null;
  }
  // The command name may hold spaces and parentheses; fields resume after the last ')' at field 3 (state).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  if (fields[0] === "Z" || fields[0] === "X") return null;
  return fields[19] ?? null;
}

export function identifyProcess(pid: number): { startTime: string; bootId: string } | null {
  const startTime = processStartTime(pid);
  return startTime === null ? null : { startTime, bootId: bootId() };
}

/**
 * The recorded processes that are still the very processes recorded: same PID, same start time, same boot. A PID
 * the kernel gave to another process since (after a reboot, or after wrapping) is never among them.
 */
export function stillOurs(
  processes: readonly OwnedProcess[],
  identify: (pid: number) => { startTime: string; bootId: string } | null,
): OwnedProcess[] {
  return processes.filter((p) => {
    if (p.pid <= 1 || p.pid === process.pid) return false;
    const now = identify(p.pid);
    return now !== null && now.startTime === p.startTime && now.bootId === p.bootId;
  });
}

/** The network namespace a process lives in (an inode name such as "net:[4026532281]"), or null. */
function netnsOf(pid: number | "self"): string | null {
  try {
    return readlinkSync(`/proc/${String(pid)}/ns/net`);
  } catch {
    return null;
  }
}

function procStrings(pid: number, file: "cmdline" | "environ"): string[] {
  try {
    return readFileSync(`/proc/${String(pid)}/${file}`, "utf8").split("\0");
  } catch {
    return [];
  }
}

/**
 * Whether a process's argv and environment name it as one of detourd's by its own naming: a device of detourd's
 * (`<prefix>-*`) as wireguard-go's, openconnect's or ping's device argument, or a charon whose configuration is in
 * detourd's work folder.
 */
export function namedAsOurs(
  argv: readonly string[],
  env: readonly string[],
  prefix: string,
  workDir?: string,
): boolean {
  const ours = (dev: string | undefined): boolean =>
    dev !== undefined && dev.startsWith(`${prefix}-`) && dev.length <= 15;
  const exe = basename(argv[0] ?? "");
  if (exe === "wireguard-go") return ours(argv[argv.indexOf("-f") + 1]);
  if (exe === "ping") return argv.includes("-I") && ours(argv[argv.indexOf("-I") + 1]);
  if (exe === "openconnect")
    return argv.some((a) => a.startsWith("--interface=") && ours(a.slice("--interface=".length)));
  if (exe.startsWith("charon") && workDir !== undefined) {
    const conf = env.find((e) => e.startsWith("STRONGSWAN_CONF="))?.slice("STRONGSWAN_CONF=".length);
    return conf !== undefined && conf.startsWith(`${workDir.replace(/\/+$/, "")}/`);
  }
  return false;
}

/**
 * Processes in detourd's network namespace that its naming says are its own (namedAsOurs): the few a killed
 * detourd spawned in the last milliseconds before the record could list them.
 */
function orphansByNaming(
  prefix: string,
  workDir: string | undefined,
  skip: ReadonlySet<number>,
): { pid: number; exe: string }[] {
  const here = netnsOf("self");
  let entries: string[] = [];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  const out: { pid: number; exe: string }[] = [];
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid <= 1 || pid === process.pid || skip.has(pid)) continue;
    if (here === null || netnsOf(pid) !== here) continue;
    const argv = procStrings(pid, "cmdline");
    if (namedAsOurs(argv, procStrings(pid, "environ"), prefix, workDir))
      out.push({ pid, exe: basename(argv[0] ?? "") });
  }
  return out;
}

interface RuleRow {
  priority?: number;
  table?: string;
}

async function rules(family: "4" | "6"): Promise<{ pref: number; table: string }[]> {
  return (await ipJson(undefined, [`-${family}`, "rule", "show"])).flatMap((row) => {
    const r = row as RuleRow;
    return typeof r.priority === "number" && typeof r.table === "string" ? [{ pref: r.priority, table: r.table }] : [];
  });
}

async function links(): Promise<string[]> {
  return (await ipJson(undefined, ["link", "show"])).flatMap((row) => {
    const n = (row as { ifname?: unknown }).ifname;
    return typeof n === "string" ? [n] : [];
  });
}

/** Removes what `owned` lists (see the module comment); never throws, every step is reported. */
export async function reclaim(
  owned: OwnedState,
  naming: { ifnamePrefix: string; workDir?: string },
): Promise<ReclaimReport> {
  const report: ReclaimReport = { removed: [], failed: [] };
  const step = async (what: string, fn: () => Promise<boolean>): Promise<void> => {
    try {
      if (await fn()) report.removed.push(what);
    } catch (e) {
      report.failed.push(`${what}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };

  // 0. Per-link DNS in resolved, while the devices still exist (a link that is gone took its settings with it).
  for (const dev of owned.resolvedLinks ?? []) await step(`resolved link settings on ${dev}`, () => revertLinkDns(dev));

  // 1. Processes first: a live engine would recreate what is removed after it.
  const ours = stillOurs(owned.processes, identifyProcess);
  let charonRan = owned.processes.some((p) => basename(p.exe).startsWith("charon"));
  if (ours.length > 0) {
    await step(`processes ${ours.map((p) => `${basename(p.exe)} ${String(p.pid)}`).join(", ")}`, async () => {
      const pids = ours.flatMap((p) => processTree(p.pid));
      await stopPids(pids, "SIGTERM", RECLAIM_STOP_GRACE_MS);
      const alive = ours.filter((p) => processStartTime(p.pid) === p.startTime);
      if (alive.length > 0) throw new Error(`still running: ${alive.map((p) => String(p.pid)).join(", ")}`);
      return true;
    });
  }

  // 1b. What detourd's naming says is its own, in its namespace: a spawn the record could not list in time.
  const named = orphansByNaming(naming.ifnamePrefix, naming.workDir, new Set(ours.map((p) => p.pid)));
  if (named.some((p) => p.exe.startsWith("charon"))) charonRan = true;
  if (named.length > 0) {
    await step(`processes by name ${named.map((p) => `${p.exe} ${String(p.pid)}`).join(", ")}`, async () => {
      const starts = new Map(named.map((p) => [p.pid, processStartTime(p.pid)]));
      await stopPids(
        named.flatMap((p) => processTree(p.pid)),
        "SIGTERM",
        RECLAIM_STOP_GRACE_MS,
      );
      const alive = named.filter((p) => starts.get(p.pid) !== null && processStartTime(p.pid) === starts.get(p.pid));
      if (alive.length > 0) throw new Error(`still running: ${alive.map((p) => String(p.pid)).join(", ")}`);
      return true;
    });
  }

  // 2. Devices: the record's and detourd's own names (a TUN device usually went with its process).
  const prefix = `${naming.ifnamePrefix}-`;
  let present: string[] = [];
  await step("listing devices", async () => {
    present = await links();
    return false;
  });
  const devices = new Set([...owned.devices, ...present.filter((n) => n.startsWith(prefix))]);
  for (const dev of devices) {
    if (present.includes(dev)) {
      await step(`device ${dev}`, async () => {
        const r = await run("ip", ["link", "del", "dev", dev]);
        if (r.code !== 0 && (await links()).includes(dev)) throw new Error(r.stderr.trim());
        return true;
      });
    }
    // A SIGKILLed wireguard-go leaves its UAPI socket; a later one of the same name would be taken for it.
    await step(`socket ${uapiSocketPath(dev)}`, () => {
      rmSync(uapiSocketPath(dev), { force: true });
      return Promise.resolve(false);
    });
  }

  // 3. Rules (both families), then the tables' routes (throws do not go with any device).
  for (const family of ["4", "6"] as const) {
    let present4: { pref: number; table: string }[] = [];
    await step(`listing IPv${family} rules`, async () => {
      present4 = await rules(family);
      return false;
    });
    const owns = (r: { pref: number; table: string }): boolean =>
      (r.pref === PROTECTED_RULE_PREF && r.table === String(PROTECTED_TABLE)) ||
      // The captive check's underlay rules (captive-path.linux.ts): only ever detourd's, at their own preference.
      (r.pref === CAPTIVE_RULE_PREF && r.table === "main") ||
      owned.rules.some((o) => o.pref === r.pref && String(o.table) === r.table) ||
      (charonRan &&
        r.pref === ROUTING_RULE_PRIO &&
        Number(r.table) >= ROUTING_TABLE_MIN &&
        Number(r.table) <= ROUTING_TABLE_MAX);
    for (const r of present4.filter(owns)) {
      await step(`IPv${family} rule ${String(r.pref)} lookup ${r.table}`, async () => {
        const res = await run("ip", [`-${family}`, "rule", "del", "pref", String(r.pref), "table", r.table]);
        if (res.code !== 0) throw new Error(res.stderr.trim());
        return true;
      });
    }
    for (const t of new Set([PROTECTED_TABLE, ...owned.tables])) {
      await step(`IPv${family} table ${String(t)}`, async () => {
        const routes = await ipJson(undefined, [`-${family}`, "route", "show", "table", String(t)]);
        if (routes.length === 0) return false;
        const res = await run("ip", [`-${family}`, "route", "flush", "table", String(t)]);
        if (res.code !== 0) throw new Error(res.stderr.trim());
        return true;
      });
    }
  }

  // 4. nftables: the drill's block and the MSS clamp go; the kill switch's table is replaced by the data plane at start (under
  // lockdown it must keep blocking until then), so it is left here.
  if (owned.nftTables.includes("drill-block")) {
    await step(`nft table ${DRILL_FAMILY} ${DRILL_TABLE}`, async () => {
      const res = await run("nft", ["delete", "table", DRILL_FAMILY, DRILL_TABLE]);
      if (res.code !== 0 && !/No such file|does not exist/i.test(res.stderr)) throw new Error(res.stderr.trim());
      return res.code === 0;
    });
  }
  if (owned.nftTables.includes("mss-clamp")) {
    await step(`nft table ${MSS_FAMILY} ${MSS_TABLE}`, async () => {
      const res = await run("nft", ["delete", "table", MSS_FAMILY, MSS_TABLE]);
      if (res.code !== 0 && !/No such file|does not exist/i.test(res.stderr)) throw new Error(res.stderr.trim());
      return res.code === 0;
    });
  }
  return report;
}
