/**
 * Watches the nftables ruleset for changes by anyone (an admin's `nft flush ruleset`, a firewall manager's reload,
 * a container runtime) through `nft monitor`: a supervised child that sleeps on a netlink socket and prints one
 * line per change, so noticing costs no CPU while nothing changes, and a change is seen within milliseconds.
 * The kernel tells every listener about every ruleset change; the caller decides whether its own table was hit
 * (firewall.linux.ts readKillSwitch). The same child prints packet traces: the kill switch traces the first user
 * packet into a tunnel after a quiet spell (firewall.linux.ts tunnelActivity), which the caller hears as activity
 * (the probes' pace, core/connection/pace.ts), so seeing traffic costs no polling either.
 *
 * If the child dies (killed, netlink overflow), it is restarted after a backoff that grows with failures in a
 * row and resets once a child has run for a while; each (re)start is reported as a change too, because changes
 * made while nobody watched were missed.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { noteChild } from "./child-watch.ts";
import { KILLSWITCH_FAMILY, KILLSWITCH_TABLE } from "./firewall.linux.ts";
import type { FirewallWatchListener } from "./platform.ts";
import { inNetns } from "./run.ts";

/** First wait before restarting a dead watcher: long enough not to spin on a binary that dies at once. */
export const WATCH_RESTART_INITIAL_MS = 200;
/** Longest wait between restarts: a watcher that cannot run is retried twice a minute, not more. */
export const WATCH_RESTART_MAX_MS = 30_000;
/** A watcher that ran this long was healthy: the next death starts the backoff from the beginning again. */
export const WATCH_HEALTHY_AFTER_MS = 60_000;
/**
 * A monitor child prints nothing when it starts listening, and its "spawn" comes before it has subscribed (nft
 * monitor's netlink socket is bound some milliseconds later, a second or more on a loaded machine): a change in
 * that gap is seen by neither the check at spawn nor the monitor. One more check this long after the spawn closes it.
 */
export const WATCH_LISTENING_AFTER_MS = 1_000;

export interface WatchOptions {
  /** Namespace to watch (lab tests); unset inside detourd. */
  netns?: string;
  /** The nft binary (tests); "nft" from PATH otherwise. */
  nft?: string;
}

/** A line of `nft monitor` longer than this is not one of ours: it is dropped (memory stays bounded). */
const MAX_MONITOR_LINE = 16 * 1024;

/** The first line of a packet's trace through the kill switch's output chain: `trace id <id> ` comes before it. */
const ACTIVITY_TRACE = ` ${KILLSWITCH_FAMILY} ${KILLSWITCH_TABLE} output packet: oif "`;

/**
 * What a chunk of `nft monitor` output says: a ruleset change (any line that is not a packet trace), user traffic
 * into a tunnel (a traced packet in the kill switch's output chain: only its activity rule sets nftrace there), or
 * neither (other software's traces elsewhere: nftrace is everyone's). The packet line is the one to match: the
 * rule lines name the rule by its text only if the monitor read the ruleset after the table was last replaced,
 * and a long-running monitor prints "unknown rule handle N" instead. `rest` is an unfinished last line, kept for
 * the next chunk (nft writes a trace a few bytes at a time).
 */
export function splitMonitorOutput(text: string): { changed: boolean; activity: boolean; rest: string } {
  const lines = text.split("\n");
  let rest = lines.pop() ?? "";
  if (rest.length > MAX_MONITOR_LINE) rest = "";
  let changed = false;
  let activity = false;
  for (const l of lines) {
    if (l.trim() === "") continue;
    if (!l.startsWith("trace id ")) changed = true;
    else if (l.includes(ACTIVITY_TRACE)) activity = true;
  }
  return { changed, activity, rest };
}

export function watchFirewall(listener: FirewallWatchListener, opts: WatchOptions = {}): { stop(): void } {
  let stopped = false;
  let child: ChildProcess | null = null;
  let restart: NodeJS.Timeout | null = null;
  let listening: NodeJS.Timeout | null = null;
  let failures = 0;
  const safe = (f: () => void): void => {
    try {
      f();
    } catch {
      // the listener's failure is its own; the watcher keeps watching
    }
  };
  const start = (): void => {
    if (stopped) return;
    const [file, ...args] = inNetns(opts.netns, [opts.nft ?? "nft", "monitor"]);
    const startedAt = performance.now();
    let ended = false;
    const c = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    // Into the ownership record like the engines: a SIGKILLed detourd's watcher is stopped by its successor.
    const watched = { pid: c.pid ?? -1, argv: [file, ...args] };
    noteChild("spawned", watched);
    let stderr = "";
    let partial = "";
    c.stdout.on("data", (d: Buffer) => {
      const { changed, activity, rest } = splitMonitorOutput(partial + d.toString());
      partial = rest;
      if (changed)
        safe(() => {
          listener.changed();
        });
      if (activity)
        safe(() => {
          listener.activity?.();
        });
    });
    c.stderr.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-500);
    });
    c.once("spawn", () => {
      // Whatever changed before this watcher listened was not seen: check once now, and once it surely listens.
      safe(() => {
        listener.changed();
      });
      if (listening !== null) clearTimeout(listening);
      listening = setTimeout(() => {
        listening = null;
        if (stopped || child !== c) return;
        safe(() => {
          listener.changed();
        });
      }, WATCH_LISTENING_AFTER_MS);
      listening.unref();
    });
    const onEnd = (why: string): void => {
      if (ended) return;
      ended = true;
      child = null;
      if (stopped) return;
      failures = performance.now() - startedAt >= WATCH_HEALTHY_AFTER_MS ? 1 : failures + 1;
      const wait = Math.min(WATCH_RESTART_MAX_MS, WATCH_RESTART_INITIAL_MS * 2 ** Math.min(failures - 1, 20));
      safe(() => {
        listener.watcherDied(`${why}${stderr.trim() === "" ? "" : `: ${stderr.trim()}`}`);
      });
      restart = setTimeout(() => {
        restart = null;
        start();
      }, wait);
      restart.unref();
    };
    c.once("error", (err) => {
      onEnd(`nft monitor could not run (${err.message})`);
    });
    c.once("exit", (code, signal) => {
      noteChild("exited", watched);
      onEnd(`nft monitor exited (${signal ?? `code ${String(code)}`})`);
    });
  };
  start();
  return {
    stop: () => {
      stopped = true;
      if (restart !== null) clearTimeout(restart);
      if (listening !== null) clearTimeout(listening);
      restart = null;
      listening = null;
      child?.kill("SIGTERM");
      child = null;
    },
  };
}
