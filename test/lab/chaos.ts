/**
 * The chaos soak: detourd in the lab under a seeded schedule of faults (chaos-schedule.ts) while a probe stream
 * runs through the tunnel to corp and the router counts every packet to corp that leaves the client outside a
 * tunnel. Watches the invariants while it runs and compares the client namespace before and after. Used by
 * `npm run bench -- chaos` and by the 3-minute lab test; everything it starts it stops, also when aborted.
 *
 * The lab is built with distance "none": the soak judges correctness (leaks, debris, invariants), not latency, and
 * the distance delayqs would add a userspace packet hop per gateway that competes for the 2 cores with detourd,
 * the engines and the delay bursts the schedule itself injects.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { KILLSWITCH_TABLE } from "../../native/platform/firewall.linux.ts";
import { agentLogs, agentPaths, agentStart, agentStop } from "./agent.ts";
import { daemonBundle } from "./daemon-bundle.ts";
import {
  connectedButDead,
  connectedShare,
  diffSnapshots,
  edgeMedians,
  healthyGateways,
  mergeIntervals,
  owedStretches,
  RECOVERY_GRACE_MS,
  statusSilences,
  type Interval,
  type OwedStretch,
  type ShareReport,
  type StatusSample,
  type Violation,
} from "./chaos-metrics.ts";
import {
  describeFault,
  formatSchedule,
  planSchedule,
  type BlockedProto,
  type Fault,
  type GatewayTarget,
  type ScheduledFault,
} from "./chaos-schedule.ts";
import { isAlive, processTree, run } from "./exec.ts";
import * as lab from "./lab.ts";
import { armLeakWitness, checkLeakWitness, leakedToRouter } from "./leak-witness.ts";
import { ProbeClient } from "./probe-client.ts";
import { CORP_ECHO_PORT, GATEWAY_NAMES, type GatewayName, type LabTopology } from "./topology.ts";
import type { Status } from "./wait-status.ts";

/** Status is polled this often: a failover takes about a second, so 250 ms resolves it without flooding the socket. */
const STATUS_POLL_MS = 250;
/** A status answer slower than this counts as unanswered (a healthy detourd answers in milliseconds). */
const STATUS_TIMEOUT_MS = 2_000;
/** The leak counter, the kill switch table, resolv.conf and the engines are checked this often. */
const CHECK_MS = 1_000;
/** RSS is sampled this often; it moves slowly. */
const RSS_SAMPLE_MS = 5_000;
/** Two failover records this close (same daemon, same leg) are one record read twice. */
const SAME_INSTANT_MS = 50;
/** RSS is first read this long after a daemon starts: V8 is still warming up before (compiling, first allocations). */
const RSS_WARMUP_MS = 30_000;
/** The probe stream: 20/s resolves an outage to 50 ms; each call lasts 5 s so gaps are read while the soak runs. */
const PROBE_RATE = 20;
const PROBE_WINDOW_MS = 5_000;
/** The threat model: detourd notices a flushed firewall "within a second"; one check period is added for polling. */
const KILLSWITCH_RESTORE_LIMIT_MS = 2_000;
/** A resolv.conf overwritten while connected must be detourd's again within this (same promise as the firewall). */
const RESOLV_RESTORE_LIMIT_MS = 2_000;
/** An engine outside detourd's process tree for longer than this is an orphan (a restart reclaims within it). */
const ORPHAN_LIMIT_MS = 10_000;
/** The first connect, and the connect after the soak heals the lab, on a loaded 2-core machine. */
const CONNECT_WITHIN_MS = 30_000;
const DISCONNECT_WITHIN_MS = 10_000;
/** A restarted detourd that cannot start is tried this many times before the soak gives up. */
const RESTART_TRIES = 3;
/** detourd loads through tsx (about a second, more on a loaded box) before it answers on its socket. */
const RESTART_ANSWER_WITHIN_MS = 20_000;
/** Heap figures are compared as medians over this many readings at each end of an instance's life (half a minute). */
const HEAP_MEDIAN_READINGS = 6;
const ENGINE_COMMANDS = ["wireguard-go", "charon-systemd", "openconnect"];

export interface ChaosOptions {
  id: string;
  durationMs: number;
  seed: number;
  signal?: AbortSignal;
  log?: (line: string) => void;
  /** Where detourd's log is copied before the lab goes down. */
  artifactsDir?: string;
  /** Leaves the schedule's detourd SIGKILLs out, so one instance lives for the whole run (its memory over time). */
  noDaemonKills?: boolean;
}

export interface FiredFault {
  atMs: number;
  what: string;
  note: string;
  /** How long the action took: a restore counts as healthy only once it returned (engines answering). */
  tookMs?: number;
}

/** Actions quicker than this are shown without their duration. */
const SHOW_TOOK_FROM_MS = 100;

/** One fired action as the report names it, with its duration when that matters (when did the gateway come back). */
function firedText(f: FiredFault): string {
  const took = (f.tookMs ?? 0) >= SHOW_TOOK_FROM_MS ? ` (done after ${((f.tookMs ?? 0) / 1000).toFixed(1)} s)` : "";
  return `${f.what}: ${f.note}${took}`;
}

export interface InstanceRss {
  pid: number;
  firstKiB: number;
  lastKiB: number;
  maxKiB: number;
  spanMs: number;
  /** V8's heap in use, from status (daemon.memory), at the first and last RSS reading; null if status lacked it. */
  heapFirstKiB: number | null;
  heapLastKiB: number | null;
  externalLastKiB: number | null;
  arrayBuffersLastKiB: number | null;
  /** Every reading, for a plot: seconds since the first reading, RSS and heap in KiB. */
  series: { s: number; rssKiB: number; heapKiB: number | null }[];
}

