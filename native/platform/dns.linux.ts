/**
 * DNS for the tunnel through resolv.conf: the winner's resolvers go in while connected, the original comes back
 * on disconnect. The original is saved to a file first (replaced whole, so a crash never leaves half of it to
 * restore), and a crashed daemon restores it on its next start, after checking it is a resolv.conf at all. resolv.conf itself is written in place (never
 * renamed over), because in a network namespace or a container /etc/resolv.conf is a bind mount.
 */
import {
  existsSync,
  lstatSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
  type FSWatcher,
} from "node:fs";
import { ipFamily } from "../../main/core/ip-address.ts";
import { AtomicWriteError, writeFileAtomicSync, type AtomicFs } from "../../main/shared/atomic-write.ts";

export interface DnsSettings {
  servers: string[];
  searchDomains: string[];
}

export interface DnsTarget {
  /** The resolv.conf to manage (/etc/resolv.conf in production). */
  path: string;
  /** Where the original is kept while Detour's is in force. */
  backupPath: string;
}

const HEADER = "# Written by detourd while the tunnel is up; the original is restored on disconnect.";
/** glibc reads at most three nameserver lines. */
const MAX_SERVERS = 3;

export class DnsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DnsError";
  }
}

/**
 * reassertDns put the tunnel's resolvers back, but the network's newer resolv.conf could not be saved as the original
 * (a full or failing state disk): the older saved original stays whole and is what a disconnect restores.
 */
export class DnsBackupError extends DnsError {
  /** The tunnel's resolv.conf is in force again all the same (the caller counts the reassertion). */
  readonly reasserted = true;
  /** The system's error code of the failed write (ENOSPC, EROFS, EIO, ...), when there is one. */
  readonly code: string | undefined;
  constructor(message: string, cause: unknown) {
    super(message);
    this.name = "DnsBackupError";
    this.code = cause instanceof AtomicWriteError ? cause.code : undefined;
    this.cause = cause;
  }
}

export function renderResolvConf(s: DnsSettings): string {
  const lines = [HEADER, ...s.servers.slice(0, MAX_SERVERS).map((a) => `nameserver ${a}`)];
  if (s.searchDomains.length > 0) lines.push(`search ${s.searchDomains.join(" ")}`);
  return lines.join("\n") + "\n";
}

/** Puts the tunnel's resolvers in force; safe to repeat (the first original stays saved). */
export function applyDns(s: DnsSettings, t: DnsTarget): void {
  if (s.servers.length === 0) return;
  const bad = s.servers.filter((a) => ipFamily(a) === null);
  if (bad.length > 0) throw new DnsError(`refusing DNS servers that are not IP addresses: ${bad.join(", ")}`);
  if (s.searchDomains.some((d) => !/^[a-z0-9.-]{1,253}$/i.test(d)))
    throw new DnsError(`refusing search domains that are not host names: ${s.searchDomains.join(", ")}`);
  if (existsSync(t.path) && lstatSync(t.path).isSymbolicLink()) {
    throw new DnsError(
      `${t.path} is a symbolic link (systemd-resolved or resolvconf manages it); detourd leaves it alone`,
    );
  }
  if (!existsSync(t.backupPath)) {
    writeFileAtomicSync(t.backupPath, existsSync(t.path) ? readFileSync(t.path, "utf8") : "");
  }
  writeFileSync(t.path, renderResolvConf(s));
}

/** A resolv.conf is a few hundred bytes; a backup past this is not one (a corrupted or planted file). */
export const MAX_BACKUP_BYTES = 64 * 1024;
/** glibc ignores longer lines; one this long in a backup is garbage. */
const MAX_LINE_CHARS = 1024;
const DIRECTIVES = new Set(["nameserver", "search", "domain", "options", "sortlist"]);
const IPV4_RE = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6_RE = /^[0-9a-f:.]{2,45}(%[A-Za-z0-9._-]{1,15})?$/i;

/**
 * Why a saved resolv.conf must not be put back as it is, or null when it may: too big, not text, a line that is not
 * a resolv.conf directive (a truncated write, garbage), a nameserver that is not an address, or Detour's own file.
 */
export function backupProblem(bytes: Buffer): string | null {
  if (bytes.length > MAX_BACKUP_BYTES)
    return `it is ${String(bytes.length)} bytes, more than ${String(MAX_BACKUP_BYTES)}`;
  const text = bytes.toString("utf8");
  if (Buffer.compare(Buffer.from(text, "utf8"), bytes) !== 0) return "it is not UTF-8 text";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(text)) return "it holds control characters";
  if (text.startsWith(HEADER)) return "it is detourd's own resolv.conf, not the original";
  const lines = text.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const where = `line ${String(i + 1)}`;
    if (line.length > MAX_LINE_CHARS) return `${where} is longer than ${String(MAX_LINE_CHARS)} characters`;
    const [word, ...args] = line.split(/\s+/);
    if (word === undefined || !DIRECTIVES.has(word))
      return `${where} is not a resolv.conf directive: ${line.slice(0, 60)}`;
    if (args.length === 0) return `${where} (${word}) has no value`;
    const server = args[0] ?? "";
    if (word === "nameserver" && !(IPV4_RE.test(server) || (server.includes(":") && IPV6_RE.test(server))))
      return `${where} names a server that is not an address: ${server.slice(0, 60)}`;
  }
  return null;
}

