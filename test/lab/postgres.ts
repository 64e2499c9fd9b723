/**
 * Debian's PostgreSQL server for the lab: a private cluster (initdb) in a run folder, started by PID inside one lab
 * namespace as the `postgres` user (setpriv execs, so the PID is the postmaster's own), listening on that
 * namespace's loopback only, with a password-authenticated role and database for the collector replicas and the
 * connection URL in a file of mode 0600. Nothing of the packaged cluster (/etc/postgresql, its service) is used.
 */
import { chownSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { randomSecret, writeSecret } from "./credentials.ts";
import { inNs, isAlive, nsRun, readIfExists, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import { POSTGRES_LIB, postgresBinDir } from "./preflight.ts";

/** The lab's cluster listens on this port of its namespace's loopback (PostgreSQL's registered port). */
export const POSTGRES_PORT = 5432;
/** initdb of an empty cluster on tmpfs takes about a second; a loaded two-core machine gets far more. */
const INITDB_TIMEOUT_MS = 60_000;
/** Recovery-free start of a small cluster takes well under a second. */
const POSTGRES_READY_TIMEOUT_MS = 20_000;
/** A fast shutdown (SIGINT) ends every session and checkpoints; a lab-sized cluster needs far less than this. */
const POSTGRES_STOP_GRACE_MS = 10_000;
const POSTGRES_USER = "postgres";

export interface LabPostgres {
  pid: number;
  ns: string;
  dir: string;
  dataDir: string;
  log: string;
  /** Mode 0600: postgres://collector:<password>@127.0.0.1:5432/telemetry, for the collectors' --postgres. */
  urlFile: string;
  /** The private socket folder, where the superuser connects without a password (root and postgres only). */
  socketDir: string;
}

function asPostgres(argv: readonly string[]): string[] {
  return ["setpriv", `--reuid=${POSTGRES_USER}`, `--regid=${POSTGRES_USER}`, "--init-groups", "--", ...argv];
}

function postgresIds(): { uid: number; gid: number } {
  const line = readIfExists("/etc/passwd")
    .split("\n")
    .find((l) => l.startsWith(`${POSTGRES_USER}:`));
  const [, , uid, gid] = line?.split(":") ?? [];
  if (uid === undefined || gid === undefined)
    throw new Error("there is no postgres user; install Debian's postgresql package (bash scripts/setup.sh)");
  return { uid: Number(uid), gid: Number(gid) };
}

/**
 * Creates a cluster in `dir` (which must not exist yet), starts it in `ns` on 127.0.0.1:POSTGRES_PORT and creates
 * the collector's role and database. The caller stops it with stopPostgres (or the namespace's teardown does).
 */
export async function startPostgres(ns: string, dir: string): Promise<LabPostgres> {
  const bin = postgresBinDir();
  if (bin === undefined)
    throw new Error(`no PostgreSQL server under ${POSTGRES_LIB}; install Debian's postgresql (bash scripts/setup.sh)`);
  const { uid, gid } = postgresIds();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chownSync(dir, uid, gid);
  const dataDir = join(dir, "data");
  const socketDir = join(dir, "socket");
  mkdirSync(socketDir, { mode: 0o700 });
  chownSync(socketDir, uid, gid);
  const log = join(dir, "postgres.log");
  // The superuser connects only through the private socket (trust there: only root and postgres can enter the
  // folder); over TCP every role needs its password (SCRAM).
  await nsRun(
    ns,
    asPostgres([
      join(bin, "initdb"),
      "-D",
      dataDir,
      "--username=postgres",
      "--auth-local=trust",
      "--auth-host=scram-sha-256",
      "--no-locale",
      "--encoding=UTF8",
      "--no-sync",
    ]),
    { timeoutMs: INITDB_TIMEOUT_MS },
  );
  const pg: Omit<LabPostgres, "pid"> = { ns, dir, dataDir, log, urlFile: join(dir, "collector.url"), socketDir };
  const pid = await launch(pg);
  const password = randomSecret(18);
  // SQL on stdin, so the password is in no process's argv.
  await nsRun(
    ns,
    asPostgres([
      join(bin, "psql"),
      "-X",
      "-q",
      "-v",
      "ON_ERROR_STOP=1",
      "-h",
      socketDir,
      "-U",
      "postgres",
      "-d",
      "postgres",
    ]),
    {
      input: `CREATE ROLE collector LOGIN PASSWORD '${password}';\nCREATE DATABASE telemetry OWNER collector;\n`,
      timeoutMs: 20_000,
    },
  );
  writeSecret(pg.urlFile, `postgres://collector:${password}@127.0.0.1:${POSTGRES_PORT}/telemetry\n`);
  return { ...pg, pid };
}

/** Starts the postmaster on an existing cluster and waits until it accepts connections; returns its PID. */
async function launch(pg: Omit<LabPostgres, "pid">): Promise<number> {
  const bin = postgresBinDir();
  if (bin === undefined) throw new Error("the PostgreSQL server is gone");
  const mark = readIfExists(pg.log).length;
  const pid = spawnDaemon(
    inNs(
      pg.ns,
      asPostgres([
        join(bin, "postgres"),
        "-D",
        pg.dataDir,
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        `port=${POSTGRES_PORT}`,
        "-c",
        `unix_socket_directories=${pg.socketDir}`,
        // The lab's cluster lives on tmpfs and dies with the run: durability settings would only cost CPU.
        "-c",
        "fsync=off",
      ]),
    ),
    { logFile: pg.log },
  );
  await waitFor(
    "PostgreSQL to accept connections",
    () => {
      if (!isAlive(pid)) throw new Error(`PostgreSQL exited during start-up:\n${readIfExists(pg.log).slice(-2000)}`);
      return readIfExists(pg.log).slice(mark).includes("database system is ready to accept connections");
    },
    { timeoutMs: POSTGRES_READY_TIMEOUT_MS, intervalMs: 50 },
  );
  return pid;
}

/** Fast shutdown (SIGINT: sessions are ended, a checkpoint written), SIGKILL after the grace; by PID only. */
export async function stopPostgres(pg: LabPostgres): Promise<void> {
  if (isAlive(pg.pid)) await stopPids([pg.pid], "SIGINT", POSTGRES_STOP_GRACE_MS);
}

/** Starts the same cluster again (after stopPostgres), e.g. to end a simulated outage; returns the new state. */
export async function restartPostgres(pg: LabPostgres): Promise<LabPostgres> {
  if (isAlive(pg.pid)) throw new Error(`PostgreSQL (pid ${pg.pid}) is still running`);
  return { ...pg, pid: await launch(pg) };
}

/** Stops the cluster and removes its folder. */
export async function removePostgres(pg: LabPostgres): Promise<void> {
  await stopPostgres(pg);
  rmSync(pg.dir, { recursive: true, force: true });
}

/** Runs one SQL query as the superuser over the private socket and returns psql's unaligned output. */
export async function psql(pg: LabPostgres, sql: string, database = "telemetry"): Promise<string> {
  const bin = postgresBinDir();
  if (bin === undefined) throw new Error("the PostgreSQL server is gone");
  return nsRun(
    pg.ns,
    asPostgres([
      join(bin, "psql"),
      "-X",
      "-q",
      "-A",
      "-t",
      "-v",
      "ON_ERROR_STOP=1",
      "-h",
      pg.socketDir,
      "-U",
      "postgres",
      "-d",
      database,
    ]),
    { input: sql, timeoutMs: 20_000 },
  );
}

/**
 * Creates another empty database owned by the collector's role and returns a URL file (mode 0600) for it, so a
 * test can start from nothing beside the replicas' database.
 */
export async function createDatabase(pg: LabPostgres, name: string): Promise<string> {
  if (!/^[a-z][a-z0-9_]{0,30}$/.test(name)) throw new Error(`not a plain database name: ${name}`);
  await psql(pg, `CREATE DATABASE ${name} OWNER collector;\n`, "postgres");
  const url = readIfExists(pg.urlFile)
    .trim()
    .replace(/\/telemetry$/, `/${name}`);
  const file = join(pg.dir, `${name}.url`);
  writeSecret(file, `${url}\n`);
  return file;
}
