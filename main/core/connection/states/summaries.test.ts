import assert from "node:assert/strict";
import { test } from "node:test";
import { Sim, context, gateway, probe } from "../harness.test.ts";
import { initialState } from "../machine.ts";
import type { ErrorState } from "../machine-state.ts";
import { RECHECK_INTERVAL_MS } from "./connected.ts";
import * as error from "./error.ts";
import * as resolving from "./resolving.ts";

const GWS = [gateway("gw1", 1, { kinds: ["wireguard", "ikev2"] }), gateway("gw2", 2, { kinds: ["anyconnect-tls"] })];

test("resolving-says-whether-it-is-a-first-look-or-a-retry", () => {
  const shared = initialState().shared;
  const first = resolving.enter(shared, 5, "connect", 0);
  const again = resolving.enter(shared, 5, "retry", 3);
  assert.ok("state" in first && "state" in again);
  assert.equal(first.state.name === "resolving" ? resolving.summary(first.state) : "", "Looking for gateways");
  assert.equal(
    again.state.name === "resolving" ? resolving.summary(again.state) : "",
    "Looking for gateways again (attempt 4)",
  );
});

test("racing-names-the-legs-in-flight-and-counts-failures", () => {
  const sim = new Sim({
    gateways: GWS,
    legs: (leg) => (leg.kind === "wireguard" ? { fail: 20, code: "timeout" } : "hang"),
  });
  sim.send({ type: "connect" });
  sim.runUntil(100);
  assert.equal(sim.snapshot().summary, "Connecting: trying gw1 over IKEv2 (1 attempt failed)");
  sim.runUntil(300);
  assert.equal(
    sim.snapshot().summary,
    "Connecting: trying gw1 over IKEv2, gw2 over AnyConnect (TLS) (1 attempt failed)",
  );
});

test("a-retry-race-says-retrying", () => {
  const sim = new Sim({ gateways: GWS, legs: (_leg, s) => (s.now < 1000 ? { fail: 5, code: "unreachable" } : "hang") });
  sim.send({ type: "connect" });
  sim.runUntil(2000);
  assert.equal(sim.snapshot().summary, "Retrying: trying gw1 over WireGuard or IKEv2, gw2 over AnyConnect (TLS)");
});

test("error-counts-down-to-the-retry-and-then-says-now", () => {
  const ctx = context(GWS);
  const out = error.enter(initialState().shared, 1000, ctx, {
    to: "error",
    reason: "No gateway reachable",
    attempt: 4,
    retry: true,
    race: null,
    failover: null,
  });
  assert.ok("state" in out);
  const st = out.state as ErrorState;
  assert.equal(st.nextRetryAt, 1000 + 8000, "fourth failure: 8 s");
  assert.equal(error.summary(st, 1000), "No gateway reachable; retrying in 8 s");
  assert.equal(error.summary(st, 8500), "No gateway reachable; retrying in 1 s");
  assert.equal(error.summary(st, 9000), "No gateway reachable; retrying now");
});

test("connected-says-when-it-is-trying-to-move-back-to-a-better-gateway", () => {
  let gw1Up = false;
  const sim = new Sim({
    gateways: GWS,
    legs: (leg) => (leg.gateway === "gw1" ? (gw1Up ? "hang" : { fail: 5, code: "unreachable" }) : { up: 50 }),
    candidates: () => GWS.map((g) => (g.name === "gw1" && gw1Up ? { ...g, probe: probe(10, { ikev2: "yes" }) } : g)),
  });
  sim.send({ type: "connect" });
  sim.runUntil(1000);
  assert.equal(sim.snapshot().summary, "Connected to gw2 over AnyConnect (TLS)");
  gw1Up = true;
  sim.runUntil(2 * RECHECK_INTERVAL_MS + 100);
  assert.equal(sim.snapshot().summary, "Connected to gw2 over AnyConnect (TLS); trying to move back to gw1");
});
