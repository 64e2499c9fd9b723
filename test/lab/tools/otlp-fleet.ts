/**
 * A fleet of simulated agents reporting to several collector replicas, for the replicas' lab test; run inside a lab
 * namespace (`ip netns exec detour-<id>-client node --import tsx otlp-fleet.ts ...`). Each device sends one
 * metrics batch (its gateway, protocol and RTT samples) and one events batch (a state change, every third device a
 * failover first), serialized by the OpenTelemetry SDK as detourd does; device i's metrics go to replica i mod n
 * and its events to the next replica, so every replica stores part of every kind of record. With --resend, every
 * batch is then posted again, at the same moment, to the replica that did not take it the first time (a retry
 * after an answer was lost, through a load balancer that picked another replica). With --race, each device also
 * posts one more metrics batch to every replica at once (a client that retried before the first answer came).
 *
 *   otlp-fleet.ts --urls http://a:4319,http://b:4320 --tokens <file> --devices 30 [--prefix fleet] [--resend] [--race]
 *
 * Prints one JSON line: how many requests each replica got and how they were answered, first and on resend.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { decodeStatus } from "../../../main/collector/otlp.ts";
import { BATCH_HEADER } from "../../../main/core/telemetry/names.ts";
import { sdkLogsBatch, sdkMetricsBatch } from "../../fakes/otlp-samples.ts";

/** One request over a lab veth answers in milliseconds; this only stops a wedged replica from hanging the test. */
const REQUEST_TIMEOUT_MS = 10_000;
const GATEWAYS = ["gw1", "gw2", "gw3"];
const PROTOCOLS = ["wireguard", "ikev2", "anyconnect"];

const { values } = parseArgs({
  options: {
    urls: { type: "string" },
    tokens: { type: "string" },
    devices: { type: "string", default: "30" },
    prefix: { type: "string", default: "fleet" },
    resend: { type: "boolean", default: false },
    race: { type: "boolean", default: false },
  },
});

interface Report {
  deviceId: string;
  batchId: string;
  signal: "metrics" | "logs";
  replica: number;
  body: Uint8Array;
}

interface Answer {
  status: number;
  code: number | null;
  message: string;
}

function ingestToken(file: string): string {
  const t = (JSON.parse(readFileSync(file, "utf8")) as { tokens: { role: string; token: string }[] }).tokens.find(
    (x) => x.role === "ingest",
  );
  if (t === undefined) throw new Error(`no ingest token in ${file}`);
  return t.token;
}

async function post(url: string, token: string, r: Report): Promise<Answer> {
  const res = await fetch(`${url}/v1/${r.signal}`, {
    method: "POST",
    headers: {
      "content-type": "application/x-protobuf",
      authorization: `Bearer ${token}`,
      [BATCH_HEADER]: `${r.deviceId}:${r.batchId}`,
    },
    body: r.body,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const raw = new Uint8Array(await res.arrayBuffer());
  if (res.status === 200) return { status: 200, code: null, message: "" };
  const s =
    res.headers.get("content-type") === "application/x-protobuf"
      ? decodeStatus(raw)
      : { code: null, message: Buffer.from(raw).toString("utf8") };
  return { status: res.status, code: s.code, message: s.message };
}

function tally(answers: readonly { replica: number; a: Answer }[], replicas: number): Record<string, unknown> {
  const byReplica = Array.from({ length: replicas }, (_, i) => {
    const mine = answers.filter((x) => x.replica === i);
    const statuses: Record<string, number> = {};
    for (const x of mine) statuses[String(x.a.status)] = (statuses[String(x.a.status)] ?? 0) + 1;
    return { requests: mine.length, statuses };
  });
  const other = answers.find((x) => x.a.status !== 200 && x.a.status !== 409);
  return { byReplica, firstUnexpected: other === undefined ? null : other.a };
}

async function main(): Promise<void> {
  if (values.urls === undefined || values.tokens === undefined) throw new Error("--urls and --tokens are required");
  const urls = values.urls.split(",");
  const token = ingestToken(values.tokens);
  const devices = Number(values.devices);
  const reports: Report[] = [];
  for (let d = 0; d < devices; d++) {
    const deviceId = `${values.prefix}-${String(d).padStart(3, "0")}`;
    const gateway = GATEWAYS[d % GATEWAYS.length] ?? "gw1";
    const protocol = PROTOCOLS[Math.floor(d / GATEWAYS.length) % PROTOCOLS.length] ?? "wireguard";
    const next = GATEWAYS[(d + 1) % GATEWAYS.length] ?? "gw2";
    const failover = d % 3 === 0;
    reports.push({
      deviceId,
      batchId: "m-1",
      signal: "metrics",
      replica: d % urls.length,
      body: await sdkMetricsBatch(
        { deviceId, batchId: "m-1" },
        { gateway, protocol, rttMs: [10 + (d % 7), 12 + (d % 5)], lossPercent: d % 4 },
        "protobuf",
      ),
    });
    reports.push({
      deviceId,
      batchId: "l-1",
      signal: "logs",
      replica: (d + 1) % urls.length,
      body: await sdkLogsBatch(
        { deviceId, batchId: "l-1" },
        {
          failovers: failover
            ? [
                {
                  from: gateway,
                  fromProtocol: protocol,
                  to: next,
                  toProtocol: protocol,
                  reason: "dead: no reply for 0.3 s",
                  detectedAfterMs: 310,
                  restoredAfterMs: 420,
                },
              ]
            : [],
          state: { state: "connected", gateway: failover ? next : gateway, protocol },
        },
        "protobuf",
      ),
    });
  }
  const first = await Promise.all(
    reports.map(async (r) => ({ replica: r.replica, a: await post(urls[r.replica] ?? "", token, r) })),
  );
  const out: Record<string, unknown> = { devices, first: tally(first, urls.length) };
  if (values.resend) {
    const again = await Promise.all(
      reports.map(async (r) => {
        const replica = (r.replica + 1) % urls.length;
        return { replica, a: await post(urls[replica] ?? "", token, r) };
      }),
    );
    out.resent = tally(again, urls.length);
  }
  if (values.race) {
    const raced = await Promise.all(
      Array.from({ length: devices }, async (_, d) => {
        const deviceId = `${values.prefix}-${String(d).padStart(3, "0")}`;
        const r: Report = {
          deviceId,
          batchId: "m-2",
          signal: "metrics",
          replica: 0,
          body: await sdkMetricsBatch(
            { deviceId, batchId: "m-2" },
            { gateway: GATEWAYS[d % GATEWAYS.length] ?? "gw1", protocol: "wireguard", rttMs: [11], lossPercent: 0 },
            "protobuf",
          ),
        };
        const answers = await Promise.all(urls.map((u) => post(u, token, r)));
        return answers.map((a) => a.status).sort((a, b) => a - b);
      }),
    );
    const shapes: Record<string, number> = {};
    for (const statuses of raced) shapes[statuses.join(",")] = (shapes[statuses.join(",")] ?? 0) + 1;
    out.raced = shapes;
  }
  console.log(JSON.stringify(out));
}

main().catch((e: unknown) => {
  console.error(`otlp-fleet: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
