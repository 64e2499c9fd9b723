/**
 * A large estate: 16 gateways, each offering all four protocols, most of them dead. The race must reach the live
 * ones in seconds, never run more than MAX_LEGS_IN_FLIGHT engines at once, and stay as fast as ever when all is well.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Sim, context, gateway, probe } from "./harness.test.ts";
import { MAX_LEGS_IN_FLIGHT } from "./race.ts";
import type { Candidate, CandidateProbe } from "./types.ts";

const NAMES = Array.from({ length: 16 }, (_, i) => `gw${String(i + 1).padStart(2, "0")}`);
/** Only the last-ranked two are alive. */
const ALIVE = new Set(NAMES.slice(-2));
const CONFIGURED: Candidate[] = NAMES.map((n, i) => gateway(n, i + 1, { address: `198.18.${String(i)}.2` }));
const answered = (ms: number): CandidateProbe => ({
  ...probe(ms, { wireguard: "unknown", ikev2: "unknown", "anyconnect-tls": "yes", "anyconnect-dtls": "unknown" }),
  answered: true,
});
const silent = (): CandidateProbe => ({
  ...probe(null, { wireguard: "unknown", ikev2: "unknown", "anyconnect-tls": "no", "anyconnect-dtls": "no" }),
  answered: false,
});
/** What the probes say of the estate: the dead silent, or every host answering its port (the tunnels still die). */
const probed = (deadAnswer: boolean): Candidate[] =>
  CONFIGURED.map((c) => ({ ...c, probe: ALIVE.has(c.name) ? answered(20) : deadAnswer ? answered(20) : silent() }));

/**
 * Bound for a race with no probe verdict that tells the dead from the live: the legs of the 14 dead gateways give
 * up only at their 5 s deadline; one leg per gateway comes first, so gw15's is the 16th, and it starts when the
 * 8th dead leg frees its slot: 5 s + 7 staggers of 250 ms = 6.75 s, plus discovery (10 ms) and its handshake (100 ms).
 */
const NO_VERDICT_BOUND_MS = 7_000;

for (const [name, candidates] of [
  ["no-probe-result", CONFIGURED],
  ["every-host-answering-its-port", probed(true)],
] as const) {
  test(`16x4-only-the-last-two-alive-with-${name}-connects-in-seconds-within-the-cap`, () => {
    for (const maxGateways of [3, 16]) {
      const sim = new Sim({
        gateways: CONFIGURED,
        ctx: context(CONFIGURED, { race: { maxGateways } }),
        candidates: () => candidates,
        legs: (leg) => (ALIVE.has(leg.gateway) ? { up: 100 } : "hang"),
      });
      sim.send({ type: "connect" });
      assert.ok(
        sim.runUntilTrue(() => sim.phase() === "connected", 60_000),
        sim.snapshot().summary,
      );
      assert.equal(sim.snapshot().gateway, "gw15");
      assert.ok(
        sim.now <= NO_VERDICT_BOUND_MS,
        `maxGateways ${String(maxGateways)}: connected at ${String(sim.now)} ms`,
      );
      assert.ok(
        sim.peakRunning <= MAX_LEGS_IN_FLIGHT,
        `maxGateways ${String(maxGateways)}: ${String(sim.peakRunning)} legs in flight at once`,
      );
    }
  });
}

test("16x4-probes-that-find-the-first-fourteen-silent-while-every-slot-is-held-make-their-legs-give-way", () => {
  // A connect by hostname: discovery and probes come back 3 s in, when the race has filled every slot.
  const sim = new Sim({
    gateways: CONFIGURED,
    candidates: (s) => (s.now < 3000 ? CONFIGURED : probed(false)),
    legs: (leg) => (ALIVE.has(leg.gateway) ? { up: 100 } : "hang"),
  });
  sim.send({ type: "connect" });
  sim.runUntil(2990);
  assert.equal(sim.running.size, MAX_LEGS_IN_FLIGHT, "every slot held by a dead gateway's leg");
  sim.send({ type: "candidates", candidates: probed(false) });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 10_000));
  assert.equal(sim.snapshot().gateway, "gw15");
  // The probe result's leg starts at once; it does not wait for a dead leg's 5 s deadline.
  assert.ok(sim.now <= 3100, `connected at ${String(sim.now)} ms`);
  assert.ok(sim.peakRunning <= MAX_LEGS_IN_FLIGHT, `${String(sim.peakRunning)} legs in flight at once`);
  const race = sim.snapshot().lastRace;
  assert.ok(race !== null);
  assert.ok(
    race.legs.some((l) => l.outcome === "cancelled" && l.startedAt !== null && !ALIVE.has(l.leg.gateway)),
    "the silent gateways' legs were stopped",
  );
});

test("16x4-all-healthy-connects-on-the-first-leg-as-fast-as-with-one-gateway", () => {
  const all = CONFIGURED.map((c) => ({ ...c, probe: answered(20) }));
  const sim = new Sim({ gateways: all, legs: () => ({ up: 100 }) });
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 5_000));
  assert.equal(sim.now, 110, "discovery (10 ms) and the first leg's handshake (100 ms)");
  assert.equal(sim.effectsOf("start-leg").length, 1);
  // A network that drops UDP: the best gateway's TLS leg still starts one stagger in.
  const udpBlocked = new Sim({
    gateways: all,
    legs: (leg) => (leg.kind === "anyconnect-tls" ? { up: 100 } : "hang"),
  });
  udpBlocked.send({ type: "connect" });
  assert.ok(udpBlocked.runUntilTrue(() => udpBlocked.phase() === "connected", 5_000));
  assert.equal(udpBlocked.snapshot().gateway, "gw01");
  assert.equal(udpBlocked.now, 10 + 250 + 100);
});
