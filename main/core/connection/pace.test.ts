import assert from "node:assert/strict";
import { test } from "node:test";
import { seededRandom } from "../../../test/fakes/seeded-random.ts";
import { Sim, context, gateway } from "./harness.test.ts";
import { ACTIVITY_HOLD_MS, SUSPECT_MIN_MS } from "./pace.ts";
import type { Candidate, LegKind } from "./types.ts";

const KINDS: LegKind[] = ["wireguard"];
const GWS: Candidate[] = [gateway("gw1", 1, { kinds: KINDS }), gateway("gw2", 2, { kinds: KINDS })];
/** The shipped figures: 25 ms fast, 1 s idle (2 s on the standby), dead after 300 ms. */
const HEALTH = { probeIntervalMs: 25, idleProbeIntervalMs: 1000, deadAfterMs: 300 };
const IDLE_MS = 1000;
const EVIDENCE_MS = 275;

function sim(opts: { path?: (gateway: string, sentAt: number) => number | null; standby?: boolean } = {}): Sim {
  const s = new Sim({
    gateways: GWS,
    ctx: context(GWS, {
      health: HEALTH,
      standby: opts.standby === true ? { mode: "on", probeIntervalMs: 250, idleProbeIntervalMs: 2000 } : {},
    }),
    path: (leg, sentAt) => (opts.path ?? (() => 20))(leg.gateway, sentAt),
  });
  s.send({ type: "connect" });
  return s;
}

/** Probes sent in [from, to). */
function probesBetween(s: Sim, from: number, to: number): number {
  s.runUntil(from);
  const a = s.probesSent;
  s.runUntil(to);
  return s.probesSent - a;
}

test("an-idle-tunnel-slows-to-one-probe-a-second-after-the-hold-and-stays-connected", () => {
  const s = sim();
  s.runUntil(110 + ACTIVITY_HOLD_MS - 100);
  assert.equal(s.pace, "fast", "fast while the hold lasts");
  s.runUntil(110 + ACTIVITY_HOLD_MS + 400);
  assert.equal(s.pace, "slow");
  const sent = probesBetween(s, 10_000, 70_000);
  assert.ok(sent >= 59 && sent <= 61, `one probe a second while idle, not forty: ${String(sent)} in 60 s`);
  assert.equal(s.phase(), "connected");
  assert.equal(s.failovers.length, 0);
  // The health check is not a timer that ticks on its own at the idle pace: replies move it on.
  const checks = s.inputs.filter((i) => i.type === "timer" && i.timer === "health-check" && i.now >= 10_000);
  assert.ok(checks.length <= 2, `health checks fired while idle: ${String(checks.length)} in 60 s`);
});

test("user-traffic-brings-the-fast-pace-back-at-once-with-a-probe-out-the-same-instant", () => {
  const s = sim();
  s.runUntil(10_000);
  assert.equal(s.pace, "slow");
  const before = s.probesSent;
  s.send({ type: "tunnel-activity" });
  assert.equal(s.pace, "fast");
  s.runUntil(10_000);
  assert.equal(s.probesSent, before + 1, "a probe goes out at the first sign of traffic");
  assert.ok(probesBetween(s, 10_001, 11_001) >= 39, "forty a second while traffic flows");
  // Traffic seen once a second keeps it fast; once it stops, the hold runs out and the pace is idle again.
  for (let t = 11_000; t <= 20_000; t += 1000) {
    s.runUntil(t);
    s.send({ type: "tunnel-activity" });
  }
  s.runUntil(20_000 + ACTIVITY_HOLD_MS - 100);
  assert.equal(s.pace, "fast");
  s.runUntil(20_000 + ACTIVITY_HOLD_MS + 400);
  assert.equal(s.pace, "slow");
});

test("a-lost-idle-probe-is-suspected-and-confirmed-at-the-fast-pace-never-judged-dead-on-its-own", () => {
  // Exactly one probe lost, the idle one sent in [20 000, 20 999].
  const seen: { lost: number | null } = { lost: null };
  const s = sim({
    path: (_g, sentAt) => {
      if (sentAt >= 20_000 && seen.lost === null) seen.lost = sentAt;
      return sentAt === seen.lost ? null : 20;
    },
  });
  s.runUntil(30_000);
  const lost = seen.lost;
  assert.notEqual(lost, null);
  assert.equal(s.phase(), "connected");
  assert.equal(s.failovers.length, 0, "a single lost probe is no death");
  const lostAt = lost ?? 0;
  const fastAgain = s.effects.find((e) => e.effect.type === "probe-pace" && e.effect.pace === "fast" && e.at > lostAt);
  assert.ok(fastAgain !== undefined, "the lost idle probe brought the fast pace back");
  assert.ok(fastAgain.at - lostAt <= SUSPECT_MIN_MS + 50, `suspected ${String(fastAgain.at - lostAt)} ms after`);
  assert.equal(s.pace, "slow", "and idle again once confirmed");
});

test("a-gateway-that-dies-while-the-tunnel-is-idle-is-found-within-an-idle-interval-plus-the-dead-window", () => {
  const s = sim({ path: (g, sentAt) => (g === "gw1" && sentAt >= 30_000 ? null : 20) });
  s.runUntil(29_999);
  assert.equal(s.pace, "slow");
  s.runUntil(40_000);
  const f = s.failovers[0];
  assert.ok(f !== undefined, "failed over");
  assert.equal(f.from.gateway, "gw1");
  const quickened = s.effects.find((e) => e.effect.type === "probe-pace" && e.effect.pace === "fast" && e.at >= 30_000);
  assert.ok(quickened !== undefined);
  assert.ok(f.detectedAt - quickened.at >= EVIDENCE_MS, "judged on fast probes only");
  assert.ok(f.detectedAt <= 30_000 + IDLE_MS + SUSPECT_MIN_MS + 300 + 50, `dead at ${String(f.detectedAt)}`);
});

