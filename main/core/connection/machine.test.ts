import assert from "node:assert/strict";
import { test } from "node:test";
import { Sim, context, gateway, tunnelConfig, type LegScript } from "./harness.test.ts";
import { initialState, snapshot, step, type MachineContext } from "./machine.ts";
import { TIMERS } from "./machine-state.ts";
import type { Candidate, Effect, Leg, LegKind, MachineInput } from "./types.ts";

const KINDS: LegKind[] = ["wireguard", "anyconnect-tls"];
const GWS: Candidate[] = [
  gateway("gw1", 1, { kinds: KINDS }),
  gateway("gw2", 2, { kinds: KINDS }),
  gateway("gw3", 3, { kinds: KINDS }),
];

const started = (sim: Sim): { at: number; id: string; key: string }[] =>
  sim.effects.flatMap((e) =>
    e.effect.type === "start-leg"
      ? [{ at: e.at, id: e.effect.leg.id, key: `${e.effect.leg.gateway}/${e.effect.leg.kind}` }]
      : [],
  );
const stoppedIds = (sim: Sim): string[] => sim.stopped.map((s) => s.legId);
const types = (effects: Effect[]): string[] =>
  effects.map((e) => (e.type === "set-timer" || e.type === "cancel-timer" ? `${e.type}:${e.timer}` : e.type));

function connectedSim(opts: Partial<ConstructorParameters<typeof Sim>[0]> = {}): Sim {
  const sim = new Sim({ gateways: GWS, ...opts });
  sim.send({ type: "connect" });
  assert.ok(
    sim.runUntilTrue(() => sim.phase() === "connected", 20_000),
    `connected; ended ${sim.snapshot().summary}`,
  );
  return sim;
}

test("all-healthy-the-first-leg-wins-and-the-others-are-stopped", () => {
  const sim = new Sim({ gateways: GWS, legs: () => ({ up: 400 }) });
  sim.send({ type: "connect" });
  assert.equal(sim.phase(), "resolving");
  assert.deepEqual(types(sim.effects.map((e) => e.effect)), ["resolve-candidates", "notify"]);
  sim.runFor(2000);
  const s = sim.snapshot();
  assert.equal(s.state, "connected");
  assert.equal(s.gateway, "gw1");
  assert.equal(s.protocol, "wireguard");
  assert.equal(s.summary, "Connected to gw1 over WireGuard");
  // Discovery took 10 ms; legs start 250 ms apart; the first is up 400 ms after its start.
  assert.deepEqual(started(sim), [
    { at: 10, id: "L1", key: "gw1/wireguard" },
    { at: 260, id: "L2", key: "gw1/anyconnect-tls" },
  ]);
  assert.deepEqual(stoppedIds(sim), ["L2"], "the started loser is torn down");
  assert.deepEqual([...sim.running], ["L1"], "only the winner runs");
  assert.equal(sim.routes, "L1");
  assert.deepEqual([...sim.monitors], ["L1"]);
  const race = s.lastRace;
  assert.ok(race !== null);
  assert.equal(race.reason, "connect");
  assert.deepEqual(
    race.legs.map((l) => `${l.leg.id}:${l.outcome}`),
    ["L1:won", "L2:lost", "L3:cancelled", "L4:cancelled", "L5:cancelled", "L6:cancelled"],
  );
  assert.equal(race.startedAt, 10);
  assert.equal(race.endedAt, 410);
  assert.equal(sim.timers.has("race-stagger"), false);
  assert.ok(sim.timers.has("health-check") && sim.timers.has("recheck-candidates"));
});

test("on-winning-routes-move-first-then-losers-stop-then-monitor-and-records", () => {
  const sim = new Sim({ gateways: GWS, legs: () => ({ up: 400 }) });
  sim.send({ type: "connect" });
  sim.runUntil(409);
  const at410 = (): Effect[] => sim.effects.filter((e) => e.at === 410).map((e) => e.effect);
  sim.runUntil(410);
  assert.deepEqual(types(at410()), [
    "apply-routes",
    "notify", // leg L1 won
    "stop-leg",
    "notify", // leg L2 lost
    "cancel-timer:race-stagger",
    "start-monitor",
    "set-timer:health-check",
    "set-timer:recheck-candidates",
    "record-race",
    "notify", // race-ended
    "notify", // state connected
  ]);
});

