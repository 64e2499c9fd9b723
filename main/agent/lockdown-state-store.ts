/**
 * Keeps the persisted lockdown state (main/core/lockdown-state.ts) equal to the effective configuration: written
 * atomically with fsync whenever lockdown or the protected networks change, so the early-boot step finds what
 * was last in force even after a power cut. A failed write is reported in `detour status`, never only logged:
 * the next boot would not be protected before detourd starts. It also shows what the early step did this boot
 * (its report beside the state), so a block that failed at boot is seen in `detour status` too.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import {
  EARLY_BLOCK_REPORT_FILE,
  earlyBlockOfThisBoot,
  encodeLockdownState,
  type LockdownState,
  type LockdownStateReport,
  type StateRead,
} from "../core/lockdown-state.ts";
import { writeFileAtomicSync } from "../shared/atomic-write.ts";
import type { Logger } from "./log.ts";

export class LockdownStateStore {
  readonly #path: string;
  readonly #log: Logger;
  readonly #write: (path: string, text: string) => void;
  /** The file's content as last written or found. */
  #text: string | null;
  #recorded: boolean | null = null;
  #error: string | null = null;
  readonly #bootBlock: LockdownStateReport["bootBlock"];

  constructor(path: string, log: Logger, opts: { write?: (path: string, text: string) => void; bootId?: string } = {}) {
    this.#path = path;
    this.#log = log;
    this.#write = opts.write ?? writeFileAtomicSync;
    const found = readLockdownState(path);
    this.#text = found.kind === "text" ? found.text : null;
    const report = readLockdownState(join(dirname(path), EARLY_BLOCK_REPORT_FILE));
    const mine = earlyBlockOfThisBoot(report.kind === "text" ? report.text : null, opts.bootId ?? currentBootId());
    this.#bootBlock =
      mine === null ? null : { at: mine.at, action: mine.action, reason: mine.reason, failClosed: mine.failClosed };
    if (mine?.action === "failed")
      log.error("the early-boot block failed this boot; the host was not blocked before detourd started", {
        reason: mine.reason,
      });
    else if (mine !== null) log.info("early-boot block this boot", { action: mine.action, reason: mine.reason });
  }

  /** Records `s` unless the file already holds exactly it. Never throws: a failure is kept for status(). */
  record(s: LockdownState): void {
    const text = encodeLockdownState(s);
    if (text === this.#text && this.#error === null) {
      this.#recorded = s.lockdown;
      return;
    }
    try {
      this.#write(this.#path, text);
      this.#text = text;
      this.#recorded = s.lockdown;
      this.#error = null;
      this.#log.info("lockdown state recorded", { path: this.#path, lockdown: s.lockdown });
    } catch (err) {
      this.#error = err instanceof Error ? err.message : String(err);
      this.#log.error("cannot record the lockdown state; the next boot is not protected before detourd starts", {
        path: this.#path,
        lockdown: s.lockdown,
        err,
      });
    }
  }

  status(): LockdownStateReport {
    return { path: this.#path, lockdown: this.#recorded, error: this.#error, bootBlock: this.#bootBlock };
  }
}

/** The kernel's id of this boot; empty where there is none (then no report counts as this boot's). */
export function currentBootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "";
  }
}

/** Reads the state file as the early step sees it: its text, missing, or unreadable with the reason. */
export function readLockdownState(path: string): StateRead {
  try {
    return { kind: "text", text: readFileSync(path, "utf8") };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { kind: "missing" };
    return { kind: "unreadable", reason: code ?? (e as Error).message };
  }
}
