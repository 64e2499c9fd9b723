import assert from "node:assert/strict";
import { test } from "node:test";
import { RacePolicy } from "../config/schema.ts";
import { gateway, probe } from "./harness.test.ts";
import {
  legKey,
  planLegs,
  raceCancel,
  raceOnLegFailed,
  raceOnLegUp,
  raceOnStaggerTimer,
  raceRecord,
  raceStart,
  type RaceState,
} from "./race.ts";
import type { Effect, Leg } from "./types.ts";

const policy = RacePolicy.parse({});
function ids(): () => string {
  let n = 0;
  return () => `L${String(++n)}`;
}
const kinds = (legs: Leg[]): string[] => legs.map(legKey);
const started = (effects: Effect[]): string[] => effects.flatMap((e) => (e.type === "start-leg" ? [e.leg.id] : []));
const stoppedIds = (effects: Effect[]): string[] => effects.flatMap((e) => (e.type === "stop-leg" ? [e.legId] : []));
const outcomes = (r: RaceState): string[] => r.legs.map((l) => `${l.leg.id}:${l.outcome}`);

test("plan-leads-with-the-best-gateway-then-one-leg-per-gateway-then-the-other-kinds-of-the-top-gateways", () => {
  const ranked = [
    gateway("gw1", 1, { kinds: ["anyconnect-tls", "wireguard", "ikev2"] }),
    gateway("gw2", 2, { kinds: ["ikev2", "wireguard"] }),
    gateway("gw3", 3, { kinds: ["wireguard", "anyconnect-tls"] }),
    gateway("gw4", 4, { kinds: ["wireguard", "ikev2"] }),
  ];
  const legs = planLegs(ranked, { ...policy, maxGateways: 3 }, { nextId: ids() });
  assert.deepEqual(kinds(legs), [
    "gw1/wireguard",
    "gw1/anyconnect-tls",
    "gw2/wireguard",
    "gw3/wireguard",
    "gw4/wireguard",
    "gw1/ikev2",
    "gw2/ikev2",
    "gw3/anyconnect-tls",
  ]);
  assert.deepEqual(
    legs.map((l) => l.id),
    ["L1", "L2", "L3", "L4", "L5", "L6", "L7", "L8"],
  );
  // A re-plan that leaves out the legs already started keeps the order the race began with.
  const again = planLegs(
    ranked,
    { ...policy, maxGateways: 3 },
    { nextId: ids(), exclude: legs.slice(0, 3).map((l) => ({ legKey: legKey(l) })) },
  );
  assert.deepEqual(kinds(again), kinds(legs).slice(3));
});

test("plan-skips-kinds-the-probe-found-unreachable-and-excluded-gateways-do-not-take-a-slot", () => {
  const ranked = [
    gateway("gw1", 1, { kinds: ["wireguard", "anyconnect-tls"] }),
    gateway("gw2", 2, {
      kinds: ["wireguard", "anyconnect-tls"],
      probe: probe(10, { "anyconnect-tls": "no", wireguard: "unknown" }),
    }),
    gateway("gw3", 3, { kinds: ["anyconnect-tls"], probe: probe(null, { "anyconnect-tls": "no" }) }),
    gateway("gw4", 4, { kinds: ["ikev2"] }),
  ];
  const legs = planLegs(ranked, { ...policy, maxGateways: 2 }, { nextId: ids(), exclude: [{ gateway: "gw1" }] });
  assert.deepEqual(kinds(legs), ["gw2/wireguard", "gw4/ikev2"], "gw3 has no leg left, so gw4 takes the second slot");
  const sameGw = planLegs(ranked.slice(0, 1), policy, { nextId: ids(), exclude: [{ legKey: "gw1/wireguard" }] });
  assert.deepEqual(kinds(sameGw), ["gw1/anyconnect-tls"]);
});

function threeLegRace(now = 1000): { race: RaceState; effects: Effect[] } {
  const legs = planLegs(
    [gateway("gw1", 1, { kinds: ["wireguard", "ikev2"] }), gateway("gw2", 2, { kinds: ["wireguard"] })],
    policy,
    { nextId: ids() },
  );
  return raceStart("R1", legs, "connect", now, policy);
}

test("start-launches-the-first-leg-with-its-deadline-and-arms-the-stagger", () => {
  const { race, effects } = threeLegRace(1000);
  assert.deepEqual(started(effects), ["L1"]);
  assert.ok(effects.some((e) => e.type === "start-leg" && e.deadlineAt === 1000 + policy.legDeadlineMs));
  assert.ok(
    effects.some((e) => e.type === "set-timer" && e.timer === "race-stagger" && e.at === 1000 + policy.staggerMs),
  );
  assert.deepEqual(outcomes(race), ["L1:starting", "L2:pending", "L3:pending"]);
});