test("first-leg-fails-the-next-starts-at-once", () => {
  const sim = connectedSim({
    legs: (leg) => (leg.id === "L1" ? { fail: 30, code: "unreachable", message: "port closed" } : { up: 100 }),
  });
  assert.deepEqual(
    started(sim).map((s) => [s.at, s.id]),
    [
      [10, "L1"],
      [40, "L2"],
    ],
    "L2 starts the moment L1 fails, not a stagger later",
  );
  assert.equal(sim.snapshot().protocol, "anyconnect-tls");
  assert.equal(sim.snapshot().lastRace?.legs[0]?.error?.code, "unreachable");
});

test("stagger-timer-starts-the-next-leg-while-the-first-hangs", () => {
  const sim = connectedSim({ legs: (leg) => (leg.id === "L1" ? "hang" : { up: 50 }) });
  assert.deepEqual(
    started(sim).map((s) => [s.at, s.id]),
    [
      [10, "L1"],
      [260, "L2"],
    ],
  );
  assert.equal(sim.snapshot().activeLegId, "L2");
  assert.deepEqual(stoppedIds(sim), ["L1"], "the hanging leg lost and is stopped");
  assert.equal(sim.snapshot().lastRace?.legs[0]?.outcome, "lost");
});

test("all-fail-error-with-every-leg-reason-then-backoff-retry-and-recovery-when-a-gateway-returns", () => {
  let gw2Back = false;
  const sim = new Sim({
    gateways: GWS,
    legs: (leg) =>
      gw2Back && leg.gateway === "gw2"
        ? { up: 80 }
        : { fail: 20, code: leg.kind === "wireguard" ? "timeout" : "unreachable" },
  });
  sim.send({ type: "connect" });
  sim.runUntil(200);
  let s = sim.snapshot();
  assert.equal(s.state, "error");
  assert.ok(s.lastRace !== null);
  assert.deepEqual(
    s.lastRace.legs.map((l) => `${l.leg.gateway}/${l.leg.kind}:${l.outcome}:${l.error?.code ?? "-"}`),
    [
      "gw1/wireguard:failed:timeout",
      "gw1/anyconnect-tls:failed:unreachable",
      "gw2/wireguard:failed:timeout",
      "gw3/wireguard:failed:timeout",
      "gw2/anyconnect-tls:failed:unreachable",
      "gw3/anyconnect-tls:failed:unreachable",
    ],
  );
  // Six legs failing 20 ms apart from t=10: the race ends at 130, the first retry is 1 s later.
  assert.deepEqual(s.error, { reason: "No gateway reachable", nextRetryAt: 1130 });
  assert.equal(s.summary, "No gateway reachable; retrying in 1 s");
  sim.runUntil(1129);
  assert.equal(sim.phase(), "error");
  sim.runUntil(1130);
  assert.equal(sim.phase(), "resolving");
  assert.equal(sim.snapshot().summary, "Looking for gateways again (attempt 2)");
  sim.runUntil(1500);
  s = sim.snapshot();
  assert.equal(s.state, "error");
  assert.equal(s.error?.nextRetryAt, 1130 + 10 + 120 + 2000, "second failure: twice the delay");
  assert.equal(s.summary, "No gateway reachable; retrying in 2 s");
  gw2Back = true;
  sim.runUntil(20_000);
  s = sim.snapshot();
  assert.equal(s.state, "connected");
  assert.equal(s.gateway, "gw2");
  assert.equal(s.lastRace?.reason, "retry");
});

/** The waits between retries while every leg keeps failing, as the error state announces them. */
function retryDelays(retries: number, ctx?: MachineContext): number[] {
  const sim = new Sim({
    gateways: GWS,
    ...(ctx === undefined ? {} : { ctx }),
    legs: () => ({ fail: 1, code: "unreachable" }),
  });
  sim.send({ type: "connect" });
  const delays: number[] = [];
  for (let i = 0; i < retries; i++) {
    sim.runUntilTrue(() => sim.phase() === "error", 120_000);
    delays.push((sim.snapshot().error?.nextRetryAt ?? 0) - sim.now);
    sim.runUntilTrue(() => sim.phase() !== "error", 120_000);
  }
  return delays;
}

