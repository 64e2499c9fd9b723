/**
 * detourd's ownership record: what it has put on the host (engine PIDs with their /proc start time, tunnel devices,
 * routing rules and tables, nftables tables, the resolv.conf backup), kept in `<state>/owned.json` and rewritten
 * atomically with fsync as things are created (before they exist) and removed (after they are gone). At start,
 * takeOver() reads what a previous instance left there after a crash or kill -9, has the platform reclaim all of it,
 * and starts a fresh record; watch() then wraps the Platform so every creating call is noted as it happens.
 *
 * A stale entry costs nothing (reclaiming something that is gone is a no-op, and a process is only stopped while its
 * PID, start time and boot id all match); a missing one would leave debris, so entries are written first.
 *
 * A second copy goes to the runtime folder (`runtimeDir`, the engines' work folder: /run/detour/legs under systemd's
 * RuntimeDirectory, a tmpfs), so a full, read-only or failing state disk does not lose the connect intent: it only
 * matters until the next boot, which is exactly how long /run keeps it. A successor reads both and resumes if either
 * says so. While no copy carries a wanted connection, crash protection is reported as not in force (status, connect's
 * answer, an event and telemetry through onCrashProtection) and the write is retried with a bounded backoff.
 */
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import type {
  EngineProcessInfo,
  OwnedProcess,
  OwnedRule,
  OwnedState,
  Platform,
  PlatformDnsLinks,
  ReclaimReport,
} from "../../native/platform/platform.ts";
import type { CrashProtection } from "../core/protocol/messages.ts";
import { AtomicWriteError, writeFileAtomicSync, type AtomicFs } from "../shared/atomic-write.ts";
import { systemClock, type Clock, type Timer } from "./clock.ts";
import type { Logger } from "./log.ts";

export const OWNERSHIP_FILE = "owned.json";
/** A record lists a handful of processes, devices and rules; anything this big is not one of ours. */
export const OWNERSHIP_MAX_BYTES = 256 * 1024;
/** A failed write of a copy is tried again after this, doubling: a disk an admin frees is noticed within seconds. */
export const RECORD_RETRY_FIRST_MS = 1_000;
/** The backoff stops doubling here: a disk that stays full costs one small write attempt every half minute. */
export const RECORD_RETRY_MAX_MS = 30_000;
/** Symbolic nftables tables: the platform knows their real names. */
export type OwnedNftTable = "kill-switch" | "drill-block" | "mss-clamp";
const OWNED_NFT_TABLES: readonly string[] = ["kill-switch", "drill-block", "mss-clamp"] satisfies OwnedNftTable[];

interface RecordFile {
  version: 1;
  daemon: { pid: number; startTime: string | null; bootId: string | null };
  owned: OwnedState;
  resolvConfBackup: string | null;
  /**
   * The user (or policy) asked for a connection and has not asked to disconnect since: a successor after a crash
   * resumes it, with the kill switch held from its first moment (absent in older records: false).
   */
  connectIntent?: boolean;
}

/** What the start-up reclaim found and did, for status and the log. */
export interface ReclaimSummary {
  /** A record of a previous instance was found (null: none, a clean exit or a first start). */
  previousPid: number | null;
  removed: string[];
  failed: string[];
  /** The previous record could not be read (then only detourd's naming was reclaimed). */
  recordError: string | null;
  /** The previous instance held a connection the user had asked for when it died: the successor resumes it. */
  previousConnectIntent: boolean;
}

export class OwnershipError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OwnershipError";
  }
}

function emptyOwned(): OwnedState {
  return { processes: [], devices: [], rules: [], tables: [], nftTables: [] };
}

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;
const isStr = (v: unknown): v is string => typeof v === "string" && v.length <= 256;
const IFNAME_RE = /^[A-Za-z0-9._-]{1,15}$/;

