/**
 * Device health for telemetry (CPU, memory and disk use, interfaces with an address), sampled in the background
 * and read synchronously by the metric callbacks, so a slow probe of the host never delays an export.
 *
 * systeminformation runs here inside the root daemon, so it is held to three rules:
 *   - Only functions that take no outside input: currentLoad(), mem() and fsSize() with no argument. Its
 *     functions that take a host, URL, service, process or interface name (inetLatency, inetChecksite, services,
 *     processLoad, networkStats(iface), ...) or that parse names other people choose (wifiNetworks,
 *     wifiConnections: access points' SSIDs) interpolate them into shell commands, the source of its past
 *     command-injection advisories; none of them is called anywhere in detourd.
 *   - Each call is bounded by withTimeout (df can hang on a dead network mount). A timeout cannot interrupt
 *     synchronous work, so functions that run shell commands synchronously are left out: networkInterfaces()
 *     runs several per interface (sysfs reads through a shell, nmcli), which stalled the event loop for 100-200 ms
 *     in the lab. Interfaces come from Node's own os.networkInterfaces() instead. currentLoad() and fsSize()
 *     still read /proc/stat and /proc/mounts through one short synchronous shell each (~10-20 ms).
 *   - Never on the connect or failover path: a round is skipped while the connection is resolving, racing or
 *     failing over, when those milliseconds belong to the race and the probes; the next round comes an interval
 *     later. Nothing on the connect or failover path calls into this module.
 * The diagnostic bundle (../diag/host.ts) follows the same rules, on request only.
 */
import { networkInterfaces } from "node:os";
import si from "systeminformation";
import { withTimeout } from "../../shared/with-timeout.ts";

export interface HostFacts {
  at: number;
  cpuPct: number | null;
  memoryPct: number | null;
  /** The fullest mounted filesystem: the one that stops a device first. */
  diskPct: number | null;
  /** Interfaces other than loopback with at least one address: how many ways out the device has. */
  interfacesUp: number | null;
}

/** systeminformation shells out for some facts; this bounds each of them. */
export const HOST_SAMPLE_TIMEOUT_MS = 5000;

/** Connection states during which a sampling round is skipped (see the module comment). */
export const HOST_SAMPLE_QUIET_STATES: ReadonlySet<string> = new Set(["resolving", "racing", "failing-over"]);

/** One sample of the host; facts that cannot be read are null rather than an error. */
export async function sampleHost(): Promise<HostFacts> {
  const [load, mem, fs] = await Promise.all([
    withTimeout(() => si.currentLoad(), HOST_SAMPLE_TIMEOUT_MS, "systeminformation currentLoad").catch(() => null),
    withTimeout(() => si.mem(), HOST_SAMPLE_TIMEOUT_MS, "systeminformation mem").catch(() => null),
    withTimeout(() => si.fsSize(), HOST_SAMPLE_TIMEOUT_MS, "systeminformation fsSize").catch(() => null),
  ]);
  const disks = (fs ?? []).filter((d) => d.size > 0);
  return {
    at: Date.now(),
    cpuPct: load === null ? null : load.currentLoad,
    memoryPct: mem === null || mem.total === 0 ? null : (100 * mem.active) / mem.total,
    diskPct: disks.length === 0 ? null : Math.max(...disks.map((d) => d.use)),
    interfacesUp: addressedInterfaces(),
  };
}

function addressedInterfaces(): number | null {
  try {
    return Object.values(networkInterfaces()).filter((addrs) => addrs?.some((a) => !a.internal) === true).length;
  } catch {
    return null;
  }
}

/** Keeps the latest sample fresh every `intervalMs`; `latest()` never waits. */
export class HostSampler {
  #latest: HostFacts | null = null;
  #timer: NodeJS.Timeout | null = null;
  #busy = false;

  /** `quiet()` says when a round must not run: the connection is resolving, racing or failing over. */
  start(intervalMs: number, quiet: () => boolean = () => false): void {
    const tick = (): void => {
      if (this.#busy || quiet()) return;
      this.#busy = true;
      void sampleHost()
        .then((f) => {
          this.#latest = f;
        })
        .finally(() => {
          this.#busy = false;
        });
    };
    // The first round comes an interval after start, so a connect at start-up (--connect, the app's connect on
    // launch) runs without it.
    this.#timer = setInterval(tick, intervalMs);
    this.#timer.unref();
  }

  latest(): HostFacts | null {
    return this.#latest;
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}
