/**
 * logind's sleep announcements on Linux: `busctl monitor` as a supervised child on the system bus (it sleeps on
 * the bus socket, so listening costs nothing between sleeps), matching only PrepareForSleep and login1's owner
 * changes, with each signal checked against the unique name that owns org.freedesktop.login1 (logind.ts).
 * busctl rather than a D-Bus library, as for resolved (resolved.linux.ts): no new dependency in the root daemon,
 * a wedged bus cannot block the event loop, and the child is one more PID in the ownership record. Like the
 * network monitor's `ip monitor`, a watcher that dies is restarted with backoff and reported; one that cannot
 * listen at all (no system bus, busctl missing) leaves the clocks as the only detector and says why.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { noteChild } from "./child-watch.ts";
import { WATCH_HEALTHY_AFTER_MS, WATCH_RESTART_INITIAL_MS, WATCH_RESTART_MAX_MS } from "./firewall-watch.linux.ts";
import {
  BUS_DRIVER,
  isNoOwnerError,
  LOGIND_NAME,
  LogindOwner,
  MONITOR_MATCHES,
  MONITOR_READY_LINE,
  parseMonitorLine,
  parseNameOwner,
} from "./logind.ts";
import type { SleepMonitorListener, SleepSourceState } from "./platform.ts";
import { run } from "./run.ts";

/** The bus driver answers GetNameOwner in milliseconds; slower means the bus is wedged, and the query fails. */
export const LOGIND_OWNER_QUERY_TIMEOUT_MS = 2_000;
/** busctl says when it became a monitor; one that has not said so this long after its start is trusted anyway. */
export const LOGIND_READY_FALLBACK_MS = 1_000;
/**
 * A signal from a sender other than the known owner makes the watcher ask the bus again (logind may have
 * restarted), at most this often: a flood of forged signals costs one busctl call a second, no more.
 */
export const LOGIND_RECHECK_MIN_MS = 1_000;
/** Signals held while login1's owner is asked (a resume waits for one busctl call); more are dropped as unverifiable. */
const MAX_HELD = 4;
/** sd-bus's default system bus, used when DBUS_SYSTEM_BUS_ADDRESS is unset. */
const DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket";

/** The system bus's socket path as busctl would use it, or null when the address is not a plain unix path. */
export function systemBusSocket(env: NodeJS.ProcessEnv = process.env): string | null {
  const address = env.DBUS_SYSTEM_BUS_ADDRESS ?? DEFAULT_SYSTEM_BUS;
  const first = address.split(";")[0] ?? "";
  if (!first.startsWith("unix:")) return null;
  const path = first
    .slice("unix:".length)
    .split(",")
    .find((kv) => kv.startsWith("path="));
  return path === undefined ? null : decodeURIComponent(path.slice("path=".length));
}

export interface SleepWatchOptions {
  /** The busctl binary (tests); "busctl" from PATH otherwise. */
  busctl?: string;
}

