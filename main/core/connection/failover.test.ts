import assert from "node:assert/strict";
import { test } from "node:test";
import { seededRandom } from "../../../test/fakes/seeded-random.ts";
import { Sim, context, gateway, probe, tunnelConfig } from "./harness.test.ts";
import { connectionHealth, initialState } from "./machine.ts";
import { RECHECK_INTERVAL_MS } from "./states/connected.ts";
import type { Candidate, LegKind } from "./types.ts";

const KINDS: LegKind[] = ["wireguard", "anyconnect-tls"];
const GWS: Candidate[] = [
  gateway("gw1", 1, { kinds: KINDS }),
  gateway("gw2", 2, { kinds: KINDS }),
  gateway("gw3", 3, { kinds: KINDS }),
];
const stoppedAt = (sim: Sim, id: string): number | undefined => sim.stopped.find((s) => s.legId === id)?.at;

/**
 * connect at 0, discovery 10 ms, L1 (gw1/wireguard) up at 110: its monitor sends at 110, 160, ... With gw1 dead
 * from 5000, the last probe answered is the one sent at 4960, whose reply arrived at 4980 (20 ms path).
 */
function gw1DiesAt5s(opts: { gw2Legs?: "up" | "fail" } = {}): Sim {
  const sim = new Sim({
    gateways: GWS,
    legs: (leg, s) => {
      if (leg.gateway === "gw1") return s.now < 5000 ? { up: 100 } : "hang";
      return opts.gw2Legs === "fail" ? { fail: 40, code: "unreachable" } : { up: 100 };
    },
    path: (leg, sentAt) => (leg.gateway === "gw1" && sentAt >= 5000 ? null : 20),
  });
  sim.send({ type: "connect" });
  sim.runUntil(4999);
  assert.equal(sim.snapshot().activeLegId, "L1");
  return sim;
}

test("active-gateway-dead-fails-over-to-another-gateway-with-exact-numbers", () => {
  const sim = gw1DiesAt5s();
  sim.runUntil(5579);
  assert.equal(sim.phase(), "connected", "not dead before deadAfterMs without a reply");
  sim.runUntil(5580);
  let s = sim.snapshot();
  assert.equal(s.state, "failing-over");
  assert.equal(s.summary, "Reconnecting: gw1 stopped answering, trying gw2 and gw3, then gw1 over another protocol");
  assert.equal(s.activeLegId, "L1", "the failed leg still holds the routes");
  assert.equal(sim.routes, "L1");
  assert.deepEqual(
    s.lastRace?.legs.map((l) => `${l.leg.gateway}/${l.leg.kind}`),
    ["gw2/wireguard", "gw2/anyconnect-tls", "gw3/wireguard", "gw3/anyconnect-tls", "gw1/anyconnect-tls"],
    "the other gateways first, the failed gateway's other protocol last, the failed leg never",
  );
  sim.runUntil(10_000);
  s = sim.snapshot();
  assert.equal(s.state, "connected");
  assert.equal(s.gateway, "gw2");
  assert.equal(s.lastRace?.reason, "failover");
  assert.deepEqual(s.lastFailover, {
    from: { gateway: "gw1", kind: "wireguard" },
    to: { gateway: "gw2", kind: "wireguard" },
    reason: "dead: no reply for 0.6 s",
    via: "race",
    lastReplyAt: 4980,
    detectedAt: 5580,
    restoredAt: 5680,
    detectedAfterMs: 600,
    restoredAfterMs: 700,
  });
  assert.deepEqual(sim.failovers, [s.lastFailover]);
});

