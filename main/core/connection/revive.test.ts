/**
 * A gateway that comes back while a race runs (or while an error's backoff runs) is raced again at once: its legs
 * started into silence would otherwise wait for their engine's next retry, the leg deadline and a backoff.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Sim, context, gateway, probe } from "./harness.test.ts";
import { ERROR_RECHECK_MS, RACE_RECHECK_MS, engineRetryInTime } from "./machine-state.ts";
import { MAX_LEGS_IN_FLIGHT } from "./race.ts";
import type { Candidate, LegKind } from "./types.ts";

const KINDS: LegKind[] = ["wireguard", "anyconnect-tls"];
const GWS: Candidate[] = [gateway("gw1", 1, { kinds: KINDS }), gateway("gw2", 2, { kinds: KINDS })];

/** A gateway's outside probe: silent while it is down, a 20 ms answer once it is up. */
function probed(c: Candidate, up: boolean, at: number): Candidate {
  return { ...c, probe: { ...probe(up ? 20 : null, {}, at), answered: up } };
}

/** Which gateways are up at a time: `downFrom`/`upAgainAt` per gateway name. */
type Outages = Record<string, { downFrom: number; upAgainAt: number }>;
const isUp = (o: Outages, gw: string, t: number): boolean => {
  const w = o[gw];
  return w === undefined || t < w.downFrom || t >= w.upAgainAt;
};

function sim(outages: Outages, retry?: { initialMs: number; maxMs: number }): Sim {
  return new Sim({
    gateways: GWS,
    ...(retry === undefined ? {} : { ctx: context(GWS, { retry }) }),
    // A leg started while its gateway is down is sent into silence: it hangs until its deadline.
    legs: (leg, s) => (isUp(outages, leg.gateway, s.now) ? { up: 100 } : "hang"),
    path: (leg, sentAt) => (isUp(outages, leg.gateway, sentAt) ? 20 : null),
    candidates: (s) => GWS.map((c) => probed(c, isUp(outages, c.name, s.now), s.now)),
  });
}

const connectedOn = (s: Sim): string | null => (s.phase() === "connected" ? (s.snapshot().gateway ?? null) : null);

test("a-failover-race-starts-fresh-legs-to-a-gateway-that-came-back-instead-of-waiting-for-their-deadline", () => {
  // gw2 is down from 3 s; gw1 (active) dies at 5 s; gw2 comes back at 6.5 s, while the failover race's legs to it
  // (started at 5.58 s into silence) would wait until 10.58 s.
  const s = sim({ gw1: { downFrom: 5000, upAgainAt: 1e9 }, gw2: { downFrom: 3000, upAgainAt: 6500 } });
  s.send({ type: "connect" });
  assert.ok(s.runUntilTrue(() => connectedOn(s) === "gw1", 2000));
  assert.ok(s.runUntilTrue(() => s.phase() === "failing-over", 7000));
  const stuck = [...s.running].filter((id) => s.legsById.get(id)?.gateway === "gw2");
  assert.ok(stuck.length > 0, "legs to gw2 start while it is down");
  assert.ok(s.runUntilTrue(() => connectedOn(s) === "gw2", 12_000));
  const back = s.now;
  // The first round after 6.5 s comes back at most one recheck interval plus the round's own time later.
  assert.ok(back <= 6500 + RACE_RECHECK_MS + 10 + 100 + 10, `connected to gw2 at ${String(back)} ms`);
  for (const id of stuck)
    assert.ok(
      s.stopped.some((x) => x.legId === id && x.at < back),
      `${id} stopped`,
    );
  const f = s.snapshot().lastFailover;
  assert.ok(f !== null);
  assert.equal(f.to?.gateway, "gw2");
  assert.equal(f.from.gateway, "gw1");
  const legs = s.snapshot().lastRace?.legs ?? [];
  assert.ok(
    legs.some((l) => stuck.includes(l.leg.id) && l.outcome === "cancelled"),
    "the stuck legs are cancelled",
  );
});

test("a-connect-race-started-while-every-gateway-is-down-takes-the-first-one-back-at-once", () => {
  const s = sim({ gw1: { downFrom: 0, upAgainAt: 2000 }, gw2: { downFrom: 0, upAgainAt: 1e9 } });
  s.send({ type: "connect" });
  assert.ok(
    s.runUntilTrue(() => connectedOn(s) === "gw1", 5000),
    `state ${s.phase()} at ${String(s.now)}`,
  );
  assert.ok(s.now <= 2000 + RACE_RECHECK_MS + 10 + 100 + 10, `connected at ${String(s.now)} ms`);
  assert.deepEqual(
    s.races.map((r) => r.winner?.gateway ?? null),
    ["gw1"],
    "one race, won by gw1: none failed meanwhile",
  );
});