export function watchSleep(listener: SleepMonitorListener, opts: SleepWatchOptions = {}): { stop(): void } {
  const busctl = opts.busctl ?? "busctl";
  const life = { stopped: false };
  const isStopped = (): boolean => life.stopped;
  const owner = new LogindOwner();
  let child: ChildProcess | null = null;
  let restart: NodeJS.Timeout | null = null;
  let failures = 0;
  let asking = false;
  let lastAsk = -Infinity;
  let held: { at: number; sleeping: boolean; sender: string }[] = [];
  let reported: { state: SleepSourceState; detail: string | null } | null = null;
  const safe = (f: () => void): void => {
    try {
      f();
    } catch {
      // the listener's failure is its own; the watcher keeps watching
    }
  };
  const setState = (state: SleepSourceState, detail: string | null): void => {
    if (reported?.state === state && reported.detail === detail) return;
    reported = { state, detail };
    safe(() => {
      listener.state(state, detail);
    });
  };
  const ownerState = (): void => {
    const o = owner.owner;
    if (o === undefined) return;
    if (o === null) setState("no-logind", `nobody owns ${LOGIND_NAME} on the system bus`);
    else setState("listening", `${LOGIND_NAME} is ${o}`);
  };

  const deliver = (s: { at: number; sleeping: boolean; sender: string }, askedAgain: boolean): void => {
    const verdict = owner.judge(s.sender);
    if (verdict === "trusted") {
      safe(() => {
        listener.prepareForSleep({ at: s.at, sleeping: s.sleeping });
      });
      return;
    }
    const o = owner.owner;
    safe(() => {
      listener.ignored(
        `PrepareForSleep(${String(s.sleeping)}) from ${s.sender}, ` +
          (o === undefined
            ? `while the owner of ${LOGIND_NAME} could not be asked`
            : `which does not own ${LOGIND_NAME} (${o ?? "nobody"} does${askedAgain ? ", asked again" : ""})`),
      );
    });
  };

  const askOwner = async (): Promise<void> => {
    if (asking || isStopped()) return;
    asking = true;
    lastAsk = performance.now();
    const token = owner.asking();
    try {
      const r = await run(
        busctl,
        [
          "--system",
          `--timeout=${String(LOGIND_OWNER_QUERY_TIMEOUT_MS / 1000)}`,
          "call",
          BUS_DRIVER,
          "/org/freedesktop/DBus",
          BUS_DRIVER,
          "GetNameOwner",
          "s",
          LOGIND_NAME,
        ],
        { timeoutMs: LOGIND_OWNER_QUERY_TIMEOUT_MS + 1_000 },
      );
      if (isStopped()) return;
      const name = r.code === 0 ? parseNameOwner(r.stdout) : null;
      const answer = name ?? (r.code !== 0 && isNoOwnerError(r.stderr) ? null : undefined);
      owner.answered(token, answer);
      if (owner.owner === undefined)
        setState(
          "unavailable",
          `the owner of ${LOGIND_NAME} could not be asked: ${(r.stderr.trim() || r.stdout.trim() || `code ${String(r.code)}`).slice(0, 200)}`,
        );
      else ownerState();
    } finally {
      asking = false;
      const waiting = held;
      held = [];
      if (!isStopped()) for (const s of waiting) deliver(s, true);
    }
  };

  const onSignal = (s: { at: number; sleeping: boolean; sender: string }): void => {
    const verdict = owner.judge(s.sender);
    if (verdict === "trusted") {
      deliver(s, false);
      return;
    }
    // Unknown owner, or a sender that is not the one known: ask the bus (logind may have restarted) unless it was
    // asked a moment ago, and judge the signal on the answer.
    if (asking || verdict === "unknown" || performance.now() - lastAsk >= LOGIND_RECHECK_MIN_MS) {
      if (held.length >= MAX_HELD) {
        deliver(s, false);
        return;
      }
      held.push(s);
      void askOwner();
      return;
    }
    deliver(s, false);
  };

  const start = (): void => {
    if (life.stopped) return;
    const socket = systemBusSocket();
    if (socket !== null && !existsSync(socket)) {
      setState("unavailable", `no system bus at ${socket}`);
      restart = setTimeout(() => {
        restart = null;
        start();
      }, WATCH_RESTART_MAX_MS);
      restart.unref();
      return;
    }
    const args = ["--system", "monitor", "--json=short", ...MONITOR_MATCHES.flatMap((m) => ["--match", m])];
    const startedAt = performance.now();
    let ended = false;
    let listening = false;
    const c = spawn(busctl, args, { stdio: ["ignore", "pipe", "pipe"] });
    child = c;
    // Into the ownership record like the other watchers: a SIGKILLed detourd's monitor is stopped by its successor.
    const watched = { pid: c.pid ?? -1, argv: [busctl, ...args] };
    noteChild("spawned", watched);
    let stderr = "";
    const nowListening = (): void => {
      if (listening || ended) return;
      listening = true;
      void askOwner();
    };
    const fallback = setTimeout(nowListening, LOGIND_READY_FALLBACK_MS);
    fallback.unref();
    createInterface({ input: c.stdout }).on("line", (line) => {
      const ev = parseMonitorLine(line);
      if (ev === null || ended) return;
      if (ev.kind === "owner-changed") {
        owner.changed(ev.owner);
        ownerState();
        return;
      }
      onSignal({ at: Date.now(), sleeping: ev.sleeping, sender: ev.sender });
    });
    c.stderr.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-500);
      if (stderr.includes(MONITOR_READY_LINE)) nowListening();
    });
    const onEnd = (why: string): void => {
      if (ended) return;
      ended = true;
      clearTimeout(fallback);
      child = null;
      owner.forget();
      held = [];
      if (life.stopped) return;
      const tail = stderr.replace(MONITOR_READY_LINE, "").trim();
      const reason = `${why}${tail === "" ? "" : `: ${tail}`}`;
      failures = performance.now() - startedAt >= WATCH_HEALTHY_AFTER_MS ? 1 : failures + 1;
      const wait = Math.min(WATCH_RESTART_MAX_MS, WATCH_RESTART_INITIAL_MS * 2 ** Math.min(failures - 1, 20));
      if (listening) {
        setState("starting", `restarting the watcher: ${reason}`);
        safe(() => {
          listener.watcherDied(reason);
        });
      } else setState("unavailable", reason);
      restart = setTimeout(() => {
        restart = null;
        start();
      }, wait);
      restart.unref();
    };
    c.once("error", (err) => {
      onEnd(`busctl monitor could not run (${err.message})`);
    });
    c.once("exit", (code, signal) => {
      noteChild("exited", watched);
      onEnd(`busctl monitor exited (${signal ?? `code ${String(code)}`})`);
    });
  };

  setState("starting", null);
  start();
  return {
    stop: () => {
      life.stopped = true;
      if (restart !== null) clearTimeout(restart);
      restart = null;
      child?.kill("SIGTERM");
      child = null;
    },
  };
}