test("failed-leg-keeps-its-routes-until-the-winner-is-up-then-stops-make-before-break", () => {
  const sim = gw1DiesAt5s();
  sim.runUntil(10_000);
  const winner = sim.snapshot().activeLegId ?? "";
  assert.deepEqual(sim.routeLog, [
    { at: 110, legId: "L1" },
    { at: 5680, legId: winner },
  ]);
  assert.equal(stoppedAt(sim, "L1"), 5680, "the failed leg stops only when the winner is up");
  const at5680 = sim.effects.filter((e) => e.at === 5680).map((e) => e.effect);
  const order = at5680.flatMap((e) =>
    e.type === "apply-routes" || e.type === "stop-monitor" || e.type === "start-monitor" || e.type === "record-failover"
      ? [e.type]
      : e.type === "stop-leg"
        ? [`stop-leg:${e.legId}`]
        : [],
  );
  assert.deepEqual(order.slice(0, 3), ["apply-routes", "stop-monitor", "stop-leg:L1"]);
  assert.ok(order.indexOf("start-monitor") < order.indexOf("record-failover"));
  assert.ok(!sim.effects.some((e) => e.effect.type === "clear-routes"), "no moment without routes");
  assert.deepEqual([...sim.monitors], [winner]);
});

test("engine-reported-leg-down-fails-over-at-once", () => {
  const sim = connectedSimOn(GWS);
  sim.runUntil(3000);
  sim.send({ type: "leg-down", legId: "L1", reason: "engine exited (SIGKILL)" });
  assert.equal(sim.phase(), "failing-over");
  assert.equal(
    sim.snapshot().summary,
    "Reconnecting: gw1 went down, trying gw2 and gw3, then gw1 over another protocol",
  );
  sim.runFor(1000);
  const f = sim.snapshot().lastFailover;
  assert.ok(f !== null);
  assert.equal(f.reason, "leg-down: engine exited (SIGKILL)");
  assert.equal(f.detectedAt, 3000);
  assert.equal(f.lastReplyAt, 2980, "the probe sent at 2960 answered at 2980");
  assert.equal(f.detectedAfterMs, 20);
  assert.equal(sim.snapshot().gateway, "gw2");
});

function connectedSimOn(gateways: Candidate[], extra: Partial<ConstructorParameters<typeof Sim>[0]> = {}): Sim {
  const sim = new Sim({ gateways, ...extra });
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 10_000));
  return sim;
}

test("the-only-gateway-dead-on-one-protocol-falls-back-to-its-other-protocol", () => {
  const only = [gateway("gw1", 1, { kinds: KINDS })];
  const sim = connectedSimOn(only, { path: (leg, sentAt) => (leg.kind === "wireguard" && sentAt >= 2000 ? null : 20) });
  sim.runUntil(5000);
  const s = sim.snapshot();
  assert.equal(s.state, "connected");
  assert.equal(s.gateway, "gw1");
  assert.equal(s.protocol, "anyconnect-tls");
  assert.deepEqual(
    s.lastRace?.legs.map((l) => `${l.leg.gateway}/${l.leg.kind}`),
    ["gw1/anyconnect-tls"],
  );
});

test("failover-race-that-fails-totally-goes-to-error-and-tears-the-failed-leg-down", () => {
  const sim = gw1DiesAt5s({ gw2Legs: "fail" });
  // gw2 and gw3 refuse at once; the failed gateway's other protocol is tried last and hangs until its deadline.
  sim.runUntil(5900);
  assert.equal(sim.phase(), "failing-over");
  assert.equal(sim.snapshot().summary, "Reconnecting: gw1 stopped answering, trying gw1 over another protocol");
  sim.runUntil(11_000);
  const s = sim.snapshot();
  assert.equal(s.state, "error");
  assert.equal(sim.routes, null, "routes cleared: nothing carries them");
  assert.equal(sim.running.size, 0);
  assert.equal(sim.monitors.size, 0);
  assert.ok(stoppedAt(sim, "L1") !== undefined);
  const f = s.lastFailover;
  assert.ok(f !== null);
  assert.deepEqual([f.to, f.restoredAt, f.restoredAfterMs, f.detectedAt], [null, null, null, 5580]);
  assert.deepEqual(
    s.lastRace?.legs.map((l) => `${l.leg.gateway}/${l.leg.kind}:${l.outcome}:${l.error?.code ?? ""}`),
    [
      "gw2/wireguard:failed:unreachable",
      "gw2/anyconnect-tls:failed:unreachable",
      "gw3/wireguard:failed:unreachable",
      "gw3/anyconnect-tls:failed:unreachable",
      "gw1/anyconnect-tls:failed:timeout",
    ],
  );
  assert.match(s.summary, /^No gateway reachable; retrying in 1 s$/);
  // The backoff retry races everything again, gw1 included; its legs now hang, the others fail.
  sim.runUntil(s.error?.nextRetryAt ?? 0);
  assert.equal(sim.phase(), "resolving");
});

