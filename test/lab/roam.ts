/**
 * A laptop's life in the lab: moving the client between its networks the way an OS does (old link down and its
 * addresses gone, a gap offline, the new link up with its address, default routes and resolver), and a suspend:
 * every process of the client namespace frozen (cgroup v2 freezer, SIGSTOP where there is none) and thawed.
 * lab.ts keeps the state (which network, what is frozen); this module does the work.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { inNs, isAlive, readIfExists, run, runOk, spawnDaemon, waitFor } from "./exec.ts";
import { namespacePids } from "./netns.ts";
import { dnsmasqConf } from "./services.ts";
import { DOMAIN, NETWORK_NAMES, type ClientNetwork, type LabTopology, type NetworkName } from "./topology.ts";

/** A gap longer than ten minutes is a typo, not a train tunnel. */
export const MAX_GAP_MS = 600_000;
/** A lab sleep longer than an hour would outlive any test; real nights are not what the lab measures. */
export const MAX_SLEEP_S = 3600;
/** Freezing a handful of processes takes milliseconds; this bounds a cgroup that never reports "frozen". */
const FREEZE_SETTLE_TIMEOUT_MS = 5_000;
/**
 * Processes may fork while the namespace is being frozen; each round places the ones that appeared since. Three
 * rounds catch detourd starting an engine at that moment; the last one finds nothing new in practice.
 */
const FREEZE_ROUNDS = 3;
const DNSMASQ_READY_TIMEOUT_MS = 5_000;
/** A killed process leaves its cgroup as soon as it is reaped; this bounds the wait before the cgroup is removed. */
const CGROUP_EMPTY_TIMEOUT_MS = 5_000;

export function validateGapMs(ms: number): number {
  if (!(Number.isInteger(ms) && ms >= 0 && ms <= MAX_GAP_MS))
    throw new Error(`the gap must be whole milliseconds 0-${String(MAX_GAP_MS)}, got ${String(ms)}`);
  return ms;
}

export function validateSleepSeconds(s: number): number {
  if (!(Number.isFinite(s) && s > 0 && s <= MAX_SLEEP_S))
    throw new Error(`a sleep must last more than 0 and at most ${String(MAX_SLEEP_S)} seconds, got ${String(s)}`);
  return s;
}

/** `ip -batch` lines that take the client off a network: the link goes down and its addresses (and routes) go. */
export function leaveLines(net: ClientNetwork): string[] {
  return [`link set ${net.ifname} down`, `addr flush dev ${net.ifname}`];
}

/** `ip -batch` lines that put the client on a network: link up, its addresses, default routes via its router. */
export function joinLines(net: ClientNetwork): string[] {
  return [
    `link set ${net.ifname} up`,
    `addr replace ${net.address}/${String(net.prefixLen)} dev ${net.ifname}`,
    // nodad: nothing else on a point-to-point veth could claim the address (see netns.ts).
    `addr replace ${net.address6}/${String(net.prefixLen6)} dev ${net.ifname} nodad`,
    `route replace 0.0.0.0/0 via ${net.routerAddress} dev ${net.ifname}`,
    `route replace ::/0 via ${net.routerAddress6} dev ${net.ifname}`,
  ];
}

/** The resolv.conf a network hands out (what a DHCP client writes). */
export function resolvConf(net: ClientNetwork): string {
  return `nameserver ${net.resolver}\nsearch ${DOMAIN}\n`;
}

/** The per-namespace resolv.conf that `ip netns exec` bind-mounts over /etc/resolv.conf in the client namespace. */
export function clientResolvConfPath(topo: LabTopology): string {
  return `/etc/netns/${topo.client.ns}/resolv.conf`;
}

async function ipBatch(ns: string, lines: string[]): Promise<void> {
  await runOk("ip", ["-n", ns, "-batch", "-"], { input: lines.join("\n") + "\n" });
}

export interface MoveReport {
  /** The network the client was on; null if it was between networks (an earlier move failed halfway). */
  from: NetworkName | null;
  to: NetworkName;
  gapMs: number;
  /** Epoch ms at which the old link was down and without addresses. */
  offlineAt: number;
  /** Epoch ms at which the new link had its address and default routes. */
  onlineAt: number;
  /** The resolver changed with the network, and the client namespace's resolv.conf was rewritten. */
  resolverChanged: boolean;
}

/**
 * Moves the client: every network's link goes down with its addresses, `gapMs` passes with the client offline,
 * then `to` comes up with its addresses and default routes. resolv.conf is rewritten in place (the file is
 * bind-mounted into the namespace, so a rename would not be seen) only when the resolver changes, as a DHCP client
 * would; it then also overwrites whatever detourd had put there, as on a real laptop. `onOffline` runs once the
 * client is offline, before the gap (tests look at the offline client there).
 */