test("stagger-starts-the-next-leg-and-an-early-timer-is-armed-again", () => {
  const { race } = threeLegRace(1000);
  const early = raceOnStaggerTimer(race, 1100, policy);
  assert.equal(early.race, race);
  assert.deepEqual(early.effects, [{ type: "set-timer", timer: "race-stagger", at: 1000 + policy.staggerMs }]);
  const r = raceOnStaggerTimer(race, 1250, policy);
  assert.deepEqual(started(r.effects), ["L2"]);
  const r2 = raceOnStaggerTimer(r.race, 1500, policy);
  assert.deepEqual(started(r2.effects), ["L3"]);
  assert.ok(
    r2.effects.some((e) => e.type === "cancel-timer" && e.timer === "race-stagger"),
    "no pending leg left: nothing to stagger",
  );
  assert.deepEqual(raceOnStaggerTimer(r2.race, 1750, policy).effects, []);
});

test("a-failed-leg-starts-the-next-at-once-and-resets-the-stagger", () => {
  const { race } = threeLegRace(1000);
  const r = raceOnLegFailed(race, "L1", "unreachable", "refused", 1040, policy);
  assert.deepEqual(started(r.effects), ["L2"]);
  assert.ok(
    r.effects.some((e) => e.type === "set-timer" && e.timer === "race-stagger" && e.at === 1040 + policy.staggerMs),
  );
  assert.equal(r.race.legs[0]?.error?.code, "unreachable");
  assert.equal(r.decided, false);
});

test("first-leg-up-wins-started-losers-are-stopped-and-unstarted-legs-cancelled", () => {
  const { race } = threeLegRace(1000);
  const r1 = raceOnStaggerTimer(race, 1250, policy);
  const up = raceOnLegUp(r1.race, "L2", 1300);
  assert.equal(up.decided, true);
  assert.equal(up.race.winner?.id, "L2");
  assert.deepEqual(stoppedIds(up.effects), ["L1"]);
  assert.deepEqual(outcomes(up.race), ["L1:lost", "L2:won", "L3:cancelled"]);
  assert.ok(up.effects.some((e) => e.type === "cancel-timer" && e.timer === "race-stagger"));
  const rec = raceRecord(up.race);
  assert.equal(rec.endedAt, 1300);
  assert.equal(rec.winner?.id, "L2");
});

test("late-leg-up-after-the-race-is-decided-stops-that-tunnel-but-never-the-winner", () => {
  const { race } = threeLegRace(1000);
  const r1 = raceOnStaggerTimer(race, 1250, policy);
  const won = raceOnLegUp(r1.race, "L2", 1300);
  const late = raceOnLegUp(won.race, "L1", 1310);
  assert.deepEqual(stoppedIds(late.effects), ["L1"]);
  assert.equal(late.race, won.race);
  assert.deepEqual(raceOnLegUp(won.race, "L2", 1320).effects, [], "a duplicate leg-up of the winner is ignored");
  assert.deepEqual(raceOnLegUp(won.race, "L99", 1320).effects, [], "not this race's leg");
  assert.deepEqual(
    raceOnLegFailed(won.race, "L1", "cancelled", "stopped", 1330, policy).effects,
    [],
    "a late failure is ignored",
  );
});

test("total-failure-reports-every-leg-with-its-error", () => {
  let { race } = threeLegRace(1000);
  race = raceOnLegFailed(race, "L1", "timeout", "no handshake", 1100, policy).race;
  race = raceOnLegFailed(race, "L2", "auth-failed", "bad password", 1200, policy).race;
  const last = raceOnLegFailed(race, "L3", "unreachable", "refused", 1300, policy);
  assert.equal(last.decided, true);
  assert.equal(last.race.status, "failed");
  assert.deepEqual(
    last.race.legs.map((l) => [l.leg.id, l.outcome, l.error?.code]),
    [
      ["L1", "failed", "timeout"],
      ["L2", "failed", "auth-failed"],
      ["L3", "failed", "unreachable"],
    ],
  );
});

test("cancel-stops-started-legs-and-is-idempotent", () => {
  const { race } = threeLegRace(1000);
  const r1 = raceOnStaggerTimer(race, 1250, policy);
  const c = raceCancel(r1.race, 1260);
  assert.deepEqual(stoppedIds(c.effects).sort(), ["L1", "L2"]);
  assert.deepEqual(outcomes(c.race), ["L1:cancelled", "L2:cancelled", "L3:cancelled"]);
  assert.deepEqual(raceCancel(c.race, 1270).effects, []);
});

test("an-empty-plan-is-a-race-that-already-failed", () => {
  const r = raceStart("R9", [], "connect", 5, policy);
  assert.equal(r.race.status, "failed");
  assert.equal(r.decided, true);
  assert.deepEqual(started(r.effects), []);
});
