/**
 * A gateway far away (a user in Sydney on a Frankfurt gateway, in-flight Wi-Fi, a congested mobile link): the
 * tunnel's round trip is longer than the default dead window. The monitor must start from the path's RTT that
 * the leg's proof of life measured, so a healthy far gateway is never declared dead.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Sim, context, gateway } from "./harness.test.ts";
import { deadWindowMs, healthStart } from "./health.ts";
import { HealthPolicy } from "../config/schema.ts";
import type { Candidate, LegKind } from "./types.ts";

const KINDS: LegKind[] = ["wireguard", "anyconnect-tls"];
const GWS: Candidate[] = [gateway("gw1", 1, { kinds: KINDS }), gateway("gw2", 2, { kinds: KINDS })];
/** The product's defaults: a probe every 25 ms, dead after 300 ms. */
const DEFAULTS = { probeIntervalMs: 25, deadAfterMs: 300 };

/** A seeded generator, so each run sees the same jitter and loss. */
function lcg(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 2 ** 32;
  };
}

for (const rtt of [360, 600]) {
  test(`a-gateway-${rtt}-ms-away-with-jitter-and-loss-connects-and-never-fails-over-in-a-minute`, () => {
    const rand = lcg(rtt);
    const sim = new Sim({
      gateways: GWS,
      ctx: context(GWS, { health: DEFAULTS }),
      legs: () => ({ up: 2 * rtt }),
      // 20 ms of jitter and 1 % loss on top of the distance.
      path: () => (rand() < 0.01 ? null : rtt + Math.floor(rand() * 20)),
    });
    sim.send({ type: "connect" });
    assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 10_000));
    const connectedAt = sim.now;
    assert.ok(connectedAt <= 3 * rtt, `connected after ${connectedAt} ms`);
    sim.runFor(60_000);
    assert.equal(sim.phase(), "connected", sim.snapshot().summary);
    assert.equal(sim.failovers.length, 0, `failovers: ${sim.failovers.map((f) => f.reason).join("; ")}`);
    assert.equal(sim.races.length, 1);
  });
}

test("the-dead-window-starts-from-the-path-rtt-and-never-below-the-policy", () => {
  const policy = HealthPolicy.parse(DEFAULTS);
  assert.equal(deadWindowMs(healthStart(0, 360), policy), 1440, "four round trips of a 360 ms path");
  assert.equal(deadWindowMs(healthStart(0, 20), policy), 300, "a near path keeps the policy's window");
  assert.equal(deadWindowMs(healthStart(0), policy), 300);
  // Once the monitor has replies of its own, they speak for the path.
  let h = healthStart(0, 360);
  h = { ...h, samples: Array.from({ length: 10 }, (_, i) => ({ seq: i, sentAt: i * 25, rttMs: 20 })) };
  assert.equal(deadWindowMs(h, policy), 300);
});

test("a-dead-far-gateway-is-still-found-and-left", () => {
  let dead = false;
  const sim = new Sim({
    gateways: GWS,
    ctx: context(GWS, { health: DEFAULTS }),
    legs: () => ({ up: 720 }),
    path: (leg) => (dead && leg.gateway === "gw1" ? null : 360),
  });
  sim.send({ type: "connect" });
  assert.ok(sim.runUntilTrue(() => sim.phase() === "connected", 10_000));
  sim.runFor(5_000);
  dead = true;
  const t0 = sim.now;
  assert.ok(sim.runUntilTrue(() => sim.phase() !== "connected", 5_000));
  // Four round trips of the path, plus the probe that was in flight.
  assert.ok(sim.now - t0 <= 4 * 380 + 400, `detected after ${sim.now - t0} ms`);
});