test("the-only-gateway-dead-with-no-other-leg-goes-to-error", () => {
  const only = [gateway("gw1", 1, { kinds: ["wireguard"] })];
  const sim = connectedSimOn(only, { path: (_leg, sentAt) => (sentAt >= 2000 ? null : 20) });
  sim.runUntilTrue(() => sim.phase() === "error", 5000);
  const s = sim.snapshot();
  assert.equal(s.state, "error");
  assert.equal(s.summary, "gw1 stopped working and no other gateway is available; retrying in 1 s");
  assert.equal(sim.routes, null);
  assert.equal(sim.running.size, 0);
  assert.equal(s.lastFailover?.to, null);
});

test("five-percent-random-loss-for-ten-minutes-at-50-ms-probes-causes-no-failover", () => {
  for (const seed of [42, 4242]) {
    const rng = seededRandom(seed);
    const sim = connectedSimOn(GWS, { path: () => (rng() < 0.05 ? null : 10 + Math.floor(rng() * 30)) });
    sim.runFor(600_000);
    assert.equal(sim.phase(), "connected", `seed ${seed}: ${sim.snapshot().summary}`);
    assert.equal(sim.snapshot().activeLegId, "L1", `seed ${seed}`);
    assert.deepEqual(sim.failovers, [], `seed ${seed}`);
    assert.equal(sim.races.length, 1, `seed ${seed}: only the connect race`);
    assert.ok(!sim.events.some((e) => e.type === "health"), `seed ${seed}: the verdict never left healthy`);
    const probes = sim.inputs.filter((i) => i.type === "probe").length;
    assert.ok(probes > 11_900, `seed ${seed}: ${probes} probes`);
  }
});

test("brownout-moves-only-to-a-standby-measured-better-never-through-a-race", () => {
  const rng = seededRandom(5);
  const sim = connectedSimOn(GWS, {
    ctx: context(GWS, { standby: { mode: "on" } }),
    path: (leg, sentAt) => (leg.gateway === "gw1" && sentAt >= 10_000 && rng() < 0.4 ? null : 20),
  });
  assert.ok(sim.runUntilTrue(() => sim.snapshot().lastFailover !== null, 30_000));
  const f = sim.snapshot().lastFailover;
  assert.ok(sim.now >= 10_000 + 1000 + 3000, `moved at ${sim.now}, before timeout + hold`);
  assert.equal(f?.via, "standby", "the standby, measured, not a race's unmeasured winner");
  assert.match(f.reason, /^brownout: loss \d+% over 5 s$/);
  assert.equal(f.to?.gateway, "gw2");
  assert.ok(!sim.races.some((r) => r.reason === "failover"), "no failover race");
});