export interface ChaosReport {
  seed: number;
  /** The soak's t+0 (epoch ms): the absolute instants in the report (stretches, violations) count from it. */
  startedAt: number;
  durationMs: number;
  interrupted: boolean;
  schedule: ScheduledFault[];
  fired: FiredFault[];
  share: ShareReport;
  /** Every owed stretch not connected, largest first, with what explains it. */
  stretches: OwedStretch[];
  /** detourd ran from the esbuild bundle (the shipped form) rather than through tsx. */
  bundled: boolean;
  noDaemonKills: boolean;
  /** connected / healthy, and connected / owed (outside the recovery grace), in percent. */
  connectedPct: number;
  connectedOwedPct: number;
  leaked: number;
  failovers: number;
  failoversGoal: number;
  violations: Violation[];
  leftovers: string[];
  rss: InstanceRss[];
  restarts: number;
  maxEngines: number;
  killSwitchRestoreMs: number[];
  probes: { sent: number; received: number };
  markdown: string;
}

type Snapshot = Record<string, string[]>;

async function out(argv: string[]): Promise<string> {
  const [file, ...args] = argv;
  const r = await run(file ?? "true", args, { timeoutMs: 10_000 });
  return r.code === 0 ? r.stdout : `(${argv.join(" ")} failed: ${r.stderr.trim()})`;
}

function lines(text: string): string[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim();
  } catch {
    return "";
  }
}

async function nsPids(ns: string): Promise<number[]> {
  // `ip netns pids` may list a process once per namespace reference it finds: each pid counts once.
  return [...new Set(lines(await out(["ip", "netns", "pids", ns])).map(Number))].filter(
    (p) => Number.isInteger(p) && isAlive(p),
  );
}

/** What a stray leftover looks like in the client namespace: processes, links, addresses, rules, routes, nft, DNS. */
async function snapshot(topo: LabTopology, id: string, ownPid: number): Promise<Snapshot> {
  const ns = topo.client.ns;
  const ip = (args: string[]): Promise<string> => out(["ip", "-n", ns, ...args]);
  // The probe agent (and tsx's esbuild under it) is the soak's own: left out.
  const own = new Set(ownPid > 0 ? processTree(ownPid) : []);
  const procs = (await nsPids(ns))
    .filter((p) => !own.has(p))
    .map((p) => cmdline(p))
    .filter((c) => c !== "");
  const resolv = `/etc/netns/${ns}/resolv.conf`;
  const stateDir = join(lab.labDirOf(id), "detourd-state");
  return {
    processes: procs.sort(),
    links: lines(await ip(["-br", "link"])).map((l) => l.replace(/\s+/g, " ")),
    addresses: lines(await ip(["-br", "addr"])).map((l) => l.replace(/\s+/g, " ")),
    rules: [...lines(await ip(["-4", "rule"])), ...lines(await ip(["-6", "rule"]))],
    routes: [
      ...lines(await ip(["-4", "route", "show", "table", "all"])),
      ...lines(await ip(["-6", "route", "show", "table", "all"])),
    ],
    nft: lines(await out(["ip", "netns", "exec", ns, "nft", "list", "ruleset"])),
    "resolv.conf": existsSync(resolv) ? lines(readFileSync(resolv, "utf8")) : ["(none)"],
    "wireguard sockets": (existsSync("/run/wireguard") ? readdirSync("/run/wireguard") : []).filter((f) =>
      f.startsWith(`d${id}-`),
    ),
    "state files": existsSync(join(stateDir, "resolv.conf.orig")) ? ["resolv.conf.orig"] : [],
  };
}

/** The router's leak count, NaN when it cannot be read (a check skips a reading it could not take). */
async function leakCount(topo: LabTopology): Promise<number> {
  return leakedToRouter(topo).catch(() => NaN);
}

function rssKiB(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}

/** Resolves false instead of throwing when the soak is aborted. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  try {
    await sleep(Math.max(0, ms), undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

/** The faults in force, kept as the runner applies them (the health model reads it). */
class FaultBook {
  readonly killed = new Map<GatewayName, number>();
  readonly flapped = new Set<GatewayName>();
  readonly blocks = new Map<string, { target: "client" | GatewayName; proto: BlockedProto }>();
  readonly losses = new Map<string, { target: "client" | GatewayName; percent: number }>();

  healthy(): GatewayName[] {
    const down = new Set<GatewayName>([...this.killed.keys(), ...this.flapped]);
    return healthyGateways({ down, blocks: [...this.blocks.values()], losses: [...this.losses.values()] });
  }

  describe(): string {
    const parts = [
      ...[...this.killed.keys()].map((g) => `${g} killed`),
      ...[...this.flapped].map((g) => `${g} flapped off`),
      ...[...this.blocks.values()].map((b) => `${b.proto} blocked at ${b.target}`),
      ...[...this.losses.values()].map((l) => `${l.percent}% loss at ${l.target}`),
    ];
    return parts.length === 0 ? "no fault in force" : parts.join(", ");
  }
}

interface RssTrack {
  first: number;
  last: number;
  max: number;
  firstAt: number;
  lastAt: number;
  heapFirst: number | null;
  heapLast: number | null;
  externalLast: number | null;
  arrayBuffersLast: number | null;
  series: { s: number; rssKiB: number; heapKiB: number | null }[];
}