test("a-gateway-that-died-just-before-the-first-user-packet-is-found-within-the-dead-window-of-that-packet", () => {
  // The last idle probe before the death was answered; the user's packet comes 100 ms after the death.
  const s = sim({ path: (g, sentAt) => (g === "gw1" && sentAt >= 30_000 ? null : 20) });
  s.runUntil(30_100);
  assert.equal(s.pace, "slow");
  s.send({ type: "tunnel-activity" });
  s.runUntil(31_000);
  const f = s.failovers[0];
  assert.ok(f !== undefined, "failed over");
  assert.equal(f.from.gateway, "gw1");
  assert.ok(f.detectedAt - 30_100 <= 300 + 30, `dead ${String(f.detectedAt - 30_100)} ms after the user's packet`);
});

test("ten-minutes-idle-at-5-percent-loss-each-way-raise-no-false-failover", () => {
  for (const seed of [1, 2, 3]) {
    const rnd = seededRandom(seed);
    const s = sim({ path: () => (rnd() < 0.05 || rnd() < 0.05 ? null : 20) });
    s.runUntil(600_000);
    assert.equal(s.failovers.length, 0, `seed ${String(seed)}: no failover`);
    assert.equal(s.phase(), "connected");
  }
});

test("the-standby-probes-every-two-seconds-while-idle-is-not-replaced-as-stale-and-is-fresh-for-a-failover", () => {
  const s = sim({ standby: true, path: (g, sentAt) => (g === "gw1" && sentAt >= 60_000 ? null : 20) });
  s.runUntil(59_000);
  const standbyId = s.snapshot().standby?.legId;
  assert.ok(standbyId !== undefined, "a standby is up");
  assert.equal(s.pace, "slow");
  assert.equal(
    s.stopped.some((x) => x.legId === standbyId),
    false,
    "an idle standby answering every 2 s is not stale",
  );
  const sent = probesBetween(s, 20_000, 50_000);
  assert.ok(sent <= 30 + 15 + 2, `idle: one a second on the active, one every two on the standby: ${String(sent)}`);
  s.runUntil(62_000);
  assert.equal(s.failovers[0]?.via, "standby", "promoted: fresh thanks to the fast pace before the verdict");
});

test("a-standby-last-heard-at-the-idle-pace-gets-the-whole-stale-window-of-fast-probes-before-it-is-replaced", () => {
  // The standby (gw2) is silent for 2.9 s from the moment user traffic returns (a move's MOBIKE update, say): it
  // was last heard about 2 s before at the idle pace, so only the fast probes since the traffic count against it.
  const s = sim({
    standby: true,
    path: (g, sentAt) => (g === "gw2" && sentAt >= 38_100 && sentAt < 42_900 ? null : 20),
  });
  s.runUntil(40_000);
  assert.equal(s.pace, "slow");
  const standbyId = s.snapshot().standby?.legId;
  assert.ok(standbyId !== undefined);
  s.send({ type: "tunnel-activity" });
  for (let t = 41_000; t <= 46_000; t += 1000) {
    s.runUntil(t);
    s.send({ type: "tunnel-activity" });
  }
  assert.equal(
    s.stopped.some((x) => x.legId === standbyId),
    false,
    "not replaced: it answered within the stale window counted from the fast pace",
  );
  assert.equal(s.snapshot().standby?.legId, standbyId);
});

test("an-idle-tunnel-that-degrades-stays-at-the-fast-pace-until-judged-and-moves-to-the-standby-measured-better", () => {
  const rng = seededRandom(21);
  const s = new Sim({
    gateways: GWS,
    ctx: context(GWS, {
      health: { ...HEALTH, brownout: { lossPct: 20, rttMs: null, windowMs: 5000, holdMs: 3000 } },
      standby: { mode: "on", probeIntervalMs: 250, idleProbeIntervalMs: 2000 },
    }),
    // From 20 s, 15 % loss each way on gw1 (~28 % of round trips); gw2 clean. Nobody uses the tunnel.
    path: (leg, sentAt) => (leg.gateway === "gw1" && sentAt >= 20_000 && (rng() < 0.15 || rng() < 0.15) ? null : 20),
  });
  s.send({ type: "connect" });
  s.runUntil(20_000);
  assert.equal(s.pace, "slow", "idle before the loss");
  let slowWhileDegrading = 0;
  const moved = s.runUntilTrue(() => {
    const st = s.state;
    if (st.name === "connected" && st.health.overSince !== null && s.pace === "slow") slowWhileDegrading++;
    return s.snapshot().lastFailover !== null;
  }, 60_000);
  assert.ok(moved, "moved off the lossy gateway");
  assert.equal(slowWhileDegrading, 0, "never back at the idle pace while the brownout condition held");
  const f = s.snapshot().lastFailover;
  assert.equal(f?.via, "standby");
  assert.equal(f.to?.gateway, "gw2");
  assert.match(f.reason, /^brownout/);
  console.log(`moved ${String(s.now - 20_000)} ms after the loss began`);
});
