/**
 * The network memory: which network the device is on (the platform's hashed key, looked up in the background)
 * and which leg won a connect on it, kept in the state folder so the next race on that network starts with it.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomicSync } from "../shared/atomic-write.ts";
import { emptyMemory, parseMemory, recall, remember, type NetworkMemory } from "../core/connection/network-memory.ts";
import type { LegKind, RaceRecord } from "../core/connection/types.ts";
import type { PlatformNetwork } from "../../native/platform/platform.ts";
import type { Clock, Timer } from "./clock.ts";
import type { Logger } from "./log.ts";

/** The network's key is two `ip` calls and a file read; a connect waits for a lookup in flight at most this long. */
export const NETWORK_KEY_WAIT_MS = 200;

export interface NetworkMemoryHost {
  /** An address beyond the local network (a gateway's), or null when none is known. */
  towards(): string | null;
  /** The resolv.conf that describes the network (the original while Detour's is in force). */
  resolvConf(): string;
  /** What won on the current network (null: nothing known); the machine races it first. */
  onRecall(leg: { gateway: string; kind: LegKind } | null): void;
  log: Logger;
}

export class NetworkMemoryStore {
  readonly #host: NetworkMemoryHost;
  readonly #network: PlatformNetwork;
  readonly #clock: Clock;
  readonly #path: string;
  #memory: NetworkMemory = emptyMemory();
  /** The current network's key; refreshed in the background, read at connect. */
  #key: string | null = null;
  #pending: Promise<void> | null = null;
  /** Cuts the running lookup's path probe short when a connect arrives (its kill switch would block the echo). */
  #pathProbeAbort: AbortController | null = null;

  constructor(stateDir: string, host: NetworkMemoryHost, network: PlatformNetwork, clock: Clock) {
    this.#host = host;
    this.#network = network;
    this.#clock = clock;
    this.#path = join(stateDir, "network-memory.json");
    try {
      this.#memory = existsSync(this.#path) ? parseMemory(JSON.parse(readFileSync(this.#path, "utf8"))) : emptyMemory();
    } catch {
      this.#memory = emptyMemory();
    }
  }

  /** Which network this is, so the race can start with what won here last time; after `after` settles when given. */
  refresh(after?: Promise<void>): Promise<void> {
    // After a disconnect, once its route changes are done: its resolv.conf restore must not be read half done.
    const p = (after ?? Promise.resolve())
      .then(() => this.#lookUp())
      .finally(() => {
        if (this.#pending === p) this.#pending = null;
      });
    this.#pending = p;
    return p;
  }

  /**
   * Before a connect: a lookup still under way (just started, or just disconnected) is worth a few milliseconds,
   * never more than NETWORK_KEY_WAIT_MS; its path probe's echo would meet the kill switch just put in force, so
   * the key goes without it this time.
   */
  async settleForConnect(): Promise<void> {
    const pending = this.#pending;
    this.#pathProbeAbort?.abort();
    if (pending === null) return;
    let timer: Timer | undefined;
    await Promise.race([pending, new Promise<void>((r) => (timer = this.#clock.after(NETWORK_KEY_WAIT_MS, r)))]);
    timer?.cancel();
  }

  /** A race ended: a connect's winner is remembered for this network. */
  remember(race: RaceRecord): void {
    const key = this.#key;
    // Only what won a connect says something about the network; failover and recover races are about gateways.
    if (key === null || race.winner === null || (race.reason !== "connect" && race.reason !== "retry")) return;
    this.#memory = remember(
      this.#memory,
      key,
      { gateway: race.winner.gateway, kind: race.winner.kind },
      this.#clock.wall(),
    );
    this.#host.onRecall(recall(this.#memory, key));
    try {
      writeFileAtomicSync(this.#path, JSON.stringify(this.#memory) + "\n", { mode: 0o600 });
    } catch (err) {
      this.#host.log.warn("could not store the network memory", { err });
    }
  }

  /** The current network's key and what won on it, for status and diagnostics. */
  network(): { id: string | null; remembered: { gateway: string; kind: string } | null } {
    return { id: this.#key, remembered: this.#key === null ? null : recall(this.#memory, this.#key) };
  }

  async #lookUp(): Promise<void> {
    const towards = this.#host.towards();
    if (towards === null) return;
    try {
      const ac = new AbortController();
      this.#pathProbeAbort = ac;
      const key = await this.#network
        .networkId({ towards, resolvConf: this.#host.resolvConf(), signal: ac.signal })
        .finally(() => {
          if (this.#pathProbeAbort === ac) this.#pathProbeAbort = null;
        });
      if (key !== this.#key) this.#host.log.info("network identified", { key, remembered: recall(this.#memory, key) });
      this.#key = key;
      this.#host.onRecall(recall(this.#memory, key));
    } catch (err) {
      this.#host.log.warn("could not identify the network", { err });
    }
  }
}
