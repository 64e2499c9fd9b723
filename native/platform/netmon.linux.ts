/**
 * Linux's network monitor: `ip monitor link address route` as a supervised child (it sleeps on a netlink socket,
 * so watching costs nothing while nothing changes), whose underlay lines (netmon.ts decides which) trigger one
 * debounced look at the path toward the gateways (`ip -json route get`, or the default routes when no gateway
 * address is known). The look, not the event text, decides what is reported, so a missed or odd line costs at most
 * a look. Like the kill switch's `nft monitor`, the child is noted in the ownership record, restarted with backoff
 * when it dies, and a look runs at every (re)start and every NETMON_RECHECK_MS besides.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { noteChild } from "./child-watch.ts";
import {
  WATCH_HEALTHY_AFTER_MS,
  WATCH_LISTENING_AFTER_MS,
  WATCH_RESTART_INITIAL_MS,
  WATCH_RESTART_MAX_MS,
} from "./firewall-watch.linux.ts";
import {
  classifyPath,
  concernsUnderlay,
  Debounce,
  describePath,
  parseMonitorLine,
  pathFromDefaultRoutes,
  pathFromRouteGet,
} from "./netmon.ts";
import type { NetworkMonitorListener, NetworkMonitorOptions, NetworkPath } from "./platform.ts";
import { inNetns, run } from "./run.ts";

/**
 * Quiet time that ends a burst: an OS moving networks deletes and adds addresses and routes within a few
 * milliseconds; 100 ms sees the whole move as one change without delaying the reconnect noticeably.
 */
export const NETMON_SETTLE_MS = 100;
/** A burst that never goes quiet (a flapping link) is looked at after this long anyway. */
export const NETMON_MAX_DELAY_MS = 500;
/**
 * A look without an event: catches what a dead or restarting watcher missed; one or two `ip` calls. It is also
 * what finds a route toward gateways whose addresses became known only after the first look (a hostname-only
 * configuration, an IPv6-only network): 30 s made those wait that long (CI, issue 17), so it stays at 10 s until
 * new targets trigger a look of their own.
 */
export const NETMON_RECHECK_MS = 10_000;
/**
 * A route that vanished is reported as a path change at once (the tunnel is checked, not judged dead) and looked at
 * again after this long before it is reported offline: an OS moving networks takes the old link down before the
 * new one is up, and on a busy machine the two can land in separate bursts. A false "offline" tears the tunnel down.
 */
export const NETMON_OFFLINE_CONFIRM_MS = 300;
/** `ip route get` answers in milliseconds; one that takes this long is hung. */
const ROUTE_GET_TIMEOUT_MS = 2_000;
/** At most this many gateway addresses are looked up per look: the first answering one decides. */
const MAX_TARGETS = 8;

export interface NetmonLinuxOptions extends NetworkMonitorOptions {
  /** Namespace to watch (lab tests); unset inside detourd. */
  netns?: string;
}

/** The path toward the gateways as the kernel routes now: the first target with an underlay route decides. */
export async function lookPath(opts: NetmonLinuxOptions): Promise<NetworkPath | null> {
  const targets = opts.targets().slice(0, MAX_TARGETS);
  for (const t of targets) {
    const [file, ...args] = inNetns(opts.netns, ["ip", "-json", "route", "get", t]);
    const r = await run(file, args, { timeoutMs: ROUTE_GET_TIMEOUT_MS });
    if (r.code !== 0) continue;
    try {
      const p = pathFromRouteGet(JSON.parse(r.stdout), opts.ifnamePrefix);
      if (p !== null) return p;
    } catch {
      // an unreadable answer is no route
    }
  }
  if (targets.length > 0) return null;
  for (const family of ["-4", "-6"]) {
    const [file, ...args] = inNetns(opts.netns, ["ip", "-json", family, "route", "show", "default"]);
    const r = await run(file, args, { timeoutMs: ROUTE_GET_TIMEOUT_MS });
    if (r.code !== 0) continue;
    try {
      const p = pathFromDefaultRoutes(JSON.parse(r.stdout), opts.ifnamePrefix);
      if (p !== null) return p;
    } catch {
      // as above
    }
  }
  return null;
}

