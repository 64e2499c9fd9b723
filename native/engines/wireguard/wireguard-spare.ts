/**
 * A wireguard-go started ahead of need: its device and UAPI socket exist, with no address, no peer and the link
 * down, so it carries nothing. A WireGuard leg adopts it and only configures it, which takes the process start and
 * the wait for its device (about half of a WireGuard connect on a small machine) off the connect. Until adopted
 * the spare owns the process, the device, the socket and its work folder, and stop() removes them all.
 */
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlive } from "../../platform/process-tree.linux.ts";
import { linkExists } from "../../platform/link.linux.ts";
import { run } from "../../platform/run.ts";
import { EngineProcess } from "../engine-process.ts";
import type { EngineRuntime } from "../engine.ts";
import { UapiClient, uapiSocketPath } from "./uapi-client.ts";
import { UapiError } from "./uapi-codec.ts";

/** Polls of the socket are stats; the device is looked up once the socket exists. */
const READY_POLL_MS = 3;
/** wireguard-go needs nothing from the daemon's environment; verbose logs name each handshake step. */
const WIREGUARD_GO_ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", LOG_LEVEL: "verbose" };

export class SpareError extends Error {
  constructor(
    readonly code: "name-taken" | "timeout" | "exited" | "cancelled",
    message: string,
  ) {
    super(message);
    this.name = "SpareError";
  }
}

/**
 * Makes sure the device name is free: a device of that name, or a socket a live wireguard-go still answers on,
 * belongs to someone else. A socket that refuses connections is the leftover of a SIGKILLed wireguard-go; it is
 * removed, or the readiness wait would pass before the new one is up.
 */
export async function claimDeviceName(runtime: EngineRuntime, deadlineAt: number, signal?: AbortSignal): Promise<void> {
  if (await linkExists(runtime.ifname, runtime.netns)) {
    throw new SpareError(
      "name-taken",
      `a device named ${runtime.ifname} already exists${runtime.netns === undefined ? "" : ` in ${runtime.netns}`}`,
    );
  }
  const socket = uapiSocketPath(runtime.ifname);
  if (!existsSync(socket)) return;
  let answered = true;
  try {
    await new UapiClient(socket).get({ deadlineAt, ...(signal === undefined ? {} : { signal }) });
  } catch (e) {
    answered = !(e instanceof UapiError && (e.code === "refused" || e.code === "no-socket"));
  }
  if (answered)
    throw new SpareError(
      "name-taken",
      `${socket} belongs to another running wireguard-go: device names must be unique on the host`,
    );
  rmSync(socket, { force: true });
}

/** Waits until wireguard-go's socket and device both exist; throws at the deadline, on abort or if it exits. */
export async function waitDeviceReady(
  runtime: EngineRuntime,
  proc: EngineProcess,
  deadlineAt: number,
  signal?: AbortSignal,
): Promise<void> {
  const socket = uapiSocketPath(runtime.ifname);
  const tries = Math.ceil(Math.max(0, deadlineAt - Date.now()) / READY_POLL_MS) + 1;
  for (let i = 0; i < tries; i++) {
    if (signal?.aborted === true) throw new SpareError("cancelled", "cancelled while wireguard-go started");
    if (!proc.running)
      throw new SpareError(
        "exited",
        `wireguard-go for ${runtime.ifname} exited while starting: ${proc.tail(5).trim() || "no output"}`,
      );
    if (existsSync(socket) && (await linkExists(runtime.ifname, runtime.netns))) return;
    if (Date.now() >= deadlineAt) break;
    await sleep(READY_POLL_MS);
  }
  throw new SpareError("timeout", `wireguard-go for ${runtime.ifname} did not create its device and socket in time`);
}

/** Starts wireguard-go for `runtime.ifname` (its log in the work folder); the caller owns the process. */
export function spawnWireGuardGo(runtime: EngineRuntime): EngineProcess {
  mkdirSync(runtime.workDir, { recursive: true, mode: 0o700 });
  return EngineProcess.spawn({
    argv: ["wireguard-go", "-f", runtime.ifname],
    ...(runtime.netns === undefined ? {} : { netns: runtime.netns }),
    env: WIREGUARD_GO_ENV,
    logFile: join(runtime.workDir, "wireguard-go.log"),
  });
}

/**
 * Stops a wireguard-go this code started and removes what a killed one leaves (socket, rarely the device) and the
 * work folder. Returns what could not be removed.
 */
export async function removeWireGuardGo(runtime: EngineRuntime, proc: EngineProcess | null): Promise<string[]> {
  const left: string[] = [];
  if (proc !== null) {
    await proc.stop("SIGTERM");
    if (proc.pid > 0 && isAlive(proc.pid)) left.push(`process ${proc.pid}`);
    rmSync(uapiSocketPath(runtime.ifname), { force: true });
    if (await linkExists(runtime.ifname, runtime.netns)) {
      await run("ip", [
        ...(runtime.netns === undefined ? [] : ["-n", runtime.netns]),
        "link",
        "del",
        "dev",
        runtime.ifname,
      ]);
      if (await linkExists(runtime.ifname, runtime.netns)) left.push(`device ${runtime.ifname}`);
    }
  }
  rmSync(runtime.workDir, { recursive: true, force: true });
  return left;
}

export class WireGuardSpare {
  readonly runtime: EngineRuntime;
  #proc: EngineProcess | null = null;
  #adopted = false;
  #stopped = false;
  #abort = new AbortController();

  private constructor(runtime: EngineRuntime) {
    this.runtime = runtime;
  }

  /** Starts a spare; on any failure or abort everything it started is removed before the error is thrown. */
  static async launch(runtime: EngineRuntime, deadlineAt: number, signal?: AbortSignal): Promise<WireGuardSpare> {
    const s = new WireGuardSpare(runtime);
    const onAbort = (): void => {
      s.#abort.abort();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted === true) onAbort();
    try {
      await claimDeviceName(runtime, deadlineAt, s.#abort.signal);
      if (s.#abort.signal.aborted) throw new SpareError("cancelled", "cancelled before wireguard-go was started");
      s.#proc = spawnWireGuardGo(runtime);
      await waitDeviceReady(runtime, s.#proc, deadlineAt, s.#abort.signal);
      return s;
    } catch (e) {
      await s.stop();
      throw e;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Ready to be adopted: started, its process running, and neither adopted nor stopped. */
  get usable(): boolean {
    return !this.#adopted && !this.#stopped && this.#proc?.running === true;
  }

  get pid(): number | null {
    return this.#proc?.pid ?? null;
  }

  /** Hands the process (and with it the device, socket and work folder) to the caller; only once, only if usable. */
  adopt(): EngineProcess {
    const proc = this.#proc;
    if (!this.usable || proc === null)
      throw new Error(
        `spare ${this.runtime.ifname} cannot be adopted (${this.#adopted ? "already adopted" : "not running"})`,
      );
    this.#adopted = true;
    return proc;
  }

  /** Removes the spare unless adopted (then it is the adopter's). Idempotent. */
  async stop(): Promise<void> {
    if (this.#adopted) return;
    this.#abort.abort();
    if (this.#stopped) return;
    this.#stopped = true;
    const left = await removeWireGuardGo(this.runtime, this.#proc);
    if (left.length > 0) throw new Error(`WireGuard spare ${this.runtime.ifname} could not remove: ${left.join(", ")}`);
  }
}
