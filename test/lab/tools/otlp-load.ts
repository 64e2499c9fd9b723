/**
 * An open-loop OTLP/HTTP load generator for the collector benchmark, run inside a lab namespace (`ip netns exec
 * detour-<id>-client node --import tsx otlp-load.ts ...`). It serializes one realistic export interval per
 * simulated device with the OpenTelemetry SDK (test/fakes/otlp-samples.ts), then posts them at each offered rate
 * in turn, on a fixed schedule (not waiting for answers, as a fleet does not), every request with its own batch
 * id. It prints one JSON line per step with the answers' latency quantiles, and stops after the first step whose
 * p99 exceeds --p99-limit-ms or that had errors.
 *
 *   otlp-load.ts --url http://198.18.100.2:4318[,<url>...] --tokens <file> --devices 500 --rates 25,50,100
 *                --step-ms 5000 [--warmup-ms 3000] [--p99-limit-ms 100] [--logs-every 20] [--interval-ms 10000]
 *
 * Several URLs (collector replicas) take the requests in turn, as a round-robin load balancer would.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { parseArgs } from "node:util";
import { BATCH_HEADER } from "../../../main/core/telemetry/names.ts";
import { sdkAgentIntervalBatch, sdkLogsBatch } from "../../fakes/otlp-samples.ts";
import { seededRandom } from "../../fakes/seeded-random.ts";

/** A request unanswered after this failed: the collector's own request timeout is 30 s, an agent's much less. */
const REQUEST_TIMEOUT_MS = 10_000;
/** The scheduler wakes this often and sends every request that is due: fine enough for 1000/s, cheap. */
const TICK_MS = 2;
/** Requests in flight at most; past it the collector is hopelessly behind and the step has failed. */
const MAX_IN_FLIGHT = 1024;
/** detourd probes the active tunnel every 25 ms: the number of RTT samples in one export interval. */
const PROBE_EVERY_MS = 25;

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    tokens: { type: "string" },
    devices: { type: "string", default: "500" },
    rates: { type: "string", default: "25,50,100,200,400" },
    "step-ms": { type: "string", default: "5000" },
    "warmup-ms": { type: "string", default: "3000" },
    "p99-limit-ms": { type: "string", default: "100" },
    "logs-every": { type: "string", default: "20" },
    "interval-ms": { type: "string", default: "10000" },
  },
});

interface Body {
  deviceId: string;
  signal: "metrics" | "logs";
  bytes: Uint8Array;
}

export interface StepLine {
  type: "step";
  rate: number;
  offered: number;
  answered: number;
  errors: number;
  firstError: string | null;
  /** Answers per second over the step (sends on schedule; the last answers may arrive after it). */
  achievedPerSec: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** How far the sender fell behind its own schedule at worst (a saturated generator shows here). */
  maxSendLagMs: number;
}

function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
}

function ingestToken(file: string): string {
  const t = (JSON.parse(readFileSync(file, "utf8")) as { tokens: { role: string; token: string }[] }).tokens.find(
    (x) => x.role === "ingest",
  );
  if (t === undefined) throw new Error(`no ingest token in ${file}`);
  return t.token;
}

async function bodies(
  devices: number,
  intervalMs: number,
  logsEvery: number,
): Promise<{ metrics: Body[]; logs: Body[] }> {
  const rnd = seededRandom(42);
  const gateways = ["gw1", "gw2", "gw3"];
  const protocols = ["wireguard", "ikev2", "anyconnect"];
  const metrics: Body[] = [];
  const logs: Body[] = [];
  const samples = Math.round(intervalMs / PROBE_EVERY_MS);
  for (let d = 0; d < devices; d++) {
    const deviceId = randomUUID();
    const gateway = gateways[d % gateways.length] ?? "gw1";
    const protocol = protocols[Math.floor(d / gateways.length) % protocols.length] ?? "wireguard";
    const base = 8 + rnd() * 60;
    const rttMs = Array.from({ length: samples }, () => Math.round((base + rnd() * rnd() * 25) * 100) / 100);
    const lost = rnd() < 0.2 ? Math.floor(rnd() * 4) : 0;
    const id = { deviceId, batchId: "template" };
    metrics.push({
      deviceId,
      signal: "metrics",
      bytes: await sdkAgentIntervalBatch(id, {
        gateway,
        protocol,
        rttMs,
        lost,
        lossPercent: (lost / (samples + lost)) * 100,
      }),
    });
    if (d % logsEvery === 0) {
      const to = gateways[(d + 1) % gateways.length] ?? "gw2";
      const events = {
        failovers: [
          {
            from: gateway,
            fromProtocol: protocol,
            to,
            toProtocol: protocol,
            reason: "dead: no reply for 0.3 s",
            detectedAfterMs: 310 + Math.round(rnd() * 200),
            restoredAfterMs: 420 + Math.round(rnd() * 300),
          },
        ],
        state: { state: "connected", gateway: to, protocol },
      };
      logs.push({ deviceId, signal: "logs", bytes: await sdkLogsBatch(id, events, "protobuf") });
    }
  }
  return { metrics, logs };
}

