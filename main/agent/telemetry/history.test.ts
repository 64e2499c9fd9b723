import assert from "node:assert/strict";
import { test } from "node:test";
import { HISTORY_SAMPLES_KEPT, PROBE_SECONDS_KEPT, TunnelHistory } from "./history.ts";

const active = { legId: "L1", gateway: "gw1", protocol: "wireguard" as const, active: true };
const standby = { legId: "L2", gateway: "gw2", protocol: "ikev2" as const, active: false };

test("probes-fold-into-per-second-summaries-and-ten-second-samples", () => {
  const h = new TunnelHistory();
  const t0 = 1_700_000_000_000;
  // 40 probes a second for 20 s, every tenth lost, RTT alternating 1 and 3 ms (the lost ones are 1 ms slots, so 3 ms is the median); the standby every 250 ms.
  for (let i = 0; i < 800; i++) {
    const at = t0 + i * 25;
    h.onProbe(active, { seq: i, sentAt: at, rttMs: i % 10 === 0 ? null : i % 2 === 0 ? 1 : 3 });
    if (i % 10 === 0) h.onProbe(standby, { seq: i, sentAt: at, rttMs: 5 });
  }
  const secs = h.probeSeconds();
  assert.equal(secs.filter((s) => s.role === "active").length, 20);
  assert.equal(secs.filter((s) => s.role === "standby").length, 20);
  const first = secs.find((s) => s.role === "active") ?? assert.fail();
  assert.deepEqual([first.sent, first.lost, first.rttMinMs, first.rttMaxMs], [40, 4, 1, 3]);
  const samples = h.samples(t0 + 20_000);
  assert.equal(samples.length, 2);
  const s = samples[0] ?? assert.fail();
  assert.deepEqual(
    [s.gateway, s.protocol, s.probes, s.lossPct, s.rttP50Ms, s.jitterMs],
    ["gw1", "wireguard", 400, 10, 3, 1.78],
  );
});

test("rings-are-bounded-to-ten-minutes-of-seconds-and-an-hour-of-samples", () => {
  const h = new TunnelHistory();
  const t0 = 1_700_000_000_000;
  for (let i = 0; i < 2 * 3600; i++) h.onProbe(active, { seq: i, sentAt: t0 + i * 1000, rttMs: 1 });
  assert.equal(h.probeSeconds().length, PROBE_SECONDS_KEPT + 1);
  const samples = h.samples(t0 + 2 * 3600 * 1000);
  assert.ok(
    samples.length <= HISTORY_SAMPLES_KEPT + 1 && samples.length >= HISTORY_SAMPLES_KEPT - 1,
    String(samples.length),
  );
});