export function watchNetwork(
  listener: NetworkMonitorListener,
  opts: NetmonLinuxOptions,
): { stop(): void; recheck(): void } {
  const life = { stopped: false, lookAgain: false };
  // Read through functions: both change while a look awaits its `ip` calls.
  const isStopped = (): boolean => life.stopped;
  const wantsAnotherLook = (): boolean => life.lookAgain;
  let child: ChildProcess | null = null;
  let restart: NodeJS.Timeout | null = null;
  let lookTimer: NodeJS.Timeout | null = null;
  let failures = 0;
  /** undefined until the first look: the first report says how the network was found. */
  let known: NetworkPath | null | undefined = undefined;
  let looking = false;
  const debounce = new Debounce(NETMON_SETTLE_MS, NETMON_MAX_DELAY_MS);
  const safe = (f: () => void): void => {
    try {
      f();
    } catch {
      // the listener's failure is its own; the monitor keeps watching
    }
  };

  const look = async (): Promise<void> => {
    if (life.stopped) return;
    if (looking) {
      life.lookAgain = true;
      return;
    }
    looking = true;
    try {
      do {
        life.lookAgain = false;
        let path = await lookPath(opts);
        if (isStopped()) return;
        if (path === null && known !== undefined && known !== null) {
          // Said at once, so the tunnel's silence from here on is not taken for a dead gateway meanwhile.
          const was = known;
          safe(() => {
            listener.change({
              at: Date.now(),
              kind: "path-changed",
              initial: false,
              path: null,
              previous: was,
              reason: `the route toward the gateways went away (was ${describePath(was)}); looking again`,
            });
          });
          await sleep(NETMON_OFFLINE_CONFIRM_MS);
          if (isStopped()) return;
          path = await lookPath(opts);
          if (isStopped()) return;
        }
        const kind = classifyPath(known, path);
        const previous = known ?? null;
        const initial = known === undefined;
        known = path;
        if (kind !== null) {
          const reason =
            kind === "offline"
              ? `no route toward the gateways (was ${describePath(previous)})`
              : kind === "online"
                ? `a route toward the gateways: ${describePath(path)}`
                : `the path toward the gateways moved from ${describePath(previous)} to ${describePath(path)}`;
          safe(() => {
            listener.change({ at: Date.now(), kind, initial, path, previous, reason });
          });
        }
      } while (wantsAnotherLook() && !isStopped());
    } finally {
      looking = false;
    }
  };

  const schedule = (): void => {
    if (life.stopped) return;
    const due = debounce.note(performance.now());
    if (lookTimer !== null) clearTimeout(lookTimer);
    lookTimer = setTimeout(
      () => {
        lookTimer = null;
        debounce.clear();
        void look();
      },
      Math.max(0, due - performance.now()),
    );
    lookTimer.unref();
  };

  const start = (): void => {
    if (life.stopped) return;
    const [file, ...args] = inNetns(opts.netns, ["ip", "monitor", "link", "address", "route"]);
    const startedAt = performance.now();
    let ended = false;
    const c = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    // Into the ownership record like the engines: a SIGKILLed detourd's watcher is stopped by its successor.
    const watched = { pid: c.pid ?? -1, argv: [file, ...args] };
    noteChild("spawned", watched);
    let stderr = "";
    createInterface({ input: c.stdout }).on("line", (line) => {
      const ev = parseMonitorLine(line);
      if (ev !== null && concernsUnderlay(ev, opts.ifnamePrefix)) schedule();
    });
    c.stderr.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-500);
    });
    // Whatever changed before this watcher listened was not seen: look once now, and once it surely listens.
    c.once("spawn", () => {
      void look();
      setTimeout(() => {
        if (!life.stopped && child === c) void look();
      }, WATCH_LISTENING_AFTER_MS).unref();
    });
    const onEnd = (why: string): void => {
      if (ended) return;
      ended = true;
      child = null;
      if (life.stopped) return;
      failures = performance.now() - startedAt >= WATCH_HEALTHY_AFTER_MS ? 1 : failures + 1;
      const wait = Math.min(WATCH_RESTART_MAX_MS, WATCH_RESTART_INITIAL_MS * 2 ** Math.min(failures - 1, 20));
      safe(() => {
        listener.watcherDied?.(`${why}${stderr.trim() === "" ? "" : `: ${stderr.trim()}`}`);
      });
      restart = setTimeout(() => {
        restart = null;
        start();
      }, wait);
      restart.unref();
    };
    c.once("error", (err) => {
      onEnd(`ip monitor could not run (${err.message})`);
    });
    c.once("exit", (code, signal) => {
      noteChild("exited", watched);
      onEnd(`ip monitor exited (${signal ?? `code ${String(code)}`})`);
    });
  };

  start();
  const periodic = setInterval(() => void look(), NETMON_RECHECK_MS);
  periodic.unref();
  return {
    stop: () => {
      life.stopped = true;
      clearInterval(periodic);
      if (restart !== null) clearTimeout(restart);
      if (lookTimer !== null) clearTimeout(lookTimer);
      restart = null;
      lookTimer = null;
      child?.kill("SIGTERM");
      child = null;
    },
    recheck: () => {
      void look();
    },
  };
}