test("brownout-with-the-standby-off-measures-another-gateway-before-moving-there-then-drops-the-standby", () => {
  const rng = seededRandom(5);
  const sim = connectedSimOn(GWS, {
    path: (leg, sentAt) => (leg.gateway === "gw1" && sentAt >= 10_000 && rng() < 0.4 ? null : 20),
  });
  sim.runUntil(10_000);
  assert.equal(sim.snapshot().standby, null, "no standby while healthy: it is off");
  assert.ok(sim.runUntilTrue(() => sim.snapshot().lastFailover !== null, 40_000));
  const f = sim.snapshot().lastFailover;
  assert.equal(f?.via, "standby");
  assert.equal(f.to?.gateway, "gw2");
  assert.ok(!sim.races.some((r) => r.reason === "failover"), "no failover race");
  sim.runFor(20_000);
  assert.equal(sim.snapshot().standby, null, "the measuring standby is not kept: the standby is off");
  assert.equal(sim.snapshot().gateway, "gw2");
});

test("brownout-on-a-link-lossy-for-every-gateway-stays-put-for-ten-minutes", () => {
  for (const mode of ["on", "off"] as const) {
    const rng = seededRandom(11);
    const sim = connectedSimOn(GWS, {
      ctx: context(GWS, { standby: { mode } }),
      path: (_leg, sentAt) => (sentAt >= 10_000 && rng() < 0.3 ? null : 20),
    });
    sim.runUntil(10 * 60_000);
    const s = sim.snapshot();
    assert.equal(s.gateway, "gw1", `standby ${mode}: stayed`);
    assert.equal(s.lastFailover, null, `standby ${mode}: no move (crowded Wi-Fi is no gateway's fault)`);
    assert.match(s.summary, /^Connected to gw1 over WireGuard, degraded \(loss \d+% over 5 s\)$/);
  }
});

test("probes-answered-after-the-timeout-are-late-not-lost", () => {
  const sim = connectedSimOn(GWS, {
    ctx: context(GWS, { standby: { mode: "on" } }),
    // From 10 s every third probe of gw1 is answered 1.1 s late (the timeout is 1 s): a bloated queue, not loss.
    path: (leg, sentAt) => (leg.gateway === "gw1" && sentAt >= 10_000 && Math.round(sentAt / 50) % 3 === 0 ? 1100 : 20),
  });
  sim.runUntil(40_000);
  const s = sim.snapshot();
  assert.equal(s.lastFailover, null, "no brownout, so no move");
  assert.equal(s.summary, "Connected to gw1 over WireGuard");
  const h = connectionHealth(sim.state, sim.now, sim.ctx);
  assert.ok(h !== null);
  assert.equal(h.lossPct, 0, "late, not lost");
  assert.ok((h.rttP95Ms ?? 0) >= 1000, `the late replies' RTT counts: p95 ${String(h.rttP95Ms)} ms`);
});

test("brownout-without-an-alternative-stays-connected-says-so-and-clears-with-hysteresis", () => {
  const rng = seededRandom(9);
  let lossy = true;
  const sim = connectedSimOn([gateway("gw1", 1, { kinds: ["wireguard"] })], {
    path: (_l, sentAt) => (sentAt >= 5000 && lossy && rng() < 0.4 ? null : 20),
  });
  sim.runUntil(20_000);
  let s = sim.snapshot();
  assert.equal(s.state, "connected");
  assert.match(s.summary, /^Connected to gw1 over WireGuard, degraded \(loss \d+% over 5 s\)$/);
  assert.deepEqual(
    sim.events.flatMap((e) => (e.type === "health" ? [e.verdict.state] : [])),
    ["brownout"],
  );
  lossy = false;
  sim.runUntil(40_000);
  s = sim.snapshot();
  assert.equal(s.summary, "Connected to gw1 over WireGuard");
  assert.deepEqual(
    sim.events.flatMap((e) => (e.type === "health" ? [e.verdict.state] : [])),
    ["brownout", "healthy"],
  );
  assert.equal(sim.races.length, 1);
});