async function main(): Promise<void> {
  if (values.url === undefined || values.tokens === undefined) throw new Error("--url and --tokens are required");
  const urls = values.url.split(",").map((u) => new URL(u));
  const token = ingestToken(values.tokens);
  const devices = Number(values.devices);
  const rates = values.rates.split(",").map(Number);
  const stepMs = Number(values["step-ms"]);
  const warmupMs = Number(values["warmup-ms"]);
  const p99LimitMs = Number(values["p99-limit-ms"]);
  const logsEvery = Math.max(1, Number(values["logs-every"]));
  const pool = await bodies(devices, Number(values["interval-ms"]), logsEvery);
  const all = [...pool.metrics, ...pool.logs];
  console.log(
    JSON.stringify({
      type: "payloads",
      devices,
      metricsBytesMean: Math.round(pool.metrics.reduce((a, b) => a + b.bytes.length, 0) / pool.metrics.length),
      logsBytesMean:
        pool.logs.length === 0 ? 0 : Math.round(pool.logs.reduce((a, b) => a + b.bytes.length, 0) / pool.logs.length),
      bodies: all.length,
    }),
  );

  // Keep-alive like an exporter between its posts; one socket per request in flight, as a fleet's devices have.
  const agent = new Agent({ keepAlive: true, maxSockets: MAX_IN_FLIGHT });
  const seq = new Map<string, number>();
  let next = 0;
  let inFlight = 0;

  let turn = 0;
  const post = (b: Body): Promise<{ ms: number; error: string | null }> => {
    const url = urls[turn++ % urls.length] ?? urls[0];
    if (url === undefined) throw new Error("no --url");
    const n = (seq.get(b.deviceId) ?? 0) + 1;
    seq.set(b.deviceId, n);
    const t0 = performance.now();
    return new Promise((resolve) => {
      const req = request(
        {
          host: url.hostname,
          port: url.port,
          path: `/v1/${b.signal}`,
          method: "POST",
          agent,
          timeout: REQUEST_TIMEOUT_MS,
          headers: {
            "content-type": "application/x-protobuf",
            "content-length": String(b.bytes.length),
            authorization: `Bearer ${token}`,
            [BATCH_HEADER]: `${b.deviceId}:${n}`,
          },
        },
        (res) => {
          res.resume();
          res.on("end", () => {
            resolve({
              ms: performance.now() - t0,
              error: res.statusCode === 200 ? null : `HTTP ${String(res.statusCode)}`,
            });
          });
          res.on("error", (e) => {
            resolve({ ms: performance.now() - t0, error: e.message });
          });
        },
      );
      req.on("timeout", () => {
        req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS} ms`));
      });
      req.on("error", (e) => {
        resolve({ ms: performance.now() - t0, error: e.message });
      });
      req.end(b.bytes);
    });
  };

  /** Posts at `rate` per second for `ms` on a fixed schedule; a metrics body per report, every logsEvery-th a logs body. */
  const step = async (rate: number, ms: number): Promise<StepLine> => {
    const offered = Math.max(1, Math.round((rate * ms) / 1000));
    const started = performance.now();
    const pending: Promise<{ ms: number; error: string | null }>[] = [];
    let sent = 0;
    let maxLag = 0;
    let refused = 0;
    while (sent < offered) {
      const now = performance.now();
      while (sent < offered && started + (sent * 1000) / rate <= now) {
        maxLag = Math.max(maxLag, now - (started + (sent * 1000) / rate));
        sent++;
        if (inFlight >= MAX_IN_FLIGHT) {
          refused++;
          continue;
        }
        const useLogs = pool.logs.length > 0 && next % logsEvery === logsEvery - 1;
        const b = useLogs ? pool.logs[next % pool.logs.length] : pool.metrics[next % pool.metrics.length];
        next++;
        if (b === undefined) continue;
        inFlight++;
        pending.push(
          post(b).finally(() => {
            inFlight--;
          }),
        );
      }
      await new Promise((r) => setTimeout(r, TICK_MS));
    }
    const results = await Promise.all(pending);
    const elapsedS = (performance.now() - started) / 1000;
    const ok = results.filter((r) => r.error === null);
    const lat = results.map((r) => r.ms).sort((a, b) => a - b);
    const round = (v: number): number => Math.round(v * 10) / 10;
    const firstError =
      results.find((r) => r.error !== null)?.error ??
      (refused > 0 ? `${refused} not sent: ${MAX_IN_FLIGHT} requests already in flight` : null);
    return {
      type: "step",
      rate,
      offered,
      answered: ok.length,
      errors: results.length - ok.length + refused,
      firstError,
      achievedPerSec: round(ok.length / elapsedS),
      p50Ms: round(quantile(lat, 0.5)),
      p90Ms: round(quantile(lat, 0.9)),
      p99Ms: round(quantile(lat, 0.99)),
      maxMs: round(lat[lat.length - 1] ?? NaN),
      maxSendLagMs: round(maxLag),
    };
  };

  if (warmupMs > 0) console.log(JSON.stringify({ ...(await step(rates[0] ?? 10, warmupMs)), type: "warmup" }));
  for (const rate of rates) {
    const r = await step(rate, stepMs);
    console.log(JSON.stringify(r));
    if (r.errors > 0 || !(r.p99Ms <= p99LimitMs)) break;
  }
  agent.destroy();
}

main().catch((e: unknown) => {
  console.error(`otlp-load: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