/** One memory reading: RSS from /proc (the kernel's view), the rest from detourd's status when it is this pid's. */
function trackRss(tracks: Map<number, RssTrack>, pid: number, kib: number, st: Status | null, now: number): void {
  const mem = st !== null && st.daemon.pid === pid ? st.daemon.memory : undefined;
  const k = (b: number | undefined): number | null => (b === undefined ? null : Math.round(b / 1024));
  const heap = k(mem?.heapUsed);
  const r = tracks.get(pid);
  if (r === undefined) {
    tracks.set(pid, {
      first: kib,
      last: kib,
      max: kib,
      firstAt: now,
      lastAt: now,
      heapFirst: heap,
      heapLast: heap,
      externalLast: k(mem?.external),
      arrayBuffersLast: k(mem?.arrayBuffers),
      series: [{ s: 0, rssKiB: kib, heapKiB: heap }],
    });
    return;
  }
  Object.assign(r, {
    last: kib,
    max: Math.max(r.max, kib),
    lastAt: now,
    heapFirst: r.heapFirst ?? heap,
    heapLast: heap ?? r.heapLast,
    externalLast: k(mem?.external) ?? r.externalLast,
    arrayBuffersLast: k(mem?.arrayBuffers) ?? r.arrayBuffersLast,
  });
  r.series.push({ s: Math.round((now - r.firstAt) / 1000), rssKiB: kib, heapKiB: heap });
}

class Soak {
  readonly topo: LabTopology;
  readonly book = new FaultBook();
  readonly samples: StatusSample[] = [];
  readonly dead: Interval[] = [];
  readonly violations: Violation[] = [];
  readonly fired: FiredFault[] = [];
  readonly faultTimes: number[] = [];
  /** Failover records seen, per daemon; status re-reads the wall-clock offset, so an instant may move by a millisecond. */
  readonly failovers: { pid: number; from: string; detectedAt: number }[] = [];
  readonly rss = new Map<number, RssTrack>();
  readonly killSwitchRestoreMs: number[] = [];
  readonly probes = { sent: 0, received: 0 };
  t0 = Date.now();
  pid = 0;
  pidSince = 0;
  daemonDown = false;
  restarts = 0;
  maxEngines = 0;
  last: Status | null = null;
  #ctl: ControlClient | null = null;
  #restarting: Promise<void> | null = null;
  /** Set after RESTART_TRIES failed restarts in a row: the soak then runs on without a daemon and says so. */
  gaveUp = false;
  #reportedDeaths = new Set<number>();

  constructor(
    readonly opts: ChaosOptions,
    readonly probe: ProbeClient,
    /** detourd's bundle (detourd.mjs), or undefined to run it through tsx. */
    readonly bundle: string | undefined,
  ) {
    this.topo = lab.topologyOf(opts.id);
  }

  log(line: string): void {
    this.opts.log?.(`[chaos t+${((Date.now() - this.t0) / 1000).toFixed(1)} s] ${line}`);
  }

  violate(kind: string, detail: string, at = Date.now()): void {
    const v = { at, kind, detail: `${detail} (faults: ${this.book.describe()})` };
    this.violations.push(v);
    this.log(`VIOLATION ${kind}: ${v.detail}`);
  }

  get socket(): string {
    return agentPaths(this.opts.id).socket;
  }

