/**
 * Replaces a small state file so that a crash, a power cut or a full disk leaves either the old content or the
 * new, never a torn or empty file: the data goes to a temporary file in the same folder, is fsynced, renamed over
 * the target (atomic within one file system), and then the folder is fsynced so the rename itself survives a
 * power cut. Every state file Detour keeps (the telemetry spool, the policy in force, preferences, the device id,
 * the resolv.conf backup) is written this way.
 *
 * A failure throws an AtomicWriteError naming the target and keeping the system's code (ENOSPC, EACCES, ...); the
 * target is then untouched and the temporary file removed. Only a crash in the middle can leave a temporary file
 * behind: hidden, named `.<name>.<pid>.tmp`, and never read as state.
 */
import * as nodeFs from "node:fs";
import { basename, dirname, join } from "node:path";

/** The calls the write makes; tests put faults in them. */
export type AtomicFs = Pick<
  typeof nodeFs,
  "openSync" | "writeSync" | "fsyncSync" | "closeSync" | "renameSync" | "rmSync"
>;

export interface AtomicWriteOptions {
  /** Permission bits of the file (the umask still applies); state files are private by default. */
  mode?: number;
  fs?: AtomicFs;
}

export class AtomicWriteError extends Error {
  override readonly name = "AtomicWriteError";
  /** The system's error code (ENOSPC, EACCES, EROFS, ...), when there is one. */
  readonly code: string | undefined;
  constructor(
    readonly path: string,
    cause: unknown,
  ) {
    super(`cannot write ${path}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.code = (cause as NodeJS.ErrnoException | null)?.code;
  }
}

/**
 * Every failed write in this process, whoever the writer: the daemon shows them in status, so a full disk is a
 * reported error even where the writer itself only logs it (each writer still handles its own error).
 */
const failures = { count: 0, last: null as string | null };

/** How many state writes failed since start, and the last one's message. */
export function atomicWriteFailures(): { stateWriteFailures: number; lastStateWriteError: string | null } {
  return { stateWriteFailures: failures.count, lastStateWriteError: failures.last };
}

function failed(path: string, cause: unknown): AtomicWriteError {
  const e = new AtomicWriteError(path, cause);
  failures.count += 1;
  failures.last = e.message.slice(0, 500);
  return e;
}

/** Folder fsync is refused on some file systems (and cannot be opened on Windows); the rename is done all the same. */
const DIR_FSYNC_UNSUPPORTED = new Set(["EINVAL", "ENOTSUP", "EOPNOTSUPP", "EISDIR", "EPERM", "EACCES"]);

/** Replaces `path` with `data` as described above; the folder must exist. */
export function writeFileAtomicSync(path: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  const fs = opts.fs ?? nodeFs;
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`);
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  try {
    // A leftover of a crashed writer with the same pid would keep its own mode: start from nothing.
    fs.rmSync(tmp, { force: true });
    const fd = fs.openSync(tmp, "wx", opts.mode ?? 0o600);
    try {
      for (let off = 0; off < bytes.byteLength;) off += fs.writeSync(fd, bytes, off, bytes.byteLength - off);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
  } catch (e) {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // The write's own error is the one worth reporting.
    }
    throw failed(path, e);
  }
  syncFolder(fs, dir, path);
}

function syncFolder(fs: AtomicFs, dir: string, path: string): void {
  if (process.platform === "win32") return;
  let fd: number;
  try {
    fd = fs.openSync(dir, "r");
  } catch (e) {
    if (DIR_FSYNC_UNSUPPORTED.has((e as NodeJS.ErrnoException).code ?? "")) return;
    throw failed(path, e);
  }
  try {
    fs.fsyncSync(fd);
  } catch (e) {
    if (!DIR_FSYNC_UNSUPPORTED.has((e as NodeJS.ErrnoException).code ?? "")) throw failed(path, e);
  } finally {
    fs.closeSync(fd);
  }
}
