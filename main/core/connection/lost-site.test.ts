/**
 * A whole site lost: the gateways with the best priority are all down (a data centre gone, decommissioned entries
 * left at the top of the managed list). Races and failovers must move on to the gateways that answer.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { rankCandidates } from "./candidates.ts";
import { Sim, context, gateway, probe } from "./harness.test.ts";
import type { Candidate, CandidateProbe, LegKind } from "./types.ts";

const KINDS: LegKind[] = ["wireguard", "anyconnect-tls"];
const silent = (): CandidateProbe => ({
  ...probe(null, { wireguard: "unknown", "anyconnect-tls": "no" }),
  answered: false,
});
const answered = (ms: number): CandidateProbe => ({
  ...probe(ms, { wireguard: "unknown", "anyconnect-tls": "yes" }),
  answered: true,
});
const DEAD = ["dead1", "dead2", "dead3"];
const LIVE = ["gw1", "gw2", "gw3"];
/** Three dead gateways above three live ones, unprobed (as configured). */
const CONFIGURED: Candidate[] = [
  ...DEAD.map((n, i) => gateway(n, i + 1, { kinds: KINDS })),
  ...LIVE.map((n, i) => gateway(n, 10 * (i + 1), { kinds: KINDS })),
];
/** The same after the pre-connect probes: the dead ones gave no answer at all. */
const PROBED: Candidate[] = CONFIGURED.map((c) => ({ ...c, probe: DEAD.includes(c.name) ? silent() : answered(20) }));

const startedGateways = (sim: Sim): string[] => sim.effectsOf("start-leg").map((e) => e.leg.gateway);

test("a-probed-gateway-that-gave-no-answer-ranks-after-every-gateway-that-answered", () => {
  const r = rankCandidates(PROBED, null);
  assert.deepEqual(
    r.map((c) => c.name),
    [...LIVE, ...DEAD],
  );
  // Unprobed gateways keep their priority: no answer is only known once asked.
  assert.deepEqual(
    rankCandidates(CONFIGURED, null).map((c) => c.name),
    [...DEAD, ...LIVE],
  );
});

test("with-probes-in-a-connect-races-the-gateways-that-answered-first", () => {
  const sim = new Sim({
    gateways: CONFIGURED,
    candidates: () => PROBED,
    legs: (leg) => (DEAD.includes(leg.gateway) ? "hang" : { up: 100 }),
  });
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 5_000));
  assert.equal(sim.snapshot().gateway, "gw1");
  assert.ok(sim.now < 1000, `connected at ${sim.now} ms`);
  assert.deepEqual(startedGateways(sim), ["gw1"], "no leg to a silent gateway");
});

test("a-race-that-failed-on-every-leg-moves-on-to-gateways-not-yet-tried", () => {
  // No probe results (a cold start): the race begins with the dead gateways, whose legs all time out.
  const sim = new Sim({
    gateways: CONFIGURED,
    legs: (leg) => (DEAD.includes(leg.gateway) ? { fail: 300, code: "timeout" } : { up: 100 }),
  });
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected" || sim.phase() === "error", 20_000));
  assert.equal(sim.phase(), "connected", sim.snapshot().summary);
  assert.equal(sim.snapshot().gateway, "gw1");
  assert.equal(sim.races.length, 1, "one race, extended, not an error and a retry of the same gateways");
  assert.deepEqual([...new Set(startedGateways(sim))], [...DEAD, "gw1"]);
});

test("probes-that-arrive-during-a-race-move-answering-gateways-ahead-of-silent-ones", () => {
  // The connect races from the configuration; the probes come back 400 ms later.
  const sim = new Sim({ gateways: CONFIGURED, legs: (leg) => (DEAD.includes(leg.gateway) ? "hang" : { up: 100 }) });
  sim.send({ type: "connect" });
  sim.runFor(400);
  assert.deepEqual([...new Set(startedGateways(sim))], ["dead1"]);
  sim.send({ type: "candidates", candidates: PROBED });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 5_000));
  assert.equal(sim.snapshot().gateway, "gw1");
  assert.ok(sim.now < 1000, `connected at ${sim.now} ms, not after the dead legs' deadlines`);
});

test("a-failover-race-that-fails-on-every-leg-moves-on-to-gateways-not-yet-tried", () => {
  // Connected to gw1; gw2 and gw3 (the next by priority) are down as well, backup answers.
  const gws = [...LIVE.map((n, i) => gateway(n, i + 1, { kinds: KINDS })), gateway("backup", 9, { kinds: KINDS })];
  const down = new Set<string>();
  const sim = new Sim({
    gateways: gws,
    ctx: context(gws, { race: { maxGateways: 2 } }),
    legs: (leg) => (down.has(leg.gateway) ? { fail: 200, code: "timeout" } : { up: 100 }),
    path: (leg) => (down.has(leg.gateway) ? null : 20),
  });
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 5_000));
  assert.equal(sim.snapshot().gateway, "gw1");
  for (const g of LIVE) down.add(g);
  assert.ok(sim.runUntilTrue(() => sim.phase() === "failing-over", 5_000));
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected" || sim.phase() === "error", 20_000));
  assert.equal(sim.phase(), "connected", sim.snapshot().summary);
  assert.equal(sim.snapshot().gateway, "backup");
});
