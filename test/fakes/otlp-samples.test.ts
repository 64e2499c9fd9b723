/** The realistic agent payload the telemetry benchmark sends is one the collector accepts, with the agent's instruments. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { toBatch } from "../../main/collector/ingest-contract.ts";
import { decodeRequest } from "../../main/collector/otlp.ts";
import { METRIC } from "../../main/core/telemetry/names.ts";
import { sdkAgentIntervalBatch } from "./otlp-samples.ts";

test("an-agent-interval-batch-is-what-the-collector-accepts-with-the-agents-instruments", async () => {
  const rttMs = Array.from({ length: 400 }, (_, i) => 10 + (i % 7));
  const bytes = await sdkAgentIntervalBatch(
    { deviceId: "dev-1", batchId: "template" },
    { gateway: "gw2", protocol: "ikev2", rttMs, lost: 2, lossPercent: 0.5 },
  );
  const decoded = decodeRequest("metrics", "protobuf", bytes);
  const now = Date.now();
  const b = toBatch(decoded, now + 1000, now - 60_000, "dev-1:7");
  assert.equal(b.deviceId, "dev-1");
  assert.equal(b.batchId, "dev-1:7", "the header's batch id wins, so one body serves many batches");
  const rtt = b.points.find((p) => p.name === METRIC.rtt);
  assert.equal(rtt?.count, 400);
  assert.equal(rtt.gateway, "gw2");
  assert.deepEqual(
    [...new Set(b.points.map((p) => p.name))].sort(),
    [METRIC.jitter, METRIC.loss, METRIC.rtt, METRIC.rxBytes, METRIC.txBytes].sort(),
  );
  assert.ok(b.ignored >= 11, `the agent's other instruments travel too (${b.ignored} not stored by the collector)`);
  assert.ok(bytes.length > 1000 && bytes.length < 8000, `${bytes.length} bytes`);
});
