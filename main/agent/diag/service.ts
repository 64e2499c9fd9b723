/**
 * detourd's diagnostics: answers the control API's `diag` (write a bundle) and `diag-upload` (deliver the latest
 * bundle to the collector and/or the SFTP drop). One bundle is built at a time; a second request meanwhile
 * waits for the same one rather than doubling the work.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { DetourConfig } from "../../core/config/schema.ts";
import type { DiagPayload, DiagUploadPayload } from "../../core/protocol/messages.ts";
import type { Logger } from "../log.ts";
import { loadSecret } from "../secrets.ts";
import type { Post } from "../telemetry/sender.ts";
import { createBundle, type BundleResult, type DiagInputs } from "./bundle.ts";
import type { LogTail } from "./log-tail.ts";
import { uploadToCollector, uploadToSftp, type RetryOptions, type UploadResult } from "./upload.ts";

export interface DiagServiceOptions {
  config: DetourConfig;
  stateDir: string;
  inputs(): Omit<DiagInputs, "logTail" | "logFile">;
  logTail: LogTail;
  logFile?: string;
  log: Logger;
  /** Tests inject the collector transport and a fast retry clock. */
  post?: Post;
  retry?: RetryOptions;
}

/** Where bundles go unless the configuration names a folder. */
export function bundleDir(config: DetourConfig, stateDir: string): string {
  return config.diagnostics?.dir ?? join(stateDir, "diag");
}

export class DiagService {
  readonly #opts: DiagServiceOptions;
  #building: Promise<BundleResult> | null = null;
  #latest: BundleResult | null = null;

  constructor(opts: DiagServiceOptions) {
    this.#opts = opts;
  }

  async create(): Promise<DiagPayload> {
    this.#building ??= (async () => {
      try {
        const o = this.#opts;
        const r = await createBundle(
          { ...o.inputs(), logTail: o.logTail.text(), ...(o.logFile === undefined ? {} : { logFile: o.logFile }) },
          { dir: bundleDir(o.config, o.stateDir), maxLogBytes: o.config.diagnostics?.maxLogBytes ?? 4 * 1024 * 1024 },
        );
        this.#latest = r;
        o.log.info("diagnostic bundle written", {
          path: r.path,
          bytes: r.bytes,
          files: r.files,
          ms: r.tookMs,
          removed: r.redactions.removed,
          pseudonymised: r.redactions.pseudonymised,
        });
        return r;
      } finally {
        this.#building = null;
      }
    })();
    const r = await this.#building;
    return {
      path: r.path,
      bytes: r.bytes,
      sha256: r.sha256,
      files: r.files,
      tookMs: r.tookMs,
      redactions: { removed: r.redactions.removed, pseudonymised: r.redactions.pseudonymised },
    };
  }

  /** Uploads the latest bundle (writing one first if there is none) to every configured destination. */
  async upload(): Promise<DiagUploadPayload> {
    const o = this.#opts;
    const path =
      this.#latest !== null && existsSync(this.#latest.path) ? this.#latest.path : (await this.create()).path;
    const uploads: UploadResult[] = [];
    const tcfg = o.config.telemetry;
    const sftp = o.config.diagnostics?.sftp;
    if (tcfg === undefined && sftp === undefined)
      throw new Error("no destination configured: set telemetry.endpoint (the collector) or diagnostics.sftp");
    const inputs = o.inputs();
    if (tcfg !== undefined) {
      const token = tcfg.token === undefined ? null : loadSecret(tcfg.token, "telemetry.token");
      uploads.push(
        await uploadToCollector(
          path,
          {
            endpoint: tcfg.endpoint,
            token,
            deviceId: inputs.deviceId,
            ...(o.post === undefined ? {} : { post: o.post }),
          },
          o.retry,
        ),
      );
    }
    if (sftp !== undefined) {
      const privateKey = loadSecret(sftp.privateKey, "diagnostics.sftp.privateKey");
      uploads.push(await uploadToSftp(path, { ...sftp, privateKey }, o.retry));
    }
    for (const u of uploads) {
      if (u.ok)
        o.log.info("diagnostic bundle uploaded", { target: u.target, attempts: u.attempts, location: u.location });
      else o.log.warn("diagnostic bundle upload failed", { target: u.target, attempts: u.attempts, error: u.error });
    }
    return { path, uploads };
  }
}