  async status(): Promise<Status | null> {
    if (this.daemonDown) return null;
    try {
      this.#ctl ??= await ControlClient.connect(this.socket, {
        timeoutMs: STATUS_TIMEOUT_MS,
        requestTimeoutMs: STATUS_TIMEOUT_MS,
      });
      return await this.#ctl.status();
    } catch {
      this.#ctl?.close();
      this.#ctl = null;
      return null;
    }
  }

  dropControl(): void {
    this.#ctl?.close();
    this.#ctl = null;
  }

  /** Asks the (new) daemon to connect, as the app does after a restart; bounded by the client's own timeouts. */
  async askConnect(): Promise<void> {
    const c = await ControlClient.connect(this.socket, { timeoutMs: 5_000, requestTimeoutMs: 15_000 });
    try {
      await c.connect();
    } finally {
      c.close();
    }
  }

  /** Starts detourd again in the same work folder (what a service manager does after a crash) and connects. */
  restart(why: string): Promise<void> {
    this.#restarting ??= (async () => {
      this.daemonDown = true;
      this.dropControl();
      try {
        for (let i = 1; i <= RESTART_TRIES && !this.gaveUp; i++) {
          let failure: string;
          try {
            const a = await agentStart(this.opts.id, { keepWorkDir: true, bundle: this.bundle });
            this.pid = a.pid;
            this.pidSince = Date.now();
            this.restarts++;
            failure = await this.connectWhenAnswering(a.pid);
            if (failure === "") {
              this.log(`detourd restarted (${why}) as pid ${a.pid}`);
              return;
            }
          } catch (e) {
            failure = String(e);
          }
          this.violate(
            "restart-failed",
            `detourd restart ${i}/${RESTART_TRIES} after ${why} failed: ${failure}; log tail: ${agentLogs(this.opts.id, 5).slice(-600)}`,
          );
          await agentStop(this.opts.id).catch(() => undefined);
          await sleep(1_000);
        }
        this.gaveUp = true;
        this.violate(
          "restart-gave-up",
          `detourd could not be restarted ${RESTART_TRIES} times in a row; the soak stops restarting it`,
        );
      } finally {
        this.daemonDown = false;
        this.#restarting = null;
      }
    })();
    return this.#restarting;
  }

  /**
   * agentStart returns once the socket file exists, and a SIGKILLed detourd leaves its socket file behind: so
   * connect is asked until the new daemon answers (bounded). Returns "" on success, else why it failed.
   */
  async connectWhenAnswering(pid: number): Promise<string> {
    const until = Date.now() + RESTART_ANSWER_WITHIN_MS;
    let last = "no attempt";
    for (let k = 0; k < RESTART_ANSWER_WITHIN_MS / 200 && Date.now() < until; k++) {
      if (!isAlive(pid)) return `pid ${pid} exited during start-up (${last})`;
      try {
        await this.askConnect();
        return "";
      } catch (e) {
        last = String(e);
        await sleep(200);
      }
    }
    return `no answer within ${RESTART_ANSWER_WITHIN_MS} ms (${last})`;
  }

  async monitor(signal: AbortSignal): Promise<void> {
    const bound = Math.ceil((this.opts.durationMs + 10 * 60_000) / STATUS_POLL_MS);
    for (let i = 0; i < bound && !signal.aborted; i++) {
      const expectedDown = this.daemonDown;
      const s = await this.status();
      const healthy = this.book.healthy();
      this.samples.push({
        at: Date.now(),
        answered: s !== null,
        state: s?.state ?? null,
        gateway: s?.gateway ?? null,
        anyHealthy: healthy.length > 0,
        healthy,
        summary: s?.summary ?? null,
        expectedDown: expectedDown || this.daemonDown,
      });
      if (s !== null) {
        this.last = s;
        const f = s.lastFailover;
        if (f !== null) {
          const from = `${f.from.gateway}/${f.from.kind}`;
          const seen = this.failovers.some(
            (x) => x.pid === s.daemon.pid && x.from === from && Math.abs(x.detectedAt - f.detectedAt) < SAME_INSTANT_MS,
          );
          if (!seen) {
            this.failovers.push({ pid: s.daemon.pid, from, detectedAt: f.detectedAt });
            this.log(
              `failover ${f.from.gateway}/${f.from.kind} -> ${f.to === null ? "none" : `${f.to.gateway}/${f.to.kind}`} via ${f.via} (${f.reason})`,
            );
          }
        }
      }
      if (
        !this.daemonDown &&
        !this.gaveUp &&
        this.pid > 0 &&
        !isAlive(this.pid) &&
        !this.#reportedDeaths.has(this.pid)
      ) {
        this.#reportedDeaths.add(this.pid);
        this.violate("detourd-exited", `detourd (pid ${this.pid}) exited on its own`);
        void this.restart("it exited on its own");
      }
      if (!(await pause(STATUS_POLL_MS, signal))) break;
    }
  }

  async probeLoop(signal: AbortSignal): Promise<void> {
    const bound = Math.ceil((this.opts.durationMs + 10 * 60_000) / PROBE_WINDOW_MS);
    for (let i = 0; i < bound && !signal.aborted; i++) {
      const started = Date.now();
      try {
        const r = await this.probe.stream({
          host: this.topo.corp.address,
          port: CORP_ECHO_PORT,
          ratePerSec: PROBE_RATE,
          durationMs: PROBE_WINDOW_MS,
          signal,
        });
        if (r.ok) {
          this.probes.sent += r.sent;
          this.probes.received += r.received;
          for (const g of r.gaps) this.dead.push({ from: g.fromAt, to: g.toAt ?? r.endedAt });
        } else {
          this.dead.push({ from: started, to: Date.now() });
          this.log(`probe stream failed: ${r.error}`);
        }
      } catch (e) {
        this.dead.push({ from: started, to: Date.now() });
        this.log(`probe stream failed: ${String(e)}`);
        if (!(await pause(500, signal))) break;
      }
    }
  }

  async checks(signal: AbortSignal, leakBase: number): Promise<void> {
    let leaks = leakBase;
    let ksMissingSince: number | null = null;
    let ksFlushedAt: number | null = null;
    let resolvForeignSince: number | null = null;
    let resolvReported = false;
    let ksReported = false;
    const orphanSince = new Map<number, number>();
    const orphanReported = new Set<number>();
    let lastRss = 0;
    const resolvPath = `/etc/netns/${this.topo.client.ns}/resolv.conf`;
    const bound = Math.ceil((this.opts.durationMs + 10 * 60_000) / CHECK_MS);
    for (let i = 0; i < bound && !signal.aborted; i++) {
      const now = Date.now();
      const state = this.last?.state ?? null;
      const n = await leakCount(this.topo);
      if (Number.isFinite(n) && n > leaks) {
        this.violate(
          "leak",
          `${n - leaks} packet(s) to corp left the client outside a tunnel; detourd ${this.daemonDown ? "down (soak restart)" : `state ${String(state)}`}`,
        );
        leaks = n;
      }
      // The kill switch: the table must be there whenever detourd manages a connection.
      const managed = !this.daemonDown && state !== null && state !== "disconnected";
      const ks = await run(
        "ip",
        ["netns", "exec", this.topo.client.ns, "nft", "list", "table", "inet", KILLSWITCH_TABLE],
        {
          timeoutMs: 5_000,
        },
      );
      if (ks.code === 0) {
        if (ksFlushedAt !== null) {
          this.killSwitchRestoreMs.push(now - ksFlushedAt);
          this.log(`kill switch table back ${now - ksFlushedAt} ms after the flush`);
          ksFlushedAt = null;
        }
        ksMissingSince = null;
        ksReported = false;
      } else if (managed) {
        ksMissingSince ??= now;
        if (!ksReported && now - ksMissingSince > KILLSWITCH_RESTORE_LIMIT_MS) {
          ksReported = true;
          this.violate(
            "kill-switch-missing",
            `detourd's nft table ${KILLSWITCH_TABLE} missing for ${now - ksMissingSince} ms while ${state}`,
            ksMissingSince,
          );
        }
      }
      if (this.flushedAt !== null) {
        ksFlushedAt ??= this.flushedAt;
        this.flushedAt = null;
      }
      // resolv.conf: while connected it is detourd's (the lab's gateways push corp's resolver).
      const resolv = existsSync(resolvPath) ? readFileSync(resolvPath, "utf8") : "";
      if (!this.daemonDown && state === "connected" && this.resolvExpected && !resolv.includes("detourd")) {
        resolvForeignSince ??= now;
        if (!resolvReported && now - resolvForeignSince > RESOLV_RESTORE_LIMIT_MS) {
          resolvReported = true;
          this.violate(
            "resolv-conf-not-restored",
            `resolv.conf is not detourd's ${now - resolvForeignSince} ms into a connected stretch: ${JSON.stringify(resolv.slice(0, 120))}`,
            resolvForeignSince,
          );
        }
      } else {
        resolvForeignSince = null;
        resolvReported = false;
      }
      // Engines outside detourd's process tree.
      const tree = new Set(this.daemonDown || this.pid === 0 ? [] : processTree(this.pid));
      const engines = (await nsPids(this.topo.client.ns)).filter((p) =>
        ENGINE_COMMANDS.some((c) => cmdline(p).includes(c)),
      );
      this.maxEngines = Math.max(this.maxEngines, engines.length);
      for (const p of engines) {
        if (tree.has(p) || this.daemonDown) {
          orphanSince.delete(p);
          continue;
        }
        orphanSince.set(p, orphanSince.get(p) ?? now);
        if (!orphanReported.has(p) && now - (orphanSince.get(p) ?? now) > ORPHAN_LIMIT_MS) {
          orphanReported.add(p);
          this.violate(
            "orphan-engine",
            `engine pid ${p} outside detourd's tree for ${ORPHAN_LIMIT_MS} ms+: ${cmdline(p).slice(0, 160)}`,
          );
        }
      }
      if (
        now - lastRss >= RSS_SAMPLE_MS &&
        !this.daemonDown &&
        this.pid > 0 &&
        state === "connected" &&
        now - this.pidSince >= RSS_WARMUP_MS
      ) {
        lastRss = now;
        const kib = rssKiB(this.pid);
        if (kib !== null) trackRss(this.rss, this.pid, kib, this.last, now);
      }
      if (!(await pause(CHECK_MS - (Date.now() - now), signal))) break;
    }
  }

  flushedAt: number | null = null;
  resolvExpected = false;
  originalResolvConf = "";

  resolve(t: GatewayTarget): GatewayName {
    if (t !== "active") return t;
    const g = this.last?.gateway;
    return GATEWAY_NAMES.find((n) => n === g) ?? "gw1";
  }

  /** Runs one scheduled fault; timed faults push their end (and a flap its toggles) on the queue. */
  async fire(f: Fault, queue: { at: number; label: string; run: () => Promise<string> }[]): Promise<string> {
    const id = this.opts.id;
    const push = (inMs: number, label: string, run: () => Promise<string>): void => {
      queue.push({ at: Date.now() + inMs, label, run });
      queue.sort((a, b) => a.at - b.at);
    };
    switch (f.kind) {
      case "kill-gateway": {
        const g = this.resolve(f.gateway);
        const n = this.book.killed.get(g) ?? 0;
        this.book.killed.set(g, n + 1);
        if (n === 0) await lab.kill(g, "all", id);
        push(f.forMs, `restore ${g}`, async () => {
          const left = (this.book.killed.get(g) ?? 1) - 1;
          if (left > 0) {
            this.book.killed.set(g, left);
            return `${g} stays down (another kill holds it)`;
          }
          await lab.restore(g, "all", id);
          this.book.killed.delete(g);
          return `${g} restored`;
        });
        return `${g} powered off`;
      }
      case "block-protocol":
      case "loss-burst":
      case "delay-burst": {
        const target = f.target === "client" ? "client" : this.resolve(f.target);
        const imp =
          f.kind === "block-protocol"
            ? await lab.impair({ kind: "block", target, proto: f.proto, dir: "both" }, id)
            : f.kind === "loss-burst"
              ? await lab.impair({ kind: "loss", target, proto: "all", dir: "both", percent: f.percent }, id)
              : await lab.impair(
                  { kind: "delay", target, proto: "all", dir: "both", delayMs: f.delayMs, jitterMs: f.jitterMs },
                  id,
                );
        if (f.kind === "block-protocol") this.book.blocks.set(imp.id, { target, proto: f.proto });
        if (f.kind === "loss-burst") this.book.losses.set(imp.id, { target, percent: f.percent });
        push(f.forMs, `lift ${imp.id}`, async () => {
          await lab.lift(imp.id, id);
          this.book.blocks.delete(imp.id);
          this.book.losses.delete(imp.id);
          return `${f.kind} at ${target} lifted`;
        });
        return `at ${target}`;
      }
      case "flap-gateway": {
        const g = this.resolve(f.gateway);
        const half = Math.max(500, Math.round(f.periodMs / 2));
        const toggles = Math.max(2, Math.floor(f.forMs / half));
        let current: string | null = null;
        const toggle = async (on: boolean): Promise<string> => {
          if (on && current === null) {
            current = (await lab.impair({ kind: "block", target: g, proto: "all", dir: "both" }, id)).id;
            this.book.flapped.add(g);
            this.faultTimes.push(Date.now());
          } else if (!on && current !== null) {
            await lab.lift(current, id);
            current = null;
            this.book.flapped.delete(g);
          }
          return `${g} link ${on ? "cut" : "back"}`;
        };
        await toggle(true);
        for (let k = 1; k < toggles; k++) push(k * half, `flap ${g}`, () => toggle(k % 2 === 0));
        push(toggles * half, `flap ${g} ends`, () => toggle(false));
        return `${g} link cut (${toggles} toggles, ${half} ms apart)`;
      }
      case "kill-engine": {
        const tree = new Set(this.pid > 0 ? processTree(this.pid) : []);
        const engines = (await nsPids(this.topo.client.ns))
          .filter((p) => tree.has(p) && ENGINE_COMMANDS.some((c) => cmdline(p).includes(c)))
          .sort((a, b) => a - b);
        const p = engines[Math.min(engines.length - 1, Math.floor(f.pick * engines.length))];
        if (p === undefined) return "no engine running";
        const what = cmdline(p).slice(0, 100);
        process.kill(p, "SIGKILL");
        return `SIGKILLed pid ${p} (${what})`;
      }
      case "kill-detourd": {
        const old = this.pid;
        this.daemonDown = true;
        this.dropControl();
        if (old > 0 && isAlive(old)) process.kill(old, "SIGKILL");
        for (let i = 0; i < 100 && old > 0 && isAlive(old); i++) await sleep(20);
        await sleep(f.downMs);
        await this.restart("the soak's SIGKILL");
        return `pid ${old} SIGKILLed, restarted as ${this.pid}`;
      }
      case "flush-firewall": {
        await run("ip", ["netns", "exec", this.topo.client.ns, "nft", "flush", "ruleset"], { timeoutMs: 5_000 });
        // Timed here, every 20 ms, for the figure (the 1 s checks only catch a table that stays away).
        const t0 = Date.now();
        for (let i = 0; i < 150 && Date.now() - t0 < 3_000; i++) {
          const back = await run(
            "ip",
            ["netns", "exec", this.topo.client.ns, "nft", "list", "table", "inet", KILLSWITCH_TABLE],
            { timeoutMs: 5_000 },
          );
          if (back.code === 0) {
            const ms = Date.now() - t0;
            this.killSwitchRestoreMs.push(ms);
            return `nft ruleset flushed; detourd's table back after ${ms} ms`;
          }
          await sleep(20);
        }
        this.flushedAt = t0;
        return "nft ruleset flushed; detourd's table not back within 3 s";
      }
      case "overwrite-resolv-conf": {
        const path = `/etc/netns/${this.topo.client.ns}/resolv.conf`;
        // In place, as a network manager writing the file does, with the network's own settings (the text it had
        // before detourd first started), so the end-of-run comparison does not depend on which copy detourd keeps.
        writeFileSync(path, this.originalResolvConf);
        return "resolv.conf overwritten";
      }
    }
  }

  async execute(schedule: readonly ScheduledFault[], signal: AbortSignal): Promise<void> {
    const queue = schedule.map((s) => ({
      at: this.t0 + s.atMs,
      label: describeFault(s.fault),
      run: async (): Promise<string> => {
        this.faultTimes.push(Date.now());
        return this.fire(s.fault, queue);
      },
    }));
    // Bounded: each schedule entry adds at most one end and a flap at most 32 toggles.
    for (let i = 0; i < schedule.length * 40 && queue.length > 0; i++) {
      const next = queue.shift();
      if (next === undefined) break;
      if (!(await pause(next.at - Date.now(), signal))) return;
      const atMs = Date.now() - this.t0;
      let note: string;
      try {
        note = await next.run();
      } catch (e) {
        note = `failed: ${e instanceof Error ? e.message : String(e)}`;
        this.violate("harness", `${next.label}: ${note}`);
      }
      this.fired.push({ atMs, what: next.label, note, tookMs: Date.now() - this.t0 - atMs });
      this.log(`${next.label}: ${note}`);
    }
  }
}