test("leg-up-after-the-failover-race-is-decided-is-stopped", () => {
  const sim = gw1DiesAt5s();
  sim.runUntil(10_000);
  const race = sim.snapshot().lastRace;
  const loser = race?.legs.find((l) => l.outcome === "lost" || l.outcome === "cancelled");
  assert.ok(loser !== undefined);
  const e = sim.send({ type: "leg-up", legId: loser.leg.id, config: tunnelConfig(loser.leg), firstReplyAt: sim.now });
  assert.deepEqual(e, [{ type: "stop-leg", legId: loser.leg.id }]);
  assert.equal(sim.snapshot().gateway, "gw2");
});

test("probes-and-leg-down-of-the-failed-leg-during-failover-change-nothing", () => {
  const sim = new Sim({ gateways: GWS, legs: (leg) => (leg.gateway === "gw1" ? { up: 100 } : "hang") });
  sim.send({ type: "connect" });
  sim.runUntil(1000);
  sim.send({ type: "leg-down", legId: "L1", reason: "x" });
  assert.equal(sim.phase(), "failing-over");
  assert.deepEqual(sim.send({ type: "leg-down", legId: "L1", reason: "again" }), []);
  assert.deepEqual(sim.send({ type: "probe", legId: "L1", sample: { seq: 999, sentAt: sim.now, rttMs: 3 } }), []);
  assert.deepEqual(sim.send({ type: "connect" }), []);
  assert.equal(sim.phase(), "failing-over");
});

/** gw1 is preferred but down at first; gw2 carries traffic until gw1 answers probes for two rechecks in a row. */
function recoverSim(gw1Answers: (now: number) => boolean): Sim {
  const sim = new Sim({
    gateways: GWS,
    legs: (leg, s) =>
      leg.gateway === "gw1" ? (gw1Answers(s.now) ? { up: 100 } : { fail: 10, code: "unreachable" }) : { up: 100 },
    candidates: (s) =>
      GWS.map((g) =>
        g.name === "gw1"
          ? {
              ...g,
              probe: probe(
                gw1Answers(s.now) ? 12 : null,
                gw1Answers(s.now) ? { "anyconnect-tls": "yes" } : { "anyconnect-tls": "no" },
              ),
            }
          : { ...g, probe: probe(30) },
      ),
  });
  sim.send({ type: "connect" });
  sim.runUntil(1000);
  assert.equal(sim.snapshot().gateway, "gw2");
  return sim;
}

test("a-better-gateway-reachable-for-two-rechecks-is-raced-back-to-make-before-break", () => {
  const sim = recoverSim((now) => now >= 20_000);
  const gw2Leg = sim.snapshot().activeLegId ?? "";
  // Rechecks at ~30 s (gw1 answers: 1) and ~60 s (2): the recover race starts then.
  sim.runUntil(2 * RECHECK_INTERVAL_MS);
  assert.equal(sim.snapshot().gateway, "gw2", "one good recheck is not enough");
  sim.runUntil(2 * RECHECK_INTERVAL_MS + 1000);
  const s = sim.snapshot();
  assert.equal(s.gateway, "gw1");
  const race = s.lastRace;
  assert.ok(race !== null);
  assert.equal(race.reason, "recover");
  assert.ok(
    race.legs.every((l) => l.leg.gateway === "gw1"),
    "the recover race only tries better gateways",
  );
  const switchAt = sim.routeLog[sim.routeLog.length - 1]?.at;
  assert.equal(stoppedAt(sim, gw2Leg), switchAt, "gw2's leg stops when gw1's routes are in");
  assert.ok(!sim.routeLog.some((r) => r.legId === null), "never without routes");
  assert.deepEqual(sim.failovers, [], "a planned move is not an outage");
});

test("a-better-gateway-that-flaps-between-rechecks-does-not-move-the-tunnel", () => {
  // gw1 answers only during the first recheck's window.
  const sim = recoverSim((now) => now >= 29_000 && now < 31_000);
  sim.runUntil(5 * RECHECK_INTERVAL_MS);
  assert.equal(sim.snapshot().gateway, "gw2");
  assert.equal(sim.races.length, 1);
});