/** Parses a record file; throws an OwnershipError naming what is wrong. */
export function parseRecord(text: string): RecordFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new OwnershipError(`not JSON: ${(e as Error).message}`);
  }
  const r = raw as Partial<RecordFile> | null;
  if (r === null || typeof r !== "object" || r.version !== 1) throw new OwnershipError("not a version 1 record");
  const d = r.daemon;
  if (d === undefined || !isInt(d.pid)) throw new OwnershipError("daemon.pid is missing");
  const o = r.owned;
  if (o === undefined || typeof o !== "object") throw new OwnershipError("owned is missing");
  const list = <T>(name: string, v: unknown, ok: (x: unknown) => x is T): T[] => {
    if (!Array.isArray(v)) throw new OwnershipError(`owned.${name} is not a list`);
    const bad: unknown = (v as unknown[]).find((x) => !ok(x));
    if (bad !== undefined) throw new OwnershipError(`owned.${name} holds ${JSON.stringify(bad).slice(0, 80)}`);
    return v as T[];
  };
  return {
    version: 1,
    daemon: {
      pid: d.pid,
      startTime: isStr(d.startTime) ? d.startTime : null,
      bootId: isStr(d.bootId) ? d.bootId : null,
    },
    owned: {
      processes: list("processes", o.processes, (x): x is OwnedProcess => {
        const p = x as OwnedProcess;
        return isInt(p.pid) && isStr(p.startTime) && isStr(p.bootId) && isStr(p.exe);
      }),
      devices: list("devices", o.devices, (x): x is string => typeof x === "string" && IFNAME_RE.test(x)),
      rules: list(
        "rules",
        o.rules,
        (x): x is OwnedRule => isInt((x as OwnedRule).pref) && isInt((x as OwnedRule).table),
      ),
      tables: list("tables", o.tables, isInt),
      nftTables: list(
        "nftTables",
        o.nftTables,
        (x): x is string => typeof x === "string" && OWNED_NFT_TABLES.includes(x),
      ),
      // Absent in records written before per-link DNS existed, and while none was set.
      ...(o.resolvedLinks === undefined
        ? {}
        : {
            resolvedLinks: list(
              "resolvedLinks",
              o.resolvedLinks,
              (x): x is string => typeof x === "string" && IFNAME_RE.test(x),
            ),
          }),
    },
    resolvConfBackup: isStr(r.resolvConfBackup) ? r.resolvConfBackup : null,
    connectIntent: r.connectIntent === true,
  };
}

/** The engine program of a spawn's argv (past `ip netns exec <ns>`), and the device it names, if any. */
export function describeSpawn(argv: readonly string[]): { exe: string; device: string | null } {
  const a = argv[0] === "ip" && argv[1] === "netns" && argv[2] === "exec" ? argv.slice(4) : argv;
  const exe = a[0] ?? "?";
  let device: string | null = null;
  const name = basename(exe);
  if (name === "wireguard-go") {
    const i = a.indexOf("-f");
    device = a[i >= 0 ? i + 1 : 1] ?? null;
  } else if (name === "openconnect") {
    device = a.find((x) => x.startsWith("--interface="))?.slice("--interface=".length) ?? null;
  }
  return { exe, device: device !== null && IFNAME_RE.test(device) ? device : null };
}

export interface OwnershipOptions {
  stateDir: string;
  /**
   * Where the second copy of the record goes (a tmpfs such as /run/detour, not the state disk); none when absent or
   * the same folder as stateDir.
   */
  runtimeDir?: string;
  /** Times the retries of failed writes (default: the system clock). */
  clock?: Clock;
  /**
   * The engines' work folder (--work-dir): a killed instance's leg and spare folders (configs, sockets, logs) are
   * removed once its processes are gone. Only entries named as detourd names them (engine-spec.ts, the spare pool).
   */
  workDir?: string;
  ifnamePrefix: string;
  platform: Platform;
  log: Logger;
  /** Tests inject write faults here. */
  fs?: AtomicFs;
}

export class OwnershipRecord {
  /** Every copy written, the state folder's first. */
  readonly #paths: string[];
  readonly #clock: Clock;
  /** Per copy: the connect intent its last successful write carried (null: none written yet), and its last failure. */
  readonly #copies = new Map<
    string,
    { intent: boolean | null; error: CrashProtection["failedCopies"][number] | null }
  >();
  #retries = 0;
  #retryDelayMs = RECORD_RETRY_FIRST_MS;
  #retryTimer: Timer | null = null;
  #nextRetryAt: number | null = null;
  #protectionListener: ((report: CrashProtection) => void) | null = null;
  #lastInForce = true;
  readonly #platform: Platform;
  readonly #log: Logger;
  readonly #fs: AtomicFs | undefined;
  readonly #owned: OwnedState = emptyOwned();
  readonly #procDevices = new Map<number, string>();
  #resolvConfBackup: string | null = null;
  #connectIntent = false;
  #unwatch: (() => void) | null = null;
  #flushScheduled = false;
  #closed = false;
  /** This daemon's own identity, the same for every write. */
  #self: { startTime: string; bootId: string } | null | undefined = undefined;
  /** Writes that failed (full disk, read-only state folder): reported in status. */
  writeFailures = 0;
  lastWriteError: string | null = null;
  readonly reclaimed: ReclaimSummary;

