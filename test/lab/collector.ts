/**
 * The telemetry collector in the lab's collector namespace: started by `lab up` (per-run tokens, database in the
 * run folder), reached by agents over the lab network, and shown to a human through `lab dashboard`.
 */
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { randomSecret, writeSecret } from "./credentials.ts";
import { inNs, isAlive, readIfExists, spawnDaemon, waitFor } from "./exec.ts";
import { REPO_ROOT } from "./services.ts";
import type { LabTopology } from "./topology.ts";

/** OTLP/HTTP's registered port, so agents and tools need no special configuration. */
export const COLLECTOR_PORT = 4318;
/** The organisation id the lab's tokens belong to. */
export const LAB_ORG = "lab";
/** The port `lab dashboard` listens on at 127.0.0.1 in the root namespace, for a browser on this host. */
export const DASHBOARD_PORT = 8318;
/** Starting Node with the TypeScript loader and opening the database takes about a second; allow for a slow CI box. */
const COLLECTOR_READY_TIMEOUT_MS = 20_000;

export interface CollectorPaths {
  dir: string;
  tokensFile: string;
  db: string;
  log: string;
}

export function collectorPaths(labDir: string): CollectorPaths {
  const dir = join(labDir, "collector");
  return {
    dir,
    tokensFile: join(dir, "tokens.json"),
    db: join(dir, "telemetry.db"),
    log: join(labDir, "logs", "collector.log"),
  };
}

export function collectorUrl(topo: LabTopology): string {
  return `http://${topo.collector.address}:${COLLECTOR_PORT}`;
}

/** The lab's two tokens: `ingest` for agents, `read` for the dashboard and /metrics. */
export function collectorTokens(labDir: string): { ingest: string; read: string } {
  const file = JSON.parse(readFileSync(collectorPaths(labDir).tokensFile, "utf8")) as {
    tokens: { role: string; token: string }[];
  };
  const find = (role: string): string => {
    const t = file.tokens.find((x) => x.role === role);
    if (t === undefined) throw new Error(`the lab's tokens file has no ${role} token`);
    return t.token;
  };
  return { ingest: find("ingest"), read: find("read") };
}

/**
 * How a collector is started beyond the lab's own: a replica on another port of the collector namespace, on the
 * PostgreSQL server whose connection URL is in `postgresUrlFile` (test/lab/postgres.ts), logging to its own file.
 */
export interface CollectorStartOptions {
  port?: number;
  postgresUrlFile?: string;
  /** Names the log file (logs/collector-<name>.log); the lab's own collector has none. */
  name?: string;
  /** A SQLite file of its own (the lab's own collector's database by default). */
  db?: string;
  /** Another tree to run the collector from (an older revision exported for a benchmark's baseline). */
  root?: string;
}

/** Writes per-run tokens (mode 0600), starts the collector in its namespace and waits until it listens. */
export async function startCollector(
  topo: LabTopology,
  labDir: string,
  opts: CollectorStartOptions = {},
): Promise<number> {
  const p = collectorPaths(labDir);
  const logFile = opts.name === undefined ? p.log : join(labDir, "logs", `collector-${opts.name}.log`);
  mkdirSync(p.dir, { recursive: true, mode: 0o700 });
  // A restart (a test taking the collector down and back) keeps the tokens the agents were given.
  if (!existsSync(p.tokensFile)) {
    writeSecret(
      p.tokensFile,
      JSON.stringify(
        {
          tokens: [
            { org: LAB_ORG, role: "ingest", token: randomSecret(24) },
            { org: LAB_ORG, role: "read", token: randomSecret(24) },
          ],
        },
        null,
        2,
      ) + "\n",
    );
  }
  const argv = [
    process.execPath,
    "--import",
    "tsx",
    join(opts.root ?? REPO_ROOT, "main", "collector", "server.ts"),
    "--listen",
    `${topo.collector.address}:${opts.port ?? COLLECTOR_PORT}`,
    ...(opts.postgresUrlFile === undefined ? ["--db", opts.db ?? p.db] : ["--postgres", opts.postgresUrlFile]),
    "--tokens",
    p.tokensFile,
    // The lab's collector listens on its namespace's address without TLS: a closed network of its own.
    "--insecure-plain-http",
  ];
  const mark = readIfExists(logFile).length;
  const pid = spawnDaemon(inNs(topo.collector.ns, argv), { logFile, cwd: opts.root ?? REPO_ROOT });
  await waitFor(
    "the collector to listen",
    () => {
      if (!isAlive(pid))
        throw new Error(`the collector exited during start-up:\n${readIfExists(logFile).slice(mark).slice(-2000)}`);
      return readIfExists(logFile).slice(mark).includes("collector ready");
    },
    { timeoutMs: COLLECTOR_READY_TIMEOUT_MS, intervalMs: 50 },
  );
  return pid;
}

/**
 * argv of the opt-in forwarder behind `lab dashboard`: socat listens on 127.0.0.1 in the root namespace and
 * carries each connection into the collector namespace (the lab has no route from the root namespace). It is
 * for a human's browser only; tests reach the collector from the lab's own namespaces.
 */
export function dashboardForwarder(topo: LabTopology, port = DASHBOARD_PORT): string[] {
  return [
    "socat",
    `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`,
    `EXEC:ip netns exec ${topo.collector.ns} socat STDIO TCP\\:${topo.collector.address}\\:${COLLECTOR_PORT}`,
  ];
}
