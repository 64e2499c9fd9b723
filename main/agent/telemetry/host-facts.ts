/**
 * Device health from systeminformation (CPU, memory and disk use, interfaces), sampled in the background and
 * read synchronously by the metric callbacks, so a slow probe of the host never delays an export.
 */
import si from "systeminformation";
import { withTimeout } from "../../shared/with-timeout.ts";

export interface HostFacts {
  at: number;
  cpuPct: number | null;
  memoryPct: number | null;
  /** The fullest mounted filesystem: the one that stops a device first. */
  diskPct: number | null;
  interfacesUp: number | null;
  interfaces: { name: string; up: boolean; mac: string; ipv4: string; ipv6: string; virtual: boolean }[];
}

/** systeminformation shells out for some facts; this bounds one sampling round. */
export const HOST_SAMPLE_TIMEOUT_MS = 5000;

/** One sample of the host; facts that cannot be read are null rather than an error. */
export async function sampleHost(): Promise<HostFacts> {
  const [load, mem, fs, ifs] = await Promise.all([
    withTimeout(si.currentLoad(), HOST_SAMPLE_TIMEOUT_MS, "systeminformation currentLoad").catch(() => null),
    withTimeout(si.mem(), HOST_SAMPLE_TIMEOUT_MS, "systeminformation mem").catch(() => null),
    withTimeout(si.fsSize(), HOST_SAMPLE_TIMEOUT_MS, "systeminformation fsSize").catch(() => null),
    withTimeout(si.networkInterfaces(), HOST_SAMPLE_TIMEOUT_MS, "systeminformation networkInterfaces").catch(() => null),
  ]);
  const list = ifs === null ? [] : Array.isArray(ifs) ? ifs : [ifs];
  const disks = (fs ?? []).filter((d) => d.size > 0);
  return {
    at: Date.now(),
    cpuPct: load === null ? null : load.currentLoad,
    memoryPct: mem === null || mem.total === 0 ? null : (100 * mem.active) / mem.total,
    diskPct: disks.length === 0 ? null : Math.max(...disks.map((d) => d.use)),
    interfacesUp: ifs === null ? null : list.filter((i) => i.operstate === "up").length,
    interfaces: list.map((i) => ({ name: i.iface, up: i.operstate === "up", mac: i.mac, ipv4: i.ip4, ipv6: i.ip6, virtual: i.virtual })),
  };
}

/** Keeps the latest sample fresh every `intervalMs`; `latest()` never waits. */
export class HostSampler {
  #latest: HostFacts | null = null;
  #timer: NodeJS.Timeout | null = null;
  #busy = false;

  start(intervalMs: number): void {
    const tick = (): void => {
      if (this.#busy) return;
      this.#busy = true;
      void sampleHost()
        .then((f) => {
          this.#latest = f;
        })
        .finally(() => {
          this.#busy = false;
        });
    };
    tick();
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