export async function moveClient(
  topo: LabTopology,
  from: NetworkName | null,
  to: NetworkName,
  gapMs: number,
  onOffline?: () => Promise<void> | void,
): Promise<MoveReport> {
  validateGapMs(gapMs);
  const target = topo.networks[to];
  await ipBatch(
    topo.client.ns,
    NETWORK_NAMES.flatMap((n) => leaveLines(topo.networks[n])),
  );
  const offlineAt = Date.now();
  if (onOffline !== undefined) await onOffline();
  const remaining = gapMs - (Date.now() - offlineAt);
  if (remaining > 0) await sleep(remaining);
  await ipBatch(topo.client.ns, joinLines(target));
  const onlineAt = Date.now();
  const resolverChanged = from === null || topo.networks[from].resolver !== target.resolver;
  const resolv = clientResolvConfPath(topo);
  if (resolverChanged && existsSync(resolv)) writeFileSync(resolv, resolvConf(target));
  return { from, to, gapMs, offlineAt, onlineAt, resolverChanged };
}

/** The mobile network's resolver on its router: the same answers as the lab's DNS, at another address. */
export async function startMobileDns(topo: LabTopology, labDir: string): Promise<number> {
  const dir = join(labDir, "mobile-dns");
  mkdirSync(dir, { recursive: true });
  const conf = join(dir, "dnsmasq.conf");
  const stdout = join(labDir, "logs", "mobile-dnsmasq.stdout");
  writeFileSync(conf, dnsmasqConf(topo, join(labDir, "logs", "mobile-dnsmasq.log"), topo.networks.mobile.resolver));
  const pid = spawnDaemon(
    inNs(topo.mobileRouter.ns, ["dnsmasq", "--keep-in-foreground", `--conf-file=${conf}`, "--pid-file="]),
    { logFile: stdout },
  );
  await waitFor(
    "the mobile network's dnsmasq to listen",
    async () => {
      if (!isAlive(pid))
        throw new Error(`the mobile network's dnsmasq exited during start-up:\n${readIfExists(stdout).slice(-2000)}`);
      const r = await run("ip", ["netns", "exec", topo.mobileRouter.ns, "ss", "-Hlun", "sport = :53"]);
      return r.stdout.trim() !== "";
    },
    { timeoutMs: DNSMASQ_READY_TIMEOUT_MS },
  );
  return pid;
}

/** How the client namespace was frozen, and what to undo. */
export interface Frozen {
  method: "cgroup" | "sigstop";
  /** The cgroup v2 folder the client's processes were placed in (method "cgroup"). */
  cgroup?: string;
  /** Every PID frozen (for "sigstop", the ones to SIGCONT). */
  pids: number[];
  /** Epoch ms at which the namespace was frozen. */
  at: number;
}

/** The cgroup v2 mount point, from this process's mount table; null without one. */
export function cgroup2Root(mountinfo: string = readIfExists("/proc/self/mountinfo")): string | null {
  for (const line of mountinfo.split("\n")) {
    const [left, right] = line.split(" - ");
    if (left === undefined || right === undefined) continue;
    if (right.split(" ")[0] !== "cgroup2") continue;
    const mountPoint = left.split(" ")[4];
    if (mountPoint !== undefined) return mountPoint;
  }
  return null;
}

/** The lab's cgroup for the client namespace's processes, under the cgroup v2 mount; null without cgroup v2. */
export function clientCgroup(topo: LabTopology, root: string | null = cgroup2Root()): string | null {
  return root === null ? null : join(root, `${topo.prefix}client`);
}

function cgroupProcs(dir: string): Set<number> {
  return new Set(
    readIfExists(join(dir, "cgroup.procs"))
      .split("\n")
      .filter((l) => /^\d+$/.test(l))
      .map(Number),
  );
}

function cgroupFrozen(dir: string): boolean {
  return /^frozen 1$/m.test(readIfExists(join(dir, "cgroup.events")));
}

/** Makes the lab's cgroup, or returns null where cgroup v2 cannot be used (no mount, read-only, no freezer). */
function makeClientCgroup(topo: LabTopology): string | null {
  const dir = clientCgroup(topo);
  if (dir === null) return null;
  try {
    mkdirSync(dir, { recursive: false });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") return null;
  }
  return existsSync(join(dir, "cgroup.freeze")) ? dir : null;
}

/**
 * Freezes every process of the client namespace: placed in the lab's cgroup and frozen there (a process that
 * forks later stays frozen with its children), or, without cgroup v2, stopped with SIGSTOP by PID. Rounds catch
 * processes started meanwhile.
 */
export async function freezeClient(topo: LabTopology): Promise<Frozen> {
  const at = Date.now();
  const dir = makeClientCgroup(topo);
  const seen = new Set<number>();
  for (let round = 0; round < FREEZE_ROUNDS; round++) {
    const fresh = (await namespacePids(topo.client.ns)).filter((p) => !seen.has(p));
    if (round > 0 && fresh.length === 0) break;
    for (const pid of fresh) {
      seen.add(pid);
      if (dir !== null) {
        try {
          // A process placed in a frozen cgroup freezes at once.
          writeFileSync(join(dir, "cgroup.procs"), String(pid));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ESRCH")
            throw new Error(`could not place pid ${String(pid)} in ${dir}: ${(e as Error).message}`);
        }
      } else {
        try {
          process.kill(pid, "SIGSTOP");
        } catch {
          // gone already
        }
      }
    }
    if (round === 0 && dir !== null) writeFileSync(join(dir, "cgroup.freeze"), "1");
  }
  if (dir !== null) {
    await waitFor("the client's cgroup to report frozen", () => cgroupFrozen(dir), {
      timeoutMs: FREEZE_SETTLE_TIMEOUT_MS,
      intervalMs: 10,
    });
    return { method: "cgroup", cgroup: dir, pids: [...cgroupProcs(dir)], at };
  }
  return { method: "sigstop", pids: [...seen], at };
}

