/**
 * detourd's own telemetry delivery (its on-disk spool and SpoolSender, main/agent/telemetry) with one report in
 * the spool, run inside a lab namespace against a collector, so a test sees what an agent does when the collector
 * answers 503 (its database is down): it keeps the record, backs off and delivers it once the collector stores it.
 * Prints one JSON line per delivery attempt's outcome and exits 0 once the spool is empty, 1 at the time limit.
 *
 *   agent-delivery.ts --url http://198.18.100.2:4319 --tokens <file> --device <id> --spool <dir> [--timeout-ms 60000]
 */
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Spool } from "../../../main/agent/telemetry/spool.ts";
import { SpoolSender } from "../../../main/agent/telemetry/sender.ts";
import { Secret } from "../../../main/core/secret.ts";
import { sdkMetricsBatch } from "../../fakes/otlp-samples.ts";

/** How often the tool looks whether the spool is empty. */
const POLL_MS = 100;

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    tokens: { type: "string" },
    device: { type: "string", default: "lab-agent" },
    spool: { type: "string" },
    "timeout-ms": { type: "string", default: "60000" },
  },
});

async function main(): Promise<void> {
  if (values.url === undefined || values.tokens === undefined || values.spool === undefined)
    throw new Error("--url, --tokens and --spool are required");
  const file = JSON.parse(readFileSync(values.tokens, "utf8")) as { tokens: { role: string; token: string }[] };
  const token = file.tokens.find((t) => t.role === "ingest")?.token;
  if (token === undefined) throw new Error(`no ingest token in ${values.tokens}`);
  const spool = Spool.open({ dir: values.spool, maxBytes: 1024 * 1024, maxRecords: 100 });
  const body = await sdkMetricsBatch(
    // The sender sets the batch id header from the spool's sequence; the resource's id is what the SDK wrote.
    { deviceId: values.device, batchId: "1" },
    { gateway: "gw1", protocol: "wireguard", rttMs: [21, 23], lossPercent: 0 },
    "protobuf",
  );
  spool.put("metrics", body);
  const sender = new SpoolSender({
    spool,
    endpoint: values.url,
    token: new Secret(token),
    deviceId: values.device,
    onDelivered: (seq) => {
      console.log(JSON.stringify({ event: "delivered", seq, at: Date.now() }));
    },
    onProblem: (p) => {
      console.log(JSON.stringify({ event: "problem", status: p.status, retryInMs: p.retryInMs, at: Date.now() }));
    },
  });
  sender.kick();
  const deadline = Date.now() + Number(values["timeout-ms"]);
  const maxPolls = Math.ceil(Number(values["timeout-ms"]) / POLL_MS) + 1;
  for (let i = 0; i < maxPolls && Date.now() < deadline; i++) {
    if (spool.stats().pending === 0) break;
    await sleep(POLL_MS);
  }
  await sender.stop();
  const pending = spool.stats().pending;
  console.log(JSON.stringify({ event: "end", pending, rejected: spool.stats().rejected }));
  if (pending > 0) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(`agent-delivery: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
});
