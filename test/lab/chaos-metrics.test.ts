import assert from "node:assert/strict";
import { test } from "node:test";
import {
  RECOVERY_GRACE_MS,
  connectedButDead,
  connectedShare,
  diffSnapshots,
  edgeMedians,
  healthyGateways,
  mergeIntervals,
  owedStretches,
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

test("every-owed-second-not-connected-is-one-stretch-with-what-detourd-said-the-healthy-gateways-and-the-faults-before", () => {
  const G = RECOVERY_GRACE_MS;
  const s = [
    sample(0, "connected"),
    // A fault at 1000: its grace hides 1000 .. 1000+G.
    sample(1000, "failing-over", { summary: "Failing over from gw1", healthy: ["gw2"] }),
    sample(1000 + G, "racing", { summary: "Racing gw2", healthy: ["gw2"] }),
    sample(1000 + G + 500, "racing", { summary: "Racing gw2", healthy: ["gw2"] }),
    sample(1000 + G + 1000, "error", { summary: "Cannot connect", healthy: ["gw2", "gw3"] }),
    sample(1000 + G + 3000, null, { healthy: ["gw2", "gw3"] }),
    sample(1000 + G + 3500, "connected"),
    // No healthy gateway: not owed, ends nothing on its own but is not a stretch.
    sample(20_000, "error", { anyHealthy: false, healthy: [] }),
    sample(21_000, "error", { summary: "Cannot connect", healthy: ["gw1"] }),
    sample(21_250, "connected"),
    sample(22_000, "connected"),
  ];
  const fired = [
    { at: 500, what: "block tls at gw3" },
    { at: 1000, what: "kill gw1" },
    { at: 19_000, what: "kill gw2" },
    { at: 20_900, what: "restore gw1" },
    { at: 30_000, what: "later" },
  ];
  const r = owedStretches(s, [1000], fired);
  assert.equal(r.length, 2);
  const big = r[0];
  const small = r[1];
  assert.ok(big !== undefined && small !== undefined);
  assert.equal(big.from, 1000 + G, "largest first; it starts where the grace ends");
  assert.equal(big.ms, 3500);
  assert.deepEqual(big.states, [
    { state: "racing", summary: "Racing gw2", ms: 1000 },
    { state: "error", summary: "Cannot connect", ms: 2000 },
    { state: "unanswered", summary: "", ms: 500 },
  ]);
  assert.deepEqual(big.healthy, [["gw2"], ["gw2", "gw3"]]);
  assert.deepEqual(
    big.lastFaults.map((f) => f.what),
    ["block tls at gw3", "kill gw1"],
  );
  assert.equal(small.from, 21_000);
  assert.equal(small.ms, 250);
  assert.deepEqual(
    small.lastFaults.map((f) => f.what),
    ["kill gw2", "restore gw1"],
  );
  // The stretches add up to the owed time not connected, to the millisecond.
  const share = connectedShare(s, [1000]);
  const notConnected = Object.values(share.notConnectedOwedMs).reduce((a, b) => a + b, 0);
  assert.equal(
    r.reduce((a, x) => a + x.ms, 0),
    notConnected,
  );
  assert.equal(share.owedMs - share.connectedWhileOwedMs, notConnected);
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

test("memory-ends-are-medians-so-one-garbage-collection-does-not-read-as-a-leak", () => {
  assert.equal(edgeMedians([], 6), null);
  assert.deepEqual(edgeMedians([40], 6), { first: 40, last: 40 });
  // A heap that saws between collections: the ends agree though the first and last readings differ by 30 %.
  assert.deepEqual(edgeMedians([33, 30, 38, 31, 35, 34, 36, 30, 39, 33, 32, 40], 3), { first: 33, last: 33 });
  // A heap that grows steadily shows it.
  assert.deepEqual(edgeMedians([10, 11, 12, 20, 21, 22], 3), { first: 11, last: 21 });
  assert.deepEqual(edgeMedians([10, 20, 30], 6), { first: 10, last: 30 }, "short series: ends never overlap");
});