async function waitState(s: Soak, pred: (x: Status) => boolean, timeoutMs: number): Promise<Status | null> {
  const until = Date.now() + timeoutMs;
  for (let i = 0; i < Math.ceil(timeoutMs / STATUS_POLL_MS) + 1 && Date.now() < until; i++) {
    const st = await s.status();
    if (st !== null && pred(st)) return st;
    await sleep(STATUS_POLL_MS);
  }
  return null;
}

const pct = (a: number, b: number): number => (b > 0 ? (a / b) * 100 : 100);

/** Runs one soak on lab `opts.id` (built and removed here) and reports; never leaves the lab up. */
export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const outer = opts.signal ?? new AbortController().signal;
  const planned = planSchedule(opts.seed, opts.durationMs);
  // Left out after planning, so the other faults keep the times the seed gives them.
  const schedule = opts.noDaemonKills === true ? planned.filter((f) => f.fault.kind !== "kill-detourd") : planned;
  opts.log?.(formatSchedule(opts.seed, schedule));
  const id = opts.id;
  let probe: ProbeClient | undefined;
  let soak: Soak | undefined;
  const inner = new AbortController();
  const onAbort = (): void => {
    inner.abort();
  };
  outer.addEventListener("abort", onAbort);
  try {
    const bundle = (await daemonBundle()).detourd;
    opts.log?.(`detourd runs from its bundle ${bundle}`);
    await lab.down(id);
    await lab.up(id, { distance: "none" });
    const topo = lab.topologyOf(id);
    probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
    await armLeakWitness(topo);
    await checkLeakWitness(topo, probe);
    const before = await snapshot(topo, id, probe.pid);
    soak = new Soak(opts, probe, bundle);
    const s = soak;
    s.originalResolvConf = readFileSync(`/etc/netns/${topo.client.ns}/resolv.conf`, "utf8");
    const a = await agentStart(id, { bundle });
    s.pid = a.pid;
    s.pidSince = Date.now();
    await s.askConnect();
    if ((await waitState(s, (x) => x.state === "connected", CONNECT_WITHIN_MS)) === null)
      throw new Error(`detourd did not connect within ${CONNECT_WITHIN_MS} ms before the soak`);
    s.resolvExpected = readFileSync(`/etc/netns/${topo.client.ns}/resolv.conf`, "utf8").includes("detourd");
    const leakBase = await leakCount(topo);
    s.t0 = Date.now();
    s.log(`soak starts: detourd pid ${a.pid} connected; resolv.conf managed: ${String(s.resolvExpected)}`);
    const loops = Promise.all([s.monitor(inner.signal), s.probeLoop(inner.signal), s.checks(inner.signal, leakBase)]);
    await s.execute(schedule, inner.signal);
    await pause(s.t0 + opts.durationMs - Date.now(), inner.signal);
    const interrupted = outer.aborted;
    inner.abort();
    await loops;
    // The end: a calm lab (the schedule lifted everything; heal makes sure), connected again, then a clean stop.
    await lab.heal(id);
    if (!interrupted && (await waitState(s, (x) => x.state === "connected", CONNECT_WITHIN_MS)) === null)
      s.violate("not-connected-at-end", `not connected ${CONNECT_WITHIN_MS} ms after the lab healed`);
    const leaked = (await leakCount(topo)) - leakBase;
    const endRss = s.pid > 0 ? rssKiB(s.pid) : null;
    if (s.rss.has(s.pid) && endRss !== null) trackRss(s.rss, s.pid, endRss, await s.status(), Date.now());
    const c = await ControlClient.connect(s.socket, { timeoutMs: 5_000 }).catch(() => null);
    if (c !== null) {
      await c.disconnect().catch(() => undefined);
      c.close();
    }
    if ((await waitState(s, (x) => x.state === "disconnected", DISCONNECT_WITHIN_MS)) === null && !interrupted)
      s.violate("disconnect-hung", `not disconnected within ${DISCONNECT_WITHIN_MS} ms`);
    s.dropControl();
    await agentStop(id);
    await probe.close();
    probe = undefined;
    const after = await snapshot(topo, id, 0);
    const leftovers = diffSnapshots(before, after);
    const samples = s.samples;
    const deadMerged = mergeIntervals(s.dead, 1000 / PROBE_RATE + 5);
    const violations = [...s.violations, ...connectedButDead(samples, deadMerged), ...statusSilences(samples)].sort(
      (x, y) => x.at - y.at,
    );
    const share = connectedShare(samples, s.faultTimes);
    const t0 = s.t0;
    const stretches = owedStretches(
      samples,
      s.faultTimes,
      s.fired.map((f) => ({ at: t0 + f.atMs, what: firedText(f) })),
    );
    const minutes = opts.durationMs / 60_000;
    const report: ChaosReport = {
      seed: opts.seed,
      startedAt: t0,
      durationMs: opts.durationMs,
      interrupted,
      schedule,
      fired: s.fired,
      share,
      stretches,
      bundled: true,
      noDaemonKills: opts.noDaemonKills === true,
      connectedPct: pct(share.connectedWhileHealthyMs, share.healthyMs),
      connectedOwedPct: pct(share.connectedWhileOwedMs, share.owedMs),
      leaked,
      failovers: s.failovers.length,
      failoversGoal: Math.ceil((50 * minutes) / 30),
      violations,
      leftovers,
      rss: [...s.rss.entries()].map(([pid, v]) => ({
        pid,
        firstKiB: v.first,
        lastKiB: v.last,
        maxKiB: v.max,
        spanMs: v.lastAt - v.firstAt,
        heapFirstKiB: v.heapFirst,
        heapLastKiB: v.heapLast,
        externalLastKiB: v.externalLast,
        arrayBuffersLastKiB: v.arrayBuffersLast,
        series: v.series,
      })),
      restarts: s.restarts,
      maxEngines: s.maxEngines,
      killSwitchRestoreMs: s.killSwitchRestoreMs,
      probes: s.probes,
      markdown: "",
    };
    report.markdown = renderReport(report, s.t0);
    return report;
  } finally {
    outer.removeEventListener("abort", onAbort);
    inner.abort();
    soak?.dropControl();
    if (opts.artifactsDir !== undefined) {
      const log = agentPaths(id).log;
      if (existsSync(log)) {
        mkdirSync(opts.artifactsDir, { recursive: true });
        copyFileSync(log, join(opts.artifactsDir, `chaos-${id}-seed${opts.seed}-detourd.log`));
      }
    }
    await agentStop(id).catch(() => undefined);
    await probe?.close().catch(() => undefined);
    await lab.down(id);
  }
}

