import assert from "node:assert/strict";
import { test } from "node:test";
import {
  RECOVERY_GRACE_MS,
  connectedButDead,
  connectedShare,
  diffSnapshots,
  healthyGateways,
  mergeIntervals,
  statusSilences,
  type StatusSample,
} from "./chaos-metrics.ts";

const none = { down: new Set<never>(), blocks: [], losses: [] };

test("gateways-are-healthy-unless-down-fully-blocked-or-too-lossy", () => {
  assert.deepEqual(healthyGateways(none), ["gw1", "gw2", "gw3"]);
  assert.deepEqual(healthyGateways({ ...none, down: new Set(["gw1", "gw3"] as const) }), ["gw2"]);
  // UDP blocked everywhere: AnyConnect over TLS still gets through.
  assert.deepEqual(healthyGateways({ ...none, blocks: [{ target: "client", proto: "udp" }] }), ["gw1", "gw2", "gw3"]);
  assert.deepEqual(
    healthyGateways({
      ...none,
      blocks: [
        { target: "client", proto: "udp" },
        { target: "gw2", proto: "tls" },
      ],
    }),
    ["gw1", "gw3"],
  );
  // 30 % on the client link and 30 % on gw1's compound to 51 %.
  assert.deepEqual(
    healthyGateways({
      ...none,
      losses: [
        { target: "client", percent: 30 },
        { target: "gw1", percent: 30 },
      ],
    }),
    ["gw2", "gw3"],
  );
});

function sample(at: number, state: string | null, extra: Partial<StatusSample> = {}): StatusSample {
  return {
    at,
    answered: state !== null,
    state,
    gateway: "gw1",
    anyHealthy: true,
    expectedDown: false,
    ...extra,
  };
}

test("the-connected-share-counts-healthy-time-and-leaves-out-the-recovery-grace", () => {
  const s = [
    sample(0, "connected"),
    sample(1000, "failing-over"),
    sample(2000, "connected"),
    sample(RECOVERY_GRACE_MS + 5000, "connected", { anyHealthy: false }),
    sample(RECOVERY_GRACE_MS + 6000, "error", { anyHealthy: false }),
    sample(RECOVERY_GRACE_MS + 7000, "connected"),
  ];
  const r = connectedShare(s, [1000]);
  assert.equal(r.healthyMs, RECOVERY_GRACE_MS + 5000);
  assert.equal(r.connectedWhileHealthyMs, RECOVERY_GRACE_MS + 4000);
  // 0-1000 and the part of 2000-(grace+5000) after 1000+grace are owed.
  assert.equal(r.owedMs, 1000);
  assert.equal(r.connectedWhileOwedMs, 1000);
  assert.deepEqual(r.notConnectedOwedMs, {});
  const stuck = connectedShare([sample(0, "racing"), sample(3000, null), sample(4000, "connected")], []);
  assert.deepEqual(stuck.notConnectedOwedMs, { racing: 3000, unanswered: 1000 });
});

test("connected-while-the-probe-stream-is-dead-is-a-violation-past-the-limit", () => {
  const s = [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000].map((t) => sample(t, "connected"));
  assert.equal(connectedButDead(s, [{ from: 500, to: 3500 }]).length, 0);
  const v = connectedButDead(s, [{ from: 500, to: 7500 }]);
  assert.equal(v.length, 1);
  assert.equal(v[0]?.at, 1000);
  // A failover in the middle splits the stretch: two short stretches are no violation.
  const split = s.map((x) => (x.at === 4000 ? { ...x, state: "failing-over" } : x));
  assert.equal(connectedButDead(split, [{ from: 500, to: 7500 }]).length, 0);
});

test("status-silence-counts-only-outside-the-soak's-own-restarts", () => {
  const s = [0, 1000, 2000, 3000, 4000, 5000, 6000, 7000].map((t) => sample(t, t === 0 ? "connected" : null));
  assert.equal(statusSilences(s).length, 1);
  assert.equal(statusSilences(s.map((x) => ({ ...x, expectedDown: true }))).length, 0);
});

test("intervals-merge-and-snapshots-diff-both-ways", () => {
  assert.deepEqual(
    mergeIntervals(
      [
        { from: 5, to: 9 },
        { from: 0, to: 4 },
        { from: 20, to: 30 },
      ],
      1,
    ),
    [
      { from: 0, to: 9 },
      { from: 20, to: 30 },
    ],
  );
  assert.deepEqual(diffSnapshots({ links: ["lo", "ul0"] }, { links: ["lo", "dx-wg0"], nft: ["table x"] }), [
    "links: left behind: dx-wg0",
    "links: gone: ul0",
    "nft: left behind: table x",
  ]);
});