/** What detourd writes when the original cannot be restored: no resolvers (nothing leaves in clear), and why. */
function unrestoredResolvConf(why: string): string {
  return `# detourd could not restore the original resolv.conf (${why.replace(/\s+/g, " ").slice(0, 200)}).\n# No resolvers are set; the network's configuration (DHCP, NetworkManager) will write them again.\n`;
}

/**
 * Puts the original back if Detour's is in force; a no-op otherwise (also after a crash and restart). A backup
 * that fails backupProblem is not restored: it is kept aside as `<backup>.rejected` for diagnosis, resolv.conf gets
 * no resolvers at all (the tunnel's are unreachable now, and a damaged file's are unknown), and a DnsError says why.
 */
export function restoreDns(t: DnsTarget): boolean {
  if (!existsSync(t.backupPath)) return false;
  const size = statSync(t.backupPath).size;
  const bytes = size > MAX_BACKUP_BYTES ? null : readFileSync(t.backupPath);
  const problem =
    bytes === null ? `it is ${String(size)} bytes, more than ${String(MAX_BACKUP_BYTES)}` : backupProblem(bytes);
  if (problem !== null || bytes === null) {
    const why = problem ?? "unreadable";
    writeFileSync(t.path, unrestoredResolvConf(why));
    renameSync(t.backupPath, `${t.backupPath}.rejected`);
    throw new DnsError(
      `the saved resolv.conf ${t.backupPath} was not restored: ${why}; ${t.path} now has no resolvers`,
    );
  }
  writeFileSync(t.path, bytes);
  rmSync(t.backupPath, { force: true });
  return true;
}

/**
 * Puts the tunnel's resolv.conf back when other software (a network manager, a DHCP client) replaced it while the
 * tunnel is up. The replacement is that software's newest view of the network: it becomes the saved original (if it
 * is a valid resolv.conf), so that a disconnect restores it rather than an older one. Returns whether it rewrote
 * the file; throws a DnsError when the file became a symbolic link (another manager took it over), and a
 * DnsBackupError, after rewriting it, when the newer original could not be saved.
 */
export function reassertDns(s: DnsSettings, t: DnsTarget, opts: { fs?: AtomicFs } = {}): boolean {
  if (s.servers.length === 0) return false;
  const want = renderResolvConf(s);
  let now: Buffer | null = null;
  try {
    now = statSync(t.path).size > MAX_BACKUP_BYTES ? null : readFileSync(t.path);
  } catch {
    now = null;
  }
  if (now?.toString("utf8") === want) return false;
  if (existsSync(t.path) && lstatSync(t.path).isSymbolicLink())
    throw new DnsError(`${t.path} became a symbolic link (another resolver manager took it over); not rewritten`);
  let backupFailure: unknown = null;
  if (now !== null && now.length > 0 && backupProblem(now) === null)
    try {
      writeFileAtomicSync(t.backupPath, now, opts.fs === undefined ? {} : { fs: opts.fs });
    } catch (e) {
      backupFailure = e;
    }
  // The tunnel's resolvers go back even without the newer original saved: leaving the network's in force would send
  // every lookup, intranet names included, in clear to the local network.
  writeFileSync(t.path, want);
  if (backupFailure !== null)
    throw new DnsBackupError(
      `the tunnel's resolvers are back in ${t.path}, but the network's newer resolv.conf could not be saved to ${t.backupPath} (${backupFailure instanceof Error ? backupFailure.message : "unknown error"}); a disconnect restores the older saved original`,
      backupFailure,
    );
  return true;
}

/** Re-arming a watch after the file was replaced by a rename: a few tries, a moment apart. */
const REARM_TRIES = 20;
const REARM_MS = 50;

/**
 * Calls `changed` when resolv.conf is written or replaced (inotify on the file; a rename over it re-arms the watch
 * on the new file). Returns the stop function. A watch that cannot be armed calls nothing: the caller's periodic
 * check still notices a rewrite.
 */
export function watchDns(t: DnsTarget, changed: () => void): () => void {
  let watcher: FSWatcher | null = null;
  let stopped = false;
  let rearm: NodeJS.Timeout | null = null;
  const arm = (triesLeft: number): void => {
    rearm = null;
    if (stopped) return;
    try {
      watcher = watch(t.path, { persistent: false }, (event) => {
        changed();
        if (event === "rename") {
          watcher?.close();
          watcher = null;
          arm(REARM_TRIES);
        }
      });
      watcher.on("error", () => {
        watcher?.close();
        watcher = null;
      });
    } catch {
      watcher = null;
      if (triesLeft > 0)
        rearm = setTimeout(() => {
          arm(triesLeft - 1);
        }, REARM_MS);
    }
  };
  arm(REARM_TRIES);
  return () => {
    stopped = true;
    if (rearm !== null) clearTimeout(rearm);
    watcher?.close();
    watcher = null;
  };
}
