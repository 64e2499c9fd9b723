/**
 * Echo probes bound to one tunnel device (iputils ping -I, i.e. SO_BINDTODEVICE): they prove that a tunnel
 * carries traffic both ways without any route being installed, so several tunnels can be probed side by side.
 */
import { spawn } from "node:child_process";
import { noteChild } from "./child-watch.ts";
import { inNetns } from "./run.ts";

export type EchoResult = { ok: true; at: number; rttMs: number } | { ok: false; error: string };

export interface PingThroughOptions {
  ifname: string;
  target: string;
  netns?: string;
  /** Epoch ms after which the probe gives up. */
  deadlineAt: number;
  /** Gap between echo requests; 20 ms finds a fresh tunnel quickly without flooding it. */
  intervalMs?: number;
  signal?: AbortSignal;
}

const DEFAULT_INTERVAL_MS = 20;
const REPLY_RE = /bytes from .*time=([\d.]+) ms/;

/** Sends echoes through `ifname` until the first reply (resolves ok) or the deadline (resolves not ok). */
export function pingThrough(opts: PingThroughOptions): Promise<EchoResult> {
  const interval = Math.max(2, opts.intervalMs ?? DEFAULT_INTERVAL_MS);
  // -w: ping ends on its own at the deadline, even if detourd is killed and cannot end it.
  const deadlineS = String(Math.max(1, Math.ceil((opts.deadlineAt - Date.now()) / 1000)));
  const argv = inNetns(opts.netns, [
    "ping",
    "-n",
    "-I",
    opts.ifname,
    "-i",
    (interval / 1000).toFixed(3),
    "-w",
    deadlineS,
    opts.target,
  ]);
  return new Promise<EchoResult>((resolve) => {
    if (opts.signal?.aborted === true) {
      resolve({ ok: false, error: "cancelled" });
      return;
    }
    const [file, ...args] = argv;
    const child = spawn(file, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin", LC_ALL: "C" },
    });
    const watched = { pid: child.pid ?? -1, argv };
    noteChild("spawned", watched);
    let settled = false;
    let stderr = "";
    let buf = "";
    const finish = (r: EchoResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      resolve(r);
    };
    const onAbort = (): void => {
      finish({ ok: false, error: "cancelled" });
    };
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(
      () => {
        finish({ ok: false, error: `no echo reply through ${opts.ifname} from ${opts.target} before the deadline` });
      },
      Math.max(0, opts.deadlineAt - Date.now()),
    );
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (d: string) => {
      buf += d;
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = REPLY_RE.exec(line);
        if (m !== null) {
          finish({ ok: true, at: Date.now(), rttMs: Number(m[1]) });
          return;
        }
        nl = buf.indexOf("\n");
      }
      if (buf.length > 4096) buf = "";
    });
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.on("error", (e) => {
      finish({ ok: false, error: `ping could not run: ${e.message}` });
    });
    child.on("close", () => {
      noteChild("exited", watched);
    });
    child.on("exit", () => {
      finish({ ok: false, error: `ping ended without a reply: ${stderr.trim() || "no output"}` });
    });
  });
}