function heapEnds(x: InstanceRss): { first: number; last: number } | null {
  return edgeMedians(
    x.series.flatMap((p) => (p.heapKiB === null ? [] : [p.heapKiB])),
    HEAP_MEDIAN_READINGS,
  );
}

/** A markdown table cell: a pipe or a line break would end it. */
function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\s+/g, " ");
}

function orDash(kib: number | null, mib: (k: number) => string): string {
  return kib === null ? "-" : `${mib(kib)} MiB`;
}

function fmtT(at: number, t0: number): string {
  return `t+${((at - t0) / 1000).toFixed(1)} s`;
}

export function renderReport(r: ChaosReport, t0: number): string {
  const mib = (k: number): string => (k / 1024).toFixed(1);
  const longest = [...r.rss].sort((a, b) => b.spanMs - a.spanMs)[0];
  const drift = longest === undefined ? null : ((longest.lastKiB - longest.firstKiB) / longest.firstKiB) * 100;
  const yes = (b: boolean): string => (b ? "yes" : "**no**");
  const gaps = Object.entries(r.share.notConnectedOwedMs).sort((a, b) => b[1] - a[1]);
  const owedGap =
    gaps.length === 0 ? "" : ` (not connected: ${gaps.map(([k, v]) => `${k} ${(v / 1000).toFixed(1)} s`).join(", ")})`;
  const md = [
    `# Chaos soak: ${(r.durationMs / 60_000).toFixed(1)} minutes, seed ${r.seed}${r.interrupted ? " (INTERRUPTED)" : ""}`,
    "",
    `Lab at distance "none", ${r.schedule.length} scheduled faults (${r.fired.length} actions fired), probe stream ${PROBE_RATE}/s to corp through the tunnel (${r.probes.received}/${r.probes.sent} answered). detourd ran ${r.bundled ? "from its esbuild bundle (plain node)" : "through tsx"}${r.noDaemonKills ? "; the schedule's detourd SIGKILLs were left out (--no-daemon-kills)" : ""}.`,
    "",
    "| measure | value | goal | met |",
    "|---|---:|---|---|",
    `| connected while at least one gateway was healthy | ${r.connectedPct.toFixed(2)} % of ${(r.share.healthyMs / 1000).toFixed(0)} s | - | - |`,
    `| same, leaving out ${RECOVERY_GRACE_MS / 1000} s of recovery after each fault${owedGap} | ${r.connectedOwedPct.toFixed(2)} % of ${(r.share.owedMs / 1000).toFixed(0)} s | >= 99.5 % | ${yes(r.connectedOwedPct >= 99.5)} |`,
    `| packets to corp that left outside a tunnel | ${r.leaked} | 0 | ${yes(r.leaked === 0)} |`,
    `| failovers (distinct failover records) | ${r.failovers} | >= ${r.failoversGoal} | ${yes(r.failovers >= r.failoversGoal)} |`,
    `| invariant violations | ${r.violations.length} | 0 | ${yes(r.violations.length === 0)} |`,
    `| left behind in the client namespace | ${r.leftovers.length} | none | ${yes(r.leftovers.length === 0)} |`,
    `| detourd RSS, longest-lived instance (pid ${longest?.pid ?? "-"}) first / last | ${longest === undefined ? "-" : `${mib(longest.firstKiB)} / ${mib(longest.lastKiB)} MiB (${(drift ?? 0) >= 0 ? "+" : ""}${(drift ?? 0).toFixed(1)} % over ${(longest.spanMs / 1000).toFixed(0)} s)`} | within 10 % | ${yes(drift !== null && Math.abs(drift) <= 10)} |`,
    "",
    `detourd restarts (by the soak or after an exit): ${r.restarts}. Most engine processes at once: ${r.maxEngines}. Kill switch back after a flush: ${r.killSwitchRestoreMs.length === 0 ? "never seen back" : r.killSwitchRestoreMs.map((m) => `${m} ms`).join(", ")}.`,
    "",
    "## Owed time not connected",
    "",
    `Each stretch outside the ${RECOVERY_GRACE_MS / 1000} s recovery grace with a healthy gateway while detourd was not connected, largest first (${r.stretches.length} stretches, ${(r.stretches.reduce((a, x) => a + x.ms, 0) / 1000).toFixed(1)} s).`,
    "",
    ...(r.stretches.length === 0
      ? ["none"]
      : [
          "| start | length | detourd (state: summary, time) | healthy gateways (soak's view) | last two actions before |",
          "|---:|---:|---|---|---|",
          ...r.stretches.map(
            (x) =>
              `| ${fmtT(x.from, t0)} | ${(x.ms / 1000).toFixed(2)} s | ${x.states.map((st) => `${st.state}${st.summary === "" ? "" : `: ${cell(st.summary)}`} (${(st.ms / 1000).toFixed(2)} s)`).join("; ")} | ${x.healthy.map((h) => (h.length === 0 ? "none" : h.join(", "))).join(" then ")} | ${x.lastFaults.map((f) => `${fmtT(f.at, t0)} ${cell(f.what)}`).join("; ") || "-"} |`,
          ),
        ]),
    "",
    "## Violations",
    "",
    ...(r.violations.length === 0
      ? ["none"]
      : r.violations.map((v) => `- ${fmtT(v.at, t0)} **${v.kind}**: ${v.detail}`)),
    "",
    "## Left behind",
    "",
    ...(r.leftovers.length === 0 ? ["none"] : r.leftovers.map((l) => `- ${l}`)),
    "",
    "## detourd instances (memory while connected)",
    "",
    `RSS from /proc, read every ${RSS_SAMPLE_MS / 1000} s from ${RSS_WARMUP_MS / 1000} s after the instance started; V8's heap and the buffers outside it from detourd's status (daemon.memory). RSS that grows while heap used and external stay flat is outside detourd's JavaScript objects (allocator, code, native memory).`,
    "",
    `Heap used is the median of the first and of the last ${HEAP_MEDIAN_READINGS} readings (one reading swings with each garbage collection).`,
    "",
    "| pid | RSS first | RSS last | RSS max | heap used first | heap used last | external / arrayBuffers last | span |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ...r.rss.map(
      (x) =>
        `| ${x.pid} | ${mib(x.firstKiB)} MiB | ${mib(x.lastKiB)} MiB | ${mib(x.maxKiB)} MiB | ${orDash(heapEnds(x)?.first ?? null, mib)} | ${orDash(heapEnds(x)?.last ?? null, mib)} | ${orDash(x.externalLastKiB, mib)} / ${orDash(x.arrayBuffersLastKiB, mib)} | ${(x.spanMs / 1000).toFixed(0)} s |`,
    ),
    "",
    "## Faults as fired",
    "",
    ...r.fired.map((f) => `- t+${(f.atMs / 1000).toFixed(1)} s ${firedText(f)}`),
  ];
  return md.join("\n") + "\n";
}