  private constructor(opts: OwnershipOptions, reclaimed: ReclaimSummary) {
    this.#paths = recordPaths(opts);
    for (const p of this.#paths) this.#copies.set(p, { intent: null, error: null });
    this.#clock = opts.clock ?? systemClock;
    this.#platform = opts.platform;
    this.#log = opts.log;
    this.#fs = opts.fs;
    this.reclaimed = reclaimed;
  }

  /**
   * Reads a previous instance's record, reclaims what it lists (and what detourd's naming says is its own), and
   * starts this instance's record. Throws an OwnershipError when the previous instance is still running.
   */
  static async takeOver(opts: OwnershipOptions): Promise<OwnershipRecord> {
    const summary: ReclaimSummary = {
      previousPid: null,
      removed: [],
      failed: [],
      recordError: null,
      previousConnectIntent: false,
    };
    let owned = emptyOwned();
    const recordErrors: string[] = [];
    // Both copies are read: the runtime one may be newer (the state disk was full) or the only one left.
    for (const path of recordPaths(opts)) {
      if (!existsSync(path)) continue;
      try {
        const size = statSync(path).size;
        if (size > OWNERSHIP_MAX_BYTES)
          throw new OwnershipError(`${String(size)} bytes, more than ${String(OWNERSHIP_MAX_BYTES)}`);
        const rec = parseRecord(readFileSync(path, "utf8"));
        summary.previousPid ??= rec.daemon.pid;
        // Resuming a connection the user had left is the safe side of a disagreement; leaving one unprotected is not.
        summary.previousConnectIntent ||= rec.connectIntent === true;
        const who = opts.platform.reclaim?.identify(rec.daemon.pid) ?? null;
        if (
          who !== null &&
          rec.daemon.pid !== process.pid &&
          who.startTime === rec.daemon.startTime &&
          who.bootId === rec.daemon.bootId
        )
          throw new OwnershipError(
            `detourd ${String(rec.daemon.pid)} still runs with state folder ${opts.stateDir}; stop it first`,
          );
        owned = mergeOwned(owned, rec.owned);
      } catch (e) {
        if (e instanceof OwnershipError && e.message.includes("still runs")) throw e;
        recordErrors.push(`${path}: ${(e as Error).message}`);
        opts.log.error("ownership record unreadable; reclaiming by detourd's naming only", { path, err: e });
      }
    }
    if (recordErrors.length > 0) summary.recordError = recordErrors.join("; ");
    const reclaim = opts.platform.reclaim;
    if (reclaim !== undefined) {
      const t0 = performance.now();
      let report: ReclaimReport;
      try {
        report = await reclaim.reclaim(owned, {
          ifnamePrefix: opts.ifnamePrefix,
          ...(opts.workDir === undefined ? {} : { workDir: opts.workDir }),
        });
      } catch (e) {
        report = { removed: [], failed: [`reclaim: ${(e as Error).message}`] };
      }
      summary.removed = report.removed;
      summary.failed = report.failed;
      if (report.removed.length > 0)
        opts.log.warn("reclaimed what a previous detourd left behind", {
          previousPid: summary.previousPid,
          removed: report.removed,
          tookMs: Math.round(performance.now() - t0),
        });
      if (report.failed.length > 0)
        opts.log.error("could not reclaim all a previous detourd left behind", { failed: report.failed });
    }
    if (opts.workDir !== undefined) removeWorkFolders(opts.workDir, summary);
    const rec = new OwnershipRecord(opts, summary);
    // Under lockdown the kill switch a crashed instance left stays until the data plane replaces it.
    if (owned.nftTables.includes("kill-switch")) rec.#owned.nftTables.push("kill-switch");
    rec.#write();
    return rec;
  }

  /** The platform as the daemon uses it: every call that creates something is noted first, every removal after. */
  watch(platform: Platform): Platform {
    this.#unwatch?.();
    this.#unwatch =
      platform.reclaim?.watchEngineProcesses({
        spawned: (p) => {
          this.#spawned(p);
        },
        exited: (p) => {
          this.#exited(p);
        },
      }) ?? null;
    const { routes, firewall, dns, mtu } = platform;
    return {
      ...platform,
      ...(mtu === undefined
        ? {}
        : {
            mtu: {
              ...mtu,
              applyMssClamp: async (devices) => {
                if (devices !== null)
                  this.#change(() => {
                    this.#add(this.#owned.nftTables, "mss-clamp");
                  });
                await mtu.applyMssClamp(devices);
                if (devices === null)
                  this.#changeSoon(() => {
                    this.#drop(this.#owned.nftTables, "mss-clamp");
                  });
              },
            },
          }),
      routes: {
        ...routes,
        installLegSource: async (s) => {
          this.#change(() => {
            this.#add(this.#owned.rules, { pref: s.pref, table: s.table }, sameRule);
            this.#add(this.#owned.tables, s.table);
          });
          await routes.installLegSource(s);
        },
        removeLegSource: async (s) => {
          await routes.removeLegSource(s);
          this.#changeSoon(() => {
            this.#drop(this.#owned.rules, { pref: s.pref, table: s.table }, sameRule);
            this.#drop(this.#owned.tables, s.table);
          });
        },
      },
      firewall: {
        ...firewall,
        applyKillSwitch: async (rules) => {
          if (rules !== null)
            this.#change(() => {
              this.#add(this.#owned.nftTables, "kill-switch");
            });
          await firewall.applyKillSwitch(rules);
          if (rules === null)
            this.#changeSoon(() => {
              this.#drop(this.#owned.nftTables, "kill-switch");
            });
        },
        drillBlock: {
          ...firewall.drillBlock,
          apply: async (gateway, endpoints) => {
            this.#change(() => {
              this.#add(this.#owned.nftTables, "drill-block");
            });
            await firewall.drillBlock.apply(gateway, endpoints);
          },
          remove: async () => {
            await firewall.drillBlock.remove();
            this.#changeSoon(() => {
              this.#drop(this.#owned.nftTables, "drill-block");
            });
          },
        },
      },
      dns: {
        // Everything else (reassert, watch) passes through: it neither creates nor removes the backup's record.
        ...dns,
        apply: (settings, files) => {
          if (this.#resolvConfBackup !== files.backupPath)
            this.#change(() => {
              this.#resolvConfBackup = files.backupPath;
            });
          dns.apply(settings, files);
        },
        restore: (files) => {
          const r = dns.restore(files);
          if (this.#resolvConfBackup !== null && !existsSync(files.backupPath))
            this.#changeSoon(() => {
              this.#resolvConfBackup = null;
            });
          return r;
        },
        ...(dns.links === undefined ? {} : { links: this.#watchLinks(dns.links) }),
      },
    };
  }

  /** resolved's per-link DNS: a link is listed before its settings go in, and dropped once they are reverted. */
  #watchLinks(links: PlatformDnsLinks): PlatformDnsLinks {
    const listed = (): string[] => (this.#owned.resolvedLinks ??= []);
    return {
      ...links,
      apply: async (ifname, settings) => {
        this.#change(() => {
          this.#add(listed(), ifname);
        });
        await links.apply(ifname, settings);
      },
      revert: async (ifname) => {
        const r = await links.revert(ifname);
        this.#changeSoon(() => {
          this.#drop(listed(), ifname);
        });
        return r;
      },
    };
  }

  /**
   * Records whether a connection is wanted (connect: true, the user's disconnect: false), on disk before this
   * returns, so that a successor after a crash knows to resume it instead of leaving the host unprotected.
   */
  setConnectIntent(wanted: boolean): void {
    if (this.#closed || wanted === this.#connectIntent) return;
    this.#connectIntent = wanted;
    this.#write();
  }

  /**
   * Whether a crash now would be resumed with the kill switch held: in force unless a connection is wanted and no
   * copy on disk says so. Failed copies are listed while their retries run.
   */
  crashProtection(): CrashProtection {
    const failedCopies = [...this.#copies.values()].flatMap((c) => (c.error === null ? [] : [c.error]));
    return {
      inForce: this.#inForce(),
      failedCopies,
      retries: this.#retries,
      nextRetryAt: this.#nextRetryAt,
    };
  }

  /** Called with the new report whenever crash protection is lost or back in force (event and telemetry). */
  onCrashProtection(listener: ((report: CrashProtection) => void) | null): void {
    this.#protectionListener = listener;
  }

  #inForce(): boolean {
    return !this.#connectIntent || [...this.#copies.values()].some((c) => c.intent === true);
  }

  /** What the record lists now (status and tests). */
  owned(): OwnedState {
    return structuredClone(this.#owned);
  }

  /**
   * At a clean exit, after everything was stopped and removed: the record goes if nothing is left in it, else it
   * stays for the next start to reclaim (an engine that would not stop, the kill switch kept under lockdown).
   */
  close(): void {
    this.#closed = true;
    // A clean exit is a disconnect: the next start does not resume on its own (policy's autoConnect still does).
    this.#connectIntent = false;
    this.#retryTimer?.cancel();
    this.#retryTimer = null;
    this.#nextRetryAt = null;
    this.#unwatch?.();
    this.#unwatch = null;
    const o = this.#owned;
    const left =
      o.processes.length +
      o.devices.length +
      o.rules.length +
      o.tables.length +
      o.nftTables.length +
      (o.resolvedLinks?.length ?? 0);
    if (left === 0 && this.#resolvConfBackup === null) {
      for (const path of this.#paths)
        try {
          rmSync(path, { force: true });
        } catch (err) {
          this.#log.error("removing the ownership record failed", { path, err });
        }
      return;
    }
    this.#write();
  }

  #spawned(p: EngineProcessInfo): void {
    const who = this.#platform.reclaim?.identify(p.pid) ?? null;
    const { exe, device } = describeSpawn(p.argv);
    this.#change(() => {
      // A process that already exited has nothing to reclaim.
      if (who !== null)
        this.#add(this.#owned.processes, { pid: p.pid, startTime: who.startTime, bootId: who.bootId, exe }, samePid);
      if (device !== null) {
        this.#procDevices.set(p.pid, device);
        this.#add(this.#owned.devices, device);
      }
    });
  }

  #exited(p: EngineProcessInfo): void {
    const device = this.#procDevices.get(p.pid);
    this.#procDevices.delete(p.pid);
    this.#changeSoon(() => {
      this.#owned.processes = this.#owned.processes.filter((x) => x.pid !== p.pid);
      // The TUN device went with its process (the driver deletes one a killed engine left).
      if (device !== undefined && ![...this.#procDevices.values()].includes(device))
        this.#drop(this.#owned.devices, device);
    });
  }

  #add<T>(list: T[], item: T, same: (a: T, b: T) => boolean = Object.is): void {
    if (!list.some((x) => same(x, item))) list.push(item);
  }

  #drop<T>(list: T[], item: T, same: (a: T, b: T) => boolean = Object.is): void {
    const i = list.findIndex((x) => same(x, item));
    if (i >= 0) list.splice(i, 1);
  }

  /** Something is about to be created: on disk before this returns, so a kill right after it finds it listed. */
  #change(fn: () => void): void {
    const before = JSON.stringify([this.#owned, this.#resolvConfBackup]);
    fn();
    if (JSON.stringify([this.#owned, this.#resolvConfBackup]) !== before) this.#write();
  }

  /**
   * Something is gone: written on the next turn of the loop, one write for every removal of a turn (an engine's
   * exit, its device, its rule), since a stale entry costs a crash's successor nothing.
   */
  #changeSoon(fn: () => void): void {
    const before = JSON.stringify([this.#owned, this.#resolvConfBackup]);
    fn();
    if (JSON.stringify([this.#owned, this.#resolvConfBackup]) === before || this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      if (!this.#closed) this.#write();
    });
  }

  /**
   * Writes every copy of the record now (atomic, fsynced). A failure is counted, reported and retried with a bounded
   * backoff until the copy is written; the daemon goes on.
   */
  #write(): void {
    this.#self ??= this.#platform.reclaim?.identify(process.pid) ?? null;
    const self = this.#self;
    const rec: RecordFile = {
      version: 1,
      daemon: { pid: process.pid, startTime: self?.startTime ?? null, bootId: self?.bootId ?? null },
      owned: this.#owned,
      resolvConfBackup: this.#resolvConfBackup,
      connectIntent: this.#connectIntent,
    };
    const text = JSON.stringify(rec) + "\n";
    let failed = 0;
    for (const [path, copy] of this.#copies) {
      try {
        writeFileAtomicSync(path, text, { mode: 0o600, ...(this.#fs === undefined ? {} : { fs: this.#fs }) });
        copy.intent = rec.connectIntent === true;
        copy.error = null;
      } catch (err) {
        failed += 1;
        const code = err instanceof AtomicWriteError ? (err.code ?? null) : null;
        copy.error = { path, code, message: (err as Error).message.slice(0, 300) };
        this.writeFailures += 1;
        this.lastWriteError = (err as Error).message;
        this.#log.error("ownership record not written: a crash now could leave debris behind", {
          path,
          err,
          failures: this.writeFailures,
        });
      }
    }
    if (failed === 0) {
      this.lastWriteError = null;
      this.#retryTimer?.cancel();
      this.#retryTimer = null;
      this.#nextRetryAt = null;
      this.#retries = 0;
      this.#retryDelayMs = RECORD_RETRY_FIRST_MS;
    } else if (this.#retryTimer === null && !this.#closed) this.#scheduleRetry();
    this.#reportProtection();
  }

  #scheduleRetry(): void {
    const delay = this.#retryDelayMs;
    this.#retryDelayMs = Math.min(delay * 2, RECORD_RETRY_MAX_MS);
    this.#nextRetryAt = this.#clock.wall() + delay;
    this.#retryTimer = this.#clock.after(
      delay,
      () => {
        this.#retryTimer = null;
        this.#nextRetryAt = null;
        if (this.#closed) return;
        this.#retries += 1;
        this.#write();
      },
      { background: true },
    );
  }

  /** Tells the listener when crash protection is lost or back, and logs it either way. */
  #reportProtection(): void {
    const inForce = this.#inForce();
    if (inForce === this.#lastInForce) return;
    this.#lastInForce = inForce;
    const report = this.crashProtection();
    if (inForce) this.#log.warn("crash protection back in force: the connect intent is on disk", { report });
    else
      this.#log.error("crash protection not in force: no copy of the ownership record holds the connect intent", {
        report,
      });
    try {
      this.#protectionListener?.(report);
    } catch (err) {
      this.#log.error("reporting crash protection failed", { err });
    }
  }
}

/** The record's copies: the state folder's, then the runtime folder's when that is another folder. */
function recordPaths(opts: Pick<OwnershipOptions, "stateDir" | "runtimeDir">): string[] {
  const paths = [join(opts.stateDir, OWNERSHIP_FILE)];
  if (opts.runtimeDir !== undefined && resolve(opts.runtimeDir) !== resolve(opts.stateDir))
    paths.push(join(opts.runtimeDir, OWNERSHIP_FILE));
  return paths;
}

/** Everything either record lists (a stale entry costs a reclaim nothing). */
function mergeOwned(a: OwnedState, b: OwnedState): OwnedState {
  const union = <T>(x: T[], y: T[], key: (v: T) => string = (v) => JSON.stringify(v)): T[] => {
    const seen = new Set(x.map(key));
    return [...x, ...y.filter((v) => !seen.has(key(v)))];
  };
  const links = union(a.resolvedLinks ?? [], b.resolvedLinks ?? []);
  return {
    processes: union(a.processes, b.processes, (p) => `${String(p.pid)}/${p.startTime}`),
    devices: union(a.devices, b.devices),
    rules: union(a.rules, b.rules, (r) => `${String(r.pref)}/${String(r.table)}`),
    tables: union(a.tables, b.tables),
    nftTables: union(a.nftTables, b.nftTables),
    ...(links.length === 0 ? {} : { resolvedLinks: links }),
  };
}

/** A leg's folder (`L12-Ab3xYz`, engine-spec.ts) or a spare's (`spare-Ab3xYz`, wireguard-spare-pool.ts). */
const WORK_FOLDER_RE = /^(L\d{1,9}|spare)-[A-Za-z0-9]{6}$/;

function removeWorkFolders(workDir: string, summary: ReclaimSummary): void {
  let entries: string[];
  try {
    entries = readdirSync(workDir);
  } catch {
    return; // none yet
  }
  for (const name of entries.filter((n) => WORK_FOLDER_RE.test(n))) {
    try {
      rmSync(join(workDir, name), { recursive: true, force: true });
      summary.removed.push(`work folder ${name}`);
    } catch (e) {
      summary.failed.push(`work folder ${name}: ${(e as Error).message}`);
    }
  }
}

function sameRule(a: OwnedRule, b: OwnedRule): boolean {
  return a.pref === b.pref && a.table === b.table;
}

function samePid(a: OwnedProcess, b: OwnedProcess): boolean {
  return a.pid === b.pid;
}
