/**
 * A gateway that stops answering between two races (while connected, or while disconnected) must be known to the
 * next race before it plans its legs: a probe that found it silent ranks it after the gateways that answer, even
 * when it is the leg remembered from the last connect on this network.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Sim, context, gateway, probe } from "./harness.test.ts";
import type { Candidate, CandidateProbe, LegKind } from "./types.ts";

const KINDS: LegKind[] = ["wireguard", "anyconnect-tls"];
const answered = (): CandidateProbe => ({
  ...probe(20, { wireguard: "unknown", "anyconnect-tls": "yes" }),
  answered: true,
});
const silent = (): CandidateProbe => ({
  ...probe(null, { wireguard: "unknown", "anyconnect-tls": "no" }),
  answered: false,
});
const GWS: Candidate[] = ["gw1", "gw2", "gw3"].map((n, i) => gateway(n, i + 1, { kinds: KINDS, probe: answered() }));

function estate(dead: Set<string>, preferred: { gateway: string; kind: LegKind } | null): Sim {
  return new Sim({
    gateways: GWS,
    ctx: { ...context(GWS), preferredLeg: preferred },
    candidates: () => GWS.map((c) => ({ ...c, probe: dead.has(c.name) ? silent() : answered() })),
    legs: (leg) => (dead.has(leg.gateway) ? "hang" : { up: 100 }),
    path: (leg) => (dead.has(leg.gateway) ? null : 20),
  });
}

const firstLegs = (sim: Sim, from: number): string[] =>
  sim
    .effectsOf("start-leg")
    .slice(from)
    .map((e) => `${e.leg.gateway}/${e.leg.kind}`);

test("the-remembered-gateway-found-silent-since-the-last-race-is-not-raced-first", () => {
  const dead = new Set<string>();
  const sim = estate(dead, { gateway: "gw2", kind: "wireguard" });
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 5_000));
  assert.equal(sim.snapshot().gateway, "gw2", "the remembered leg goes first while it answers");
  sim.send({ type: "disconnect" });
  // gw2 stops answering while disconnected; the next connect's discovery probes it silent.
  dead.add("gw2");
  const before = sim.effectsOf("start-leg").length;
  sim.runFor(1_000);
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 5_000));
  assert.equal(firstLegs(sim, before)[0], "gw1/wireguard", "the silent remembered gateway does not take the lead");
  assert.equal(sim.snapshot().gateway, "gw1");
  assert.ok(!firstLegs(sim, before).some((l) => l.startsWith("gw2/")), "no leg waits on the silent gateway");
});

test("a-gateway-found-silent-by-a-recheck-while-connected-is-not-the-failover-races-first-leg", () => {
  const dead = new Set<string>();
  const sim = estate(dead, null);
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 5_000));
  dead.add("gw2");
  // The next recheck while connected (every 30 s) finds gw2 silent; then gw1 dies.
  sim.runFor(31_000);
  const before = sim.effectsOf("start-leg").length;
  dead.add("gw1");
  assert.ok(sim.runUntilTrue(() => sim.phase() === "failing-over", 5_000));
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 5_000));
  assert.equal(firstLegs(sim, before)[0], "gw3/wireguard");
  assert.equal(sim.snapshot().gateway, "gw3");
});