test("a-recover-race-that-fails-keeps-the-current-tunnel", () => {
  const sim = new Sim({
    gateways: GWS,
    legs: (leg) => (leg.gateway === "gw1" ? { fail: 10, code: "unreachable" } : { up: 100 }),
    candidates: () => GWS.map((g) => (g.name === "gw1" ? { ...g, probe: probe(12, { "anyconnect-tls": "yes" }) } : g)),
  });
  sim.send({ type: "connect" });
  sim.runUntil(2 * RECHECK_INTERVAL_MS + 1000);
  const s = sim.snapshot();
  assert.equal(s.state, "connected");
  assert.equal(s.gateway, "gw2");
  const race = s.lastRace;
  assert.ok(race !== null);
  assert.equal(race.reason, "recover");
  assert.ok(race.legs.every((l) => l.outcome === "failed"));
  assert.deepEqual(
    sim.routeLog.map((r) => r.legId),
    [s.activeLegId],
  );
});

/** gw2 carries traffic; gw1 answers probes from the start, but its legs hang, so a recover race stays running. */
function hangingRecoverSim(): Sim {
  const sim = new Sim({
    gateways: GWS,
    legs: (leg, s) =>
      leg.gateway === "gw1" ? (s.now < 1000 ? { fail: 5, code: "unreachable" } : "hang") : { up: 100 },
    candidates: () => GWS.map((g) => (g.name === "gw1" ? { ...g, probe: probe(12, { "anyconnect-tls": "yes" }) } : g)),
  });
  sim.send({ type: "connect" });
  sim.runUntil(2 * RECHECK_INTERVAL_MS + 1000);
  assert.equal(sim.snapshot().gateway, "gw2");
  const recoverLegs = sim.effects.filter((e) => e.at > 1000 && e.effect.type === "start-leg");
  assert.equal(recoverLegs.length, 2, "the stagger timer started gw1's second leg in the recover race");
  return sim;
}

test("the-active-leg-dying-during-a-recover-race-cancels-it-and-fails-over", () => {
  const sim = hangingRecoverSim();
  const active = sim.snapshot().activeLegId ?? "";
  const recoverIds = [...sim.running].filter((id) => id !== active);
  assert.equal(recoverIds.length, 2);
  sim.send({ type: "leg-down", legId: active, reason: "tunnel closed by peer" });
  assert.equal(sim.phase(), "failing-over");
  for (const id of recoverIds) assert.ok(stoppedAt(sim, id) !== undefined, `recover leg ${id} stopped`);
  assert.ok(sim.races.some((r) => r.reason === "recover" && r.legs.every((l) => l.outcome === "cancelled")));
  assert.equal(sim.routes, active, "make-before-break still holds");
});

test("disconnect-during-a-recover-race-stops-its-legs-too", () => {
  const sim = hangingRecoverSim();
  sim.send({ type: "disconnect" });
  assert.equal(sim.phase(), "disconnected");
  assert.equal(sim.running.size, 0);
  assert.equal(sim.routes, null);
  assert.equal(sim.timers.size, 0);
});

test("telemetry-reads-the-active-legs-rtt-jitter-and-loss", () => {
  const sim = connectedSimOn(GWS, { path: (_l, sentAt) => (Math.round(sentAt / 50) % 4 === 0 ? 30 : 20) });
  sim.runFor(10_000);
  const h = connectionHealth(sim.state, sim.now, sim.ctx);
  assert.ok(h !== null);
  assert.equal(h.legId, "L1");
  assert.equal(h.lossPct, 0);
  assert.equal(h.rttP50Ms, 20);
  assert.equal(h.rttP95Ms, 30);
  // Every fourth RTT is 10 ms higher: two 10 ms steps per four probes.
  assert.ok(h.jitterMs !== null && Math.abs(h.jitterMs - 5) < 0.2, String(h.jitterMs));
  assert.equal(connectionHealth(initialState(), 0, sim.ctx), null);
});