test("a-long-backoff-ends-when-a-silent-gateway-answers-again", () => {
  // Both gateways down for a long while: races fail and the backoff grows (20 s here); gw2 returns at 30 s.
  const s = sim(
    { gw1: { downFrom: 0, upAgainAt: 1e9 }, gw2: { downFrom: 0, upAgainAt: 30_000 } },
    { initialMs: 20_000, maxMs: 60_000 },
  );
  s.send({ type: "connect" });
  assert.ok(s.runUntilTrue(() => s.phase() === "error", 30_000));
  assert.ok(
    s.runUntilTrue(() => connectedOn(s) === "gw2", 60_000),
    `state ${s.phase()} at ${String(s.now)}`,
  );
  // One error recheck interval and the round (10 ms), then resolving and the leg (100 ms), with slack.
  assert.ok(s.now <= 30_000 + ERROR_RECHECK_MS + 10 + 10 + 100 + 50, `connected at ${String(s.now)} ms`);
});

test("rechecks-during-a-race-never-overlap-and-stop-with-it", () => {
  const s = sim({ gw1: { downFrom: 0, upAgainAt: 1e9 }, gw2: { downFrom: 0, upAgainAt: 1e9 } });
  s.send({ type: "connect" });
  assert.ok(s.runUntilTrue(() => s.phase() === "error", 20_000));
  const during = s.effects.filter((e) => e.effect.type === "resolve-candidates");
  // Rounds are RACE_RECHECK_MS apart after each one comes back (10 ms): never two at once.
  for (let i = 1; i < during.length; i++) {
    const a = during[i - 1];
    const b = during[i];
    assert.ok(a !== undefined && b !== undefined && b.at - a.at >= 10, "a round starts after the last came back");
  }
  assert.ok(during.length <= Math.ceil(s.now / RACE_RECHECK_MS) + 2, `${String(during.length)} rounds`);
});

test("a-failover-tries-the-failed-gateways-other-protocol-after-the-gateways-that-answer-and-before-silent-ones", () => {
  // gw1 (active) dies at 5 s; gw2 answers its probe, gw3 was found silent: a protocol that broke on gw1 (blocked,
  // its session lost) says less about gw1's other protocols than silence says about gw3.
  const gws = [...GWS, gateway("gw3", 3, { kinds: KINDS })];
  const out: Outages = { gw1: { downFrom: 5000, upAgainAt: 1e9 }, gw3: { downFrom: 0, upAgainAt: 1e9 } };
  const s = new Sim({
    gateways: gws,
    legs: (leg, x) => (isUp(out, leg.gateway, x.now) && leg.gateway !== "gw2" ? { up: 100 } : "hang"),
    path: (leg, sentAt) => (isUp(out, leg.gateway, sentAt) ? 20 : null),
    candidates: (x) => gws.map((c) => probed(c, isUp(out, c.name, x.now), x.now)),
  });
  s.send({ type: "connect" });
  assert.ok(s.runUntilTrue(() => s.phase() === "failing-over", 7000));
  assert.deepEqual(
    s.snapshot().lastRace?.legs.map((l) => `${l.leg.gateway}/${l.leg.kind}`),
    ["gw2/wireguard", "gw2/anyconnect-tls", "gw1/anyconnect-tls", "gw3/wireguard", "gw3/anyconnect-tls"],
  );
  assert.equal(
    s.snapshot().summary,
    "Reconnecting: gw1 stopped answering, trying gw2 and gw3, then gw1 over another protocol",
  );
});

test("a-leg-whose-engine-retries-in-time-is-kept-only-a-wireguard-leg-is-replaced", () => {
  // gw2 back at 6.5 s: its WireGuard leg (started 5.58 s) would re-send its handshake only at its deadline, so it
  // is replaced; its IKEv2 leg (started 5.83 s) still has charon's retransmits coming, so it keeps running.
  const gws = [
    gateway("gw1", 1, { kinds: ["wireguard", "ikev2"] }),
    gateway("gw2", 2, { kinds: ["wireguard", "ikev2"] }),
  ];
  const out: Outages = { gw1: { downFrom: 5000, upAgainAt: 1e9 }, gw2: { downFrom: 3000, upAgainAt: 6500 } };
  const s = new Sim({
    gateways: gws,
    legs: (leg, x) => (isUp(out, leg.gateway, x.now) ? { up: 100 } : "hang"),
    path: (leg, sentAt) => (isUp(out, leg.gateway, sentAt) ? 20 : null),
    candidates: (x) => gws.map((c) => probed(c, isUp(out, c.name, x.now), x.now)),
  });
  s.send({ type: "connect" });
  assert.ok(s.runUntilTrue(() => s.phase() === "failing-over", 7000));
  s.runUntil(6000);
  const first = (kind: LegKind): string =>
    [...s.legsById.values()].find((l) => l.gateway === "gw2" && l.kind === kind)?.id ?? "";
  const wg = first("wireguard");
  const ike = first("ikev2");
  assert.ok(s.runUntilTrue(() => connectedOn(s) === "gw2", 12_000));
  const legs = s.snapshot().lastRace?.legs ?? [];
  assert.equal(legs.find((l) => l.leg.id === wg)?.outcome, "cancelled", "the WireGuard leg was replaced");
  assert.equal(legs.find((l) => l.leg.id === ike)?.outcome, "lost", "the IKEv2 leg ran until the race was won");
  assert.equal(s.snapshot().protocol, "wireguard", "the fresh WireGuard leg won");
});