/** Thaws what freezeClient froze. */
export async function thawClient(frozen: Frozen): Promise<void> {
  if (frozen.method === "cgroup" && frozen.cgroup !== undefined) {
    const dir = frozen.cgroup;
    if (!existsSync(dir)) return;
    writeFileSync(join(dir, "cgroup.freeze"), "0");
    await waitFor("the client's cgroup to thaw", () => !cgroupFrozen(dir), {
      timeoutMs: FREEZE_SETTLE_TIMEOUT_MS,
      intervalMs: 10,
    });
    return;
  }
  for (const pid of frozen.pids) {
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // gone already
    }
  }
}

/** Whether a process is stopped or frozen (state "T" or in a frozen cgroup); false if it is gone. */
export function isFrozen(pid: number, frozen: Frozen | null): boolean {
  if (!isAlive(pid)) return false;
  if (frozen?.method === "cgroup" && frozen.cgroup !== undefined)
    return cgroupProcs(frozen.cgroup).has(pid) && cgroupFrozen(frozen.cgroup);
  return /^State:\s+T/m.test(readIfExists(`/proc/${String(pid)}/status`));
}

/**
 * For `lab down`: thaws the lab's cgroup and sends SIGCONT to every process of the client namespace, so that they
 * can take the orderly SIGTERM that follows (a frozen process only dies of SIGKILL).
 */
export async function thawForTeardown(topo: LabTopology): Promise<void> {
  const dir = clientCgroup(topo);
  if (dir !== null && existsSync(join(dir, "cgroup.freeze"))) writeFileSync(join(dir, "cgroup.freeze"), "0");
  for (const pid of await namespacePids(topo.client.ns)) {
    try {
      process.kill(pid, "SIGCONT");
    } catch {
      // gone already
    }
  }
}

/** For `lab down`, after every process is gone: removes the lab's cgroup. Returns what it removed. */
export async function removeClientCgroup(topo: LabTopology): Promise<string[]> {
  const dir = clientCgroup(topo);
  if (dir === null || !existsSync(dir)) return [];
  await waitFor(`${dir} to empty`, () => cgroupProcs(dir).size === 0, {
    timeoutMs: CGROUP_EMPTY_TIMEOUT_MS,
    intervalMs: 20,
  });
  rmdirSync(dir);
  return [dir];
}

/** The lab's cgroup if it still exists (for `leftovers`). */
export function cgroupLeftovers(topo: LabTopology): string[] {
  const dir = clientCgroup(topo);
  return dir !== null && existsSync(dir) ? [`cgroup ${dir}`] : [];
}

/** Which network the client namespace is on, read from its links (the truth, whatever the state file says). */
export async function currentNetwork(topo: LabTopology): Promise<NetworkName | null> {
  for (const n of NETWORK_NAMES) {
    const net = topo.networks[n];
    const r = await run("ip", ["-n", topo.client.ns, "-4", "-o", "addr", "show", "dev", net.ifname]);
    if (r.code === 0 && r.stdout.includes(` ${net.address}/`)) return n;
  }
  return null;
}

/** Reads the client namespace's resolv.conf (as processes inside it see it). */
export function clientResolvConf(topo: LabTopology): string {
  const p = clientResolvConfPath(topo);
  return existsSync(p) ? readFileSync(p, "utf8") : "";
}

/** A ping from the client namespace to `address` every 50 ms (through whatever tunnel routes it): its replies' epoch ms. */
export interface PingStream {
  replies: number[];
  child: ChildProcess;
  stop: () => void;
}

export function pingStream(topo: LabTopology, address: string): PingStream {
  const replies: number[] = [];
  const child = spawn("ip", ["netns", "exec", topo.client.ns, "ping", "-n", "-i", "0.05", "-W", "1", address], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let buf = "";
  child.stdout.on("data", (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split("\n");
    buf = lines.pop() ?? "";
    for (const l of lines) if (/bytes from/.test(l)) replies.push(Date.now());
  });
  return {
    replies,
    child,
    stop: () => {
      if (child.exitCode === null) child.kill("SIGTERM");
    },
  };
}

/** The first reply (epoch ms) after `since`, waiting at most `limitMs` from `since`; null if none came. */
export function firstReplyAfter(replies: readonly number[], since: number, limitMs: number): Promise<number | null> {
  return new Promise((resolve) => {
    const tick = setInterval(() => {
      const r = replies.find((x) => x > since);
      if (r !== undefined || Date.now() - since > limitMs) {
        clearInterval(tick);
        resolve(r ?? null);
      }
    }, 20);
  });
}
