/**
 * The one place detourd's telemetry is made: from the effective configuration (nothing without a collector),
 * labelled with the effective policy's hash, at start-up and again when a policy change alters the telemetry
 * settings. The hash is always taken the same way, over the effective configuration, so the collector, status
 * and diagnostic bundles name a device's policy alike however it came about (file, preferences, managed policy).
 */
import { AtomicWriteError } from "../../shared/atomic-write.ts";
import type { DetourConfig } from "../../core/config/schema.ts";
import type { Logger } from "../log.ts";
import { loadSecret } from "../secrets.ts";
import { Telemetry, deviceIdIn, policyHash, type TelemetrySource } from "./telemetry.ts";

/** The effective policy's hash: which policy a device runs, without revealing it. */
export function effectivePolicyHash(config: DetourConfig): string {
  return policyHash(policyBytes(config));
}

function policyBytes(config: DetourConfig): string {
  return JSON.stringify(config);
}

export interface TelemetryFactoryOptions {
  stateDir: string;
  version: string;
  source: TelemetrySource;
  log: Logger;
}

/** The state folder cannot take a write (disk full, quota, read-only): not a configuration error. */
function isStateWriteFailure(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return err instanceof AtomicWriteError || code === "ENOSPC" || code === "EDQUOT" || code === "EROFS";
}

/** Telemetry for this configuration, or null when it names no collector. Throws on a token it cannot read. */
export function createTelemetry(config: DetourConfig, opts: TelemetryFactoryOptions): Telemetry | null {
  const tcfg = config.telemetry;
  if (tcfg === undefined) return null;
  return new Telemetry({
    config: tcfg,
    token: tcfg.token === undefined ? null : loadSecret(tcfg.token, "telemetry.token"),
    stateDir: opts.stateDir,
    version: opts.version,
    organisation: config.organisation,
    policyBytes: policyBytes(config),
    source: opts.source,
    log: opts.log,
  });
}

/** The daemon's telemetry: made at start-up, replaced when the configuration's telemetry settings change. */
export class TelemetryHandle {
  readonly #opts: TelemetryFactoryOptions;
  #current: Telemetry | null;

  constructor(config: DetourConfig, opts: TelemetryFactoryOptions) {
    this.#opts = opts;
    try {
      this.#current = createTelemetry(config, opts);
    } catch (err) {
      // A full (or read-only) state folder costs telemetry, never the tunnel: detourd starts without it and says
      // so (the failed write is counted in status). A token it cannot read is a configuration error and stops it.
      if (!isStateWriteFailure(err)) throw err;
      opts.log.error("telemetry is off: its state cannot be written", { err, stateDir: opts.stateDir });
      this.#current = null;
    }
  }

  /** Null when no collector is configured; the tunnel's numbers are still in status. */
  get current(): Telemetry | null {
    return this.#current;
  }

  /** This device's id: the telemetry's, or the one kept in the state folder. */
  deviceId(): string {
    return this.#current?.deviceId ?? deviceIdIn(this.#opts.stateDir);
  }

  /** The policy hash the collector hears (taken when telemetry started), else the configuration's. */
  policyHash(config: DetourConfig): string {
    return this.#current?.policyHash ?? effectivePolicyHash(config);
  }

  start(): void {
    this.#current?.start();
  }

  /** A configuration whose telemetry settings changed: the old telemetry flushes and stops, a new one starts. */
  async restart(config: DetourConfig): Promise<void> {
    const old = this.#current;
    this.#current = null;
    await old?.shutdown();
    if (config.telemetry === undefined) return;
    try {
      this.#current = createTelemetry(config, this.#opts);
      this.#current?.start();
      this.#opts.log.info("telemetry restarted for the new configuration", { endpoint: config.telemetry.endpoint });
    } catch (err) {
      this.#opts.log.error("telemetry could not start with the new configuration", { err });
    }
  }

  /** Flushes into the spool and stops; what was not delivered stays spooled for the next start. */
  async shutdown(): Promise<void> {
    await this.#current?.shutdown();
  }
}