test("backoff-doubles-up-to-the-cap", () => {
  assert.deepEqual(retryDelays(7), [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
});

test("with-a-jitter-source-retries-spread-over-the-upper-half-of-each-step", () => {
  // Devices that failed at the same moment draw different waits, each within [step / 2, step].
  assert.deepEqual(retryDelays(4, { ...context(GWS), random: () => 0.5 }), [750, 1500, 3000, 6000]);
  assert.deepEqual(retryDelays(4, { ...context(GWS), random: () => 0.999_999 }), [500, 1000, 2000, 4000]);
});

test("failures-a-retry-cannot-fix-wait-for-connect-then-connect-retries-at-once", () => {
  const sim = new Sim({
    gateways: [gateway("gw1", 1, { kinds: ["anyconnect-tls"] })],
    legs: () => ({ fail: 20, code: "auth-failed" }),
  });
  sim.send({ type: "connect" });
  sim.runFor(500);
  const s = sim.snapshot();
  assert.equal(s.state, "error");
  assert.deepEqual(s.error, { reason: "The gateways refused our credentials", nextRetryAt: null });
  assert.equal(s.summary, "The gateways refused our credentials; connect again to retry");
  assert.equal(sim.timers.has("backoff"), false);
  sim.runFor(600_000);
  assert.equal(sim.phase(), "error", "no retry by itself");
  const e = sim.send({ type: "connect" });
  assert.equal(sim.phase(), "resolving");
  assert.ok(e.some((x) => x.type === "resolve-candidates"));
});

test("connect-in-error-retries-at-once-and-the-backoff-timer-is-cancelled", () => {
  const sim = new Sim({ gateways: GWS, legs: () => ({ fail: 5, code: "unreachable" }) });
  sim.send({ type: "connect" });
  sim.runFor(300);
  assert.equal(sim.phase(), "error");
  assert.ok(sim.timers.has("backoff"));
  sim.send({ type: "connect" });
  assert.equal(sim.phase(), "resolving");
  assert.equal(sim.timers.has("backoff"), false);
});

test("no-candidate-reachable-goes-straight-to-error-and-keeps-retrying", () => {
  const closed = GWS.map((g) => ({
    ...g,
    probe: { at: 0, latencyMs: null, reachable: { wireguard: "no" as const, "anyconnect-tls": "no" as const } },
  }));
  const sim = new Sim({ gateways: GWS, candidates: () => closed });
  sim.send({ type: "connect" });
  sim.runFor(50);
  assert.equal(sim.phase(), "error");
  assert.equal(started(sim).length, 0);
  assert.equal(sim.snapshot().summary, "No gateway reachable; retrying in 1 s");
});

test("no-route-to-any-gateway-says-so-in-the-error", () => {
  const offline = GWS.map((g) => ({
    ...g,
    probe: {
      at: 0,
      latencyMs: null,
      answered: false,
      reachable: { wireguard: "no" as const, "anyconnect-tls": "no" as const },
    },
  }));
  const sim = new Sim({ gateways: GWS, candidates: () => offline });
  sim.send({ type: "connect" });
  sim.runFor(50);
  assert.equal(sim.phase(), "error");
  assert.match(sim.snapshot().summary, /^No gateway reachable: no route to any gateway from this network/);
});

test("empty-discovery-falls-back-to-the-configured-gateways", () => {
  const sim = new Sim({ gateways: GWS, candidates: () => [] });
  sim.send({ type: "connect" });
  sim.runFor(500);
  assert.equal(sim.snapshot().gateway, "gw1");
  assert.deepEqual(
    sim.snapshot().candidates.map((c) => c.name),
    ["gw1", "gw2", "gw3"],
  );
});

test("leg-up-after-the-race-is-decided-is-stopped", () => {
  const sim = connectedSim({ legs: (leg) => (leg.id === "L1" ? "hang" : { up: 50 }) });
  const late = sim.send({
    type: "leg-up",
    legId: "L1",
    config: tunnelConfig({ id: "L1", gateway: "gw1", kind: "wireguard" }),
    firstReplyAt: sim.now,
  });
  assert.deepEqual(late, [{ type: "stop-leg", legId: "L1" }]);
  assert.equal(sim.snapshot().activeLegId, "L2", "the winner keeps the traffic");
  assert.deepEqual(
    sim.send({
      type: "leg-up",
      legId: "L2",
      config: tunnelConfig({ id: "L2", gateway: "gw1", kind: "anyconnect-tls" }),
      firstReplyAt: sim.now,
    }),
    [],
    "a duplicate leg-up of the active leg changes nothing",
  );
});

test("stop-during-a-race-stops-every-started-leg-and-records-the-race-as-cancelled", () => {
  const sim = new Sim({ gateways: GWS, legs: () => "hang" });
  sim.send({ type: "connect" });
  sim.runUntil(600);
  assert.equal(sim.phase(), "racing");
  assert.equal(sim.snapshot().summary, "Connecting: trying gw1 over WireGuard or AnyConnect (TLS), gw2 over WireGuard");
  sim.send({ type: "disconnect" });
  assert.equal(sim.phase(), "disconnected");
  assert.deepEqual(stoppedIds(sim).sort(), ["L1", "L2", "L3"]);
  assert.equal(sim.running.size, 0);
  assert.equal(sim.timers.size, 0);
  assert.deepEqual(
    sim.snapshot().lastRace?.legs.map((l) => l.outcome),
    ["cancelled", "cancelled", "cancelled", "cancelled", "cancelled", "cancelled"],
  );
  // The engines' own deadline failures and any leg that still comes up arrive after the stop.
  const late = sim.send({
    type: "leg-up",
    legId: "L3",
    config: tunnelConfig({ id: "L3", gateway: "gw2", kind: "wireguard" }),
    firstReplyAt: sim.now,
  });
  assert.deepEqual(late, [{ type: "stop-leg", legId: "L3" }]);
  assert.deepEqual(sim.send({ type: "leg-failed", legId: "L1", code: "cancelled", message: "stopped" }), []);
  sim.runFor(10_000);
  assert.equal(sim.phase(), "disconnected");
});

/** Engine behaviour that lets each state below be reached: gw1 comes up, except where a state needs otherwise. */
const SCRIPTS: Record<string, (leg: Leg) => LegScript> = {
  disconnected: () => ({ up: 100 }),
  resolving: () => ({ up: 100 }),
  racing: () => "hang",
  connected: () => ({ up: 100 }),
  "failing-over": (leg) => (leg.gateway === "gw1" ? { up: 100 } : "hang"),
  error: () => ({ fail: 10, code: "unreachable" }),
};

/** Drives a fresh machine into each state; every one must leave nothing behind on disconnect. */
const INTO: Record<string, (sim: Sim) => void> = {
  disconnected: () => undefined,
  resolving: (sim) => sim.send({ type: "connect" }),
  racing: (sim) => {
    sim.send({ type: "connect" });
    sim.runUntil(300);
  },
  connected: (sim) => {
    sim.send({ type: "connect" });
    sim.runUntil(2000);
  },
  "failing-over": (sim) => {
    sim.send({ type: "connect" });
    sim.runUntil(2000);
    sim.send({ type: "leg-down", legId: "L1", reason: "engine exited" });
  },
  error: (sim) => {
    sim.send({ type: "connect" });
    sim.runUntil(2000);
  },
};

for (const [name, into] of Object.entries(INTO)) {
  test(`disconnect-from-${name}-leaves-no-leg-route-monitor-or-timer`, () => {
    const sim = new Sim({ gateways: GWS, legs: SCRIPTS[name] });
    into(sim);
    assert.equal(sim.phase(), name, sim.snapshot().summary);
    sim.send({ type: "disconnect" });
    assert.equal(sim.phase(), "disconnected");
    assert.equal(sim.snapshot().summary, "Disconnected");
    assert.equal(sim.running.size, 0, `still running: ${[...sim.running].join(",")}`);
    assert.equal(sim.monitors.size, 0);
    assert.equal(sim.routes, null);
    assert.equal(sim.timers.size, 0);
    sim.runFor(120_000);
    assert.equal(sim.phase(), "disconnected", "nothing restarts by itself");
    assert.equal(sim.running.size, 0);
  });
}

test("every-input-in-every-state-is-handled-without-throwing", () => {
  const leg: Leg = { id: "L999", gateway: "gw9", kind: "wireguard" };
  const inputs = (now: number): MachineInput[] => [
    ...TIMERS.map((timer): MachineInput => ({ type: "timer", now, timer })),
    { type: "leg-up", now, legId: leg.id, config: tunnelConfig(leg), firstReplyAt: now },
    { type: "leg-failed", now, legId: leg.id, code: "timeout", message: "x" },
    { type: "leg-down", now, legId: leg.id, reason: "x" },
    { type: "probe", now, legId: leg.id, sample: { seq: 1, sentAt: now, rttMs: 5 } },
    { type: "candidates", now, candidates: GWS },
  ];
  for (const [name, into] of Object.entries(INTO)) {
    const sim = new Sim({ gateways: GWS, legs: SCRIPTS[name] });
    into(sim);
    assert.equal(sim.phase(), name);
    for (const input of inputs(sim.now)) {
      const r = step(sim.state, input, sim.ctx);
      // An early timer is only armed again, for the instant it was armed for (the state already holds it).
      const rearmed = (e: Effect): boolean =>
        input.type === "timer" && e.type === "set-timer" && e.timer === input.timer && e.at > input.now;
      const foreign = r.effects.filter((e) => e.type !== "stop-leg" && e.type !== "notify" && !rearmed(e));
      if (input.type !== "candidates") {
        assert.equal(r.state.name, name, `${name} + ${input.type}`);
        assert.deepEqual(
          foreign,
          [],
          `${name} + stale ${input.type}${input.type === "timer" ? `:${input.timer}` : ""}`,
        );
      }
      if (input.type === "leg-up")
        assert.deepEqual(r.effects, [{ type: "stop-leg", legId: leg.id }], `${name}: an unwanted tunnel is stopped`);
    }
  }
});

test("stale-timers-that-no-longer-apply-change-nothing", () => {
  const sim = connectedSim();
  // A stagger timer from the decided race and a backoff from an earlier error.
  for (const timer of ["race-stagger", "backoff"] as const) {
    assert.deepEqual(sim.send({ type: "timer", timer }), [], timer);
  }
  assert.equal(sim.phase(), "connected");
});

test("an-early-timer-is-armed-again-for-when-it-is-due-and-then-acts", () => {
  const sim = connectedSim();
  const state = sim.state;
  if (state.name !== "connected") throw new Error("expected connected");
  // Fired before its instant (a clock that stepped, a timer rounded short): the same instants are armed again.
  assert.deepEqual(sim.send({ type: "timer", timer: "health-check" }), [
    { type: "set-timer", timer: "health-check", at: state.healthCheckAt },
  ]);
  assert.deepEqual(sim.send({ type: "timer", timer: "recheck-candidates" }), [
    { type: "set-timer", timer: "recheck-candidates", at: state.recheckAt },
  ]);
  assert.equal(sim.state, state, "nothing else changes");
});

test("a-backoff-that-fires-early-is-armed-again-and-the-retry-still-happens", () => {
  const sim = new Sim({ gateways: GWS, legs: () => ({ fail: 50, code: "timeout" }) });
  sim.send({ type: "connect" });
  assert.ok(
    sim.runUntilTrue(() => sim.phase() === "error", 20_000),
    `error; ended ${sim.snapshot().summary}`,
  );
  const state = sim.state;
  if (state.name !== "error" || state.nextRetryAt === null)
    throw new Error(`expected a retrying error, got ${state.name}`);
  const retryAt = state.nextRetryAt;
  // The backoff fires 500 ms early: it must not be dropped, or the error state would never retry.
  const effects = step(state, { type: "timer", now: retryAt - 500, timer: "backoff" }, sim.ctx).effects;
  assert.deepEqual(effects, [{ type: "set-timer", timer: "backoff", at: retryAt }]);
  const due = step(state, { type: "timer", now: retryAt, timer: "backoff" }, sim.ctx);
  assert.equal(due.state.name, "resolving", "the re-armed backoff retries when it is due");
});

test("snapshots-before-connect-say-disconnected", () => {
  const s = snapshot(initialState(), 0);
  assert.deepEqual(s, {
    state: "disconnected",
    summary: "Disconnected",
    gateway: null,
    protocol: null,
    activeLegId: null,
    standby: null,
    since: null,
    candidates: [],
    lastRace: null,
    lastFailover: null,
    error: null,
  });
});

test("every-state-change-is-announced-with-its-summary", () => {
  const sim = connectedSim({ legs: () => ({ up: 100 }) });
  const states = sim.events.flatMap((e) => (e.type === "state" ? [`${e.state}: ${e.detail}`] : []));
  assert.deepEqual(states, [
    "resolving: Looking for gateways",
    "racing: Connecting: trying gw1 over WireGuard",
    "connected: Connected to gw1 over WireGuard",
  ]);
  assert.equal(sim.snapshot().since, 110);
});