test("a-leg-is-left-to-its-engine-only-while-a-retry-may-be-completing-or-is-due-at-once", () => {
  const leg = (kind: LegKind, startedAt: number) => ({
    leg: { id: "L1", gateway: "gw1", kind },
    outcome: "starting" as const,
    startedAt,
    endedAt: null,
    error: null,
  });
  const cases: [LegKind, number, boolean][] = [
    ["wireguard", 100, true], // the first handshake may still be answered
    ["wireguard", 2000, false], // the next one is at 5 s: replace
    ["wireguard", 4800, true], // ...unless it is due at once
    ["ikev2", 1800, false], // 0.8 s after the 1 s retransmit, 0.6 s before the next
    ["ikev2", 4500, true], // the 4.36 s retransmit may still be completing
    ["ikev2", 4999, false], // the last retransmit is long gone and none follows
    ["anyconnect-tls", 3400, true], // the second SYN was 0.4 s ago
    ["anyconnect-tls", 4000, false], // the next SYN is at 7 s
  ];
  for (const [kind, age, keep] of cases)
    assert.equal(engineRetryInTime(leg(kind, 0), age), keep, `${kind} at ${String(age)} ms`);
});

test("a-gateway-back-while-every-slot-is-held-by-silent-gateways-legs-is-raced-at-once", () => {
  // Six gateways of four protocols each: gw2-gw6 are down, gw1 (active) dies at 1 s, and the failover race keeps
  // every slot filled with legs into silence. gw2 comes back after its own legs have failed: a silent gateway's
  // leg gives way at once, rather than gw2 waiting for the next leg deadline to free a slot.
  const all: LegKind[] = ["wireguard", "anyconnect-tls", "ikev2", "anyconnect-dtls"];
  const names = ["gw1", "gw2", "gw3", "gw4", "gw5", "gw6"];
  const gws = names.map((n, i) => gateway(n, i + 1, { kinds: all }));
  const backAt = 12_200;
  const outages: Outages = Object.fromEntries(
    names.map((n) => [
      n,
      n === "gw1" ? { downFrom: 1000, upAgainAt: 1e9 } : { downFrom: 0, upAgainAt: n === "gw2" ? backAt : 1e9 },
    ]),
  );
  const s = new Sim({
    gateways: gws,
    ctx: context(gws, { race: { maxGateways: 6 } }),
    legs: (leg, sim) => (isUp(outages, leg.gateway, sim.now) ? { up: 100 } : "hang"),
    path: (leg, sentAt) => (isUp(outages, leg.gateway, sentAt) ? 20 : null),
    candidates: (sim) => gws.map((c) => probed(c, isUp(outages, c.name, sim.now), sim.now)),
  });
  s.send({ type: "connect" });
  assert.ok(s.runUntilTrue(() => connectedOn(s) === "gw1", 2000));
  s.runUntil(backAt - 1);
  assert.equal(s.running.size - 1, MAX_LEGS_IN_FLIGHT, "every slot held, besides the failed active leg");
  assert.ok(
    ![...s.running].some((id) => s.legsById.get(id)?.gateway === "gw2"),
    "gw2's own legs have all failed already",
  );
  assert.ok(
    s.runUntilTrue(() => connectedOn(s) === "gw2", 12_000),
    `state ${s.phase()} at ${String(s.now)}`,
  );
  // The first round that hears gw2 again starts its leg in the same instant: no wait for a slot to free.
  const heardAt = s.inputs.find(
    (i) =>
      i.type === "candidates" && i.now >= backAt && i.candidates.some((c) => c.name === "gw2" && c.probe?.answered),
  )?.now;
  const firstLeg = s.effects.find(
    (e) => e.at >= backAt && e.effect.type === "start-leg" && e.effect.leg.gateway === "gw2",
  );
  assert.ok(heardAt !== undefined && heardAt <= backAt + RACE_RECHECK_MS + 10, `heard at ${String(heardAt)}`);
  assert.equal(firstLeg?.at, heardAt, "gw2's fresh leg starts as soon as it is heard");
  assert.equal(s.now, heardAt + 100);
});
