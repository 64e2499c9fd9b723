/**
 * Debian's Prometheus (/usr/bin/prometheus) as a fleet monitor for the lab: it runs only inside the lab's
 * collector namespace, with its own config, token file and storage under the lab's run folder, scrapes the
 * collector's /metrics with the read token, and serves its query API on that namespace's loopback. Started and
 * stopped by PID; nothing of a packaged Prometheus service is used.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSecret } from "./credentials.ts";
import { COLLECTOR_PORT, collectorTokens } from "./collector.ts";
import { inNs, isAlive, readIfExists, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import { labDirOf } from "./lab.ts";
import { labTopology } from "./topology.ts";

export const PROMETHEUS_BINARY = "/usr/bin/prometheus";
/** Prometheus's registered default port, on the collector namespace's loopback: nothing outside it can reach it. */
export const PROMETHEUS_LISTEN = "127.0.0.1:9090";
export const SCRAPE_JOB = "detour-collector";
/** One scrape a second, so a test sees a change within seconds; the collector computes /metrics in milliseconds. */
export const SCRAPE_INTERVAL_S = 1;
/** Opening an empty TSDB and the web listener takes about a second; a loaded 2-core machine gets twenty. */
const PROMETHEUS_READY_TIMEOUT_MS = 20_000;
/** Prometheus flushes its head block on SIGTERM; a lab-sized one takes well under this. */
const PROMETHEUS_STOP_GRACE_MS = 10_000;

export interface LabPrometheus {
  pid: number;
  dir: string;
  log: string;
  /** Base URL of the query API, valid inside the collector namespace only. */
  url: string;
}

/** prometheus.yml: one job scraping the collector with the read token from a file (never inline in the config). */
export function prometheusConfig(opts: { target: string; tokenFile: string; intervalS?: number }): string {
  const s = opts.intervalS ?? SCRAPE_INTERVAL_S;
  return [
    "global:",
    `  scrape_interval: ${s}s`,
    `  scrape_timeout: ${s}s`,
    `  evaluation_interval: ${s}s`,
    "scrape_configs:",
    `  - job_name: ${SCRAPE_JOB}`,
    "    metrics_path: /metrics",
    "    scheme: http",
    // authorization.credentials_file is what bearer_token_file is spelled as since Prometheus 2.26.
    "    authorization:",
    "      type: Bearer",
    `      credentials_file: ${JSON.stringify(opts.tokenFile)}`,
    "    static_configs:",
    `      - targets: [${JSON.stringify(opts.target)}]`,
    "",
  ].join("\n");
}

function promDir(id: string): string {
  return join(labDirOf(id), "prometheus");
}

/** Starts Prometheus in detour-<id>-collector and waits until it serves queries; the lab must be up. */
export async function startPrometheus(id: string): Promise<LabPrometheus> {
  if (!existsSync(PROMETHEUS_BINARY))
    throw new Error(`${PROMETHEUS_BINARY} is missing: run \`npm run setup\` (Debian package prometheus)`);
  const topo = labTopology(id);
  const dir = promDir(id);
  mkdirSync(join(dir, "data"), { recursive: true, mode: 0o700 });
  const tokenFile = writeSecret(join(dir, "read.token"), collectorTokens(labDirOf(id)).read + "\n");
  const config = join(dir, "prometheus.yml");
  writeFileSync(config, prometheusConfig({ target: `${topo.collector.address}:${COLLECTOR_PORT}`, tokenFile }), {
    mode: 0o600,
  });
  const log = join(dir, "prometheus.log");
  const argv = [
    PROMETHEUS_BINARY,
    `--config.file=${config}`,
    `--storage.tsdb.path=${join(dir, "data")}`,
    "--storage.tsdb.retention.time=1d",
    `--web.listen-address=${PROMETHEUS_LISTEN}`,
  ];
  const pid = spawnDaemon(inNs(topo.collector.ns, argv), { logFile: log });
  const p: LabPrometheus = { pid, dir, log, url: `http://${PROMETHEUS_LISTEN}` };
  try {
    await waitFor(
      "Prometheus to serve queries",
      () => {
        if (!isAlive(pid)) throw new Error(`prometheus exited during start-up:\n${readIfExists(log).slice(-3000)}`);
        return readIfExists(log).includes("Server is ready to receive web requests.");
      },
      { timeoutMs: PROMETHEUS_READY_TIMEOUT_MS, intervalMs: 100 },
    );
  } catch (e) {
    await stopPrometheus(p);
    throw e;
  }
  return p;
}

/** SIGTERM by PID (Prometheus flushes and exits), SIGKILL after the grace period. The lab's `down` removes the folder. */
export async function stopPrometheus(p: LabPrometheus): Promise<void> {
  if (isAlive(p.pid)) await stopPids([p.pid], "SIGTERM", PROMETHEUS_STOP_GRACE_MS);
}

export interface PromSample {
  labels: Record<string, string>;
  value: number;
}

/** The samples of an instant query's answer (/api/v1/query, resultType vector); throws on an error answer. */
export function parseVector(body: string): PromSample[] {
  const r = JSON.parse(body) as {
    status?: string;
    error?: string;
    data?: { resultType?: string; result?: { metric?: Record<string, string>; value?: [number, string] }[] };
  };
  if (r.status !== "success")
    throw new Error(`Prometheus answered ${String(r.status)}: ${r.error ?? body.slice(0, 300)}`);
  if (r.data?.resultType !== "vector") throw new Error(`expected a vector, got ${String(r.data?.resultType)}`);
  return (r.data.result ?? []).map((s) => ({ labels: s.metric ?? {}, value: Number(s.value?.[1]) }));
}
