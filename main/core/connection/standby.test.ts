import assert from "node:assert/strict";
import { test } from "node:test";
import { seededRandom } from "../../../test/fakes/seeded-random.ts";
import { Sim, context, gateway } from "./harness.test.ts";
import {
  STANDBY_CHECK_MS,
  STANDBY_RAISE_DELAY_MS,
  STANDBY_RETRY_MS,
  STANDBY_STALE_FACTOR,
  planStandby,
} from "./standby.ts";
import { initialState } from "./machine.ts";
import type { Candidate, Leg, LegKind } from "./types.ts";

const KINDS: LegKind[] = ["wireguard", "ikev2", "anyconnect-tls"];
const GWS: Candidate[] = [
  gateway("gw1", 1, { kinds: KINDS }),
  gateway("gw2", 2, { kinds: KINDS }),
  gateway("gw3", 3, { kinds: KINDS }),
];
const ON = { standby: { mode: "on" as const } };

interface Opts {
  /** When gw1 stops answering (in-tunnel probes lost, new legs hang). */
  gw1DiesAt?: number;
  /** Legs to gw2 fail instead of coming up. */
  gw2Fails?: boolean;
  /** When gw2 stops answering. */
  gw2SilentFrom?: number;
  loss?: (leg: Leg, sentAt: number) => boolean;
  standby?: "on" | "off";
}

function sim(opts: Opts = {}): Sim {
  const dead = (leg: Leg, t: number): boolean =>
    (leg.gateway === "gw1" && opts.gw1DiesAt !== undefined && t >= opts.gw1DiesAt) ||
    (leg.gateway === "gw2" && opts.gw2SilentFrom !== undefined && t >= opts.gw2SilentFrom);
  const s = new Sim({
    gateways: GWS,
    ctx: context(GWS, { standby: { mode: opts.standby ?? "on" } }),
    legs: (leg, sim) => {
      if (dead(leg, sim.now)) return "hang";
      if (leg.gateway === "gw2" && opts.gw2Fails === true) return { fail: 40, code: "unreachable" };
      return { up: leg.kind === "ikev2" ? 60 : 100 };
    },
    path: (leg, sentAt) => (dead(leg, sentAt) || opts.loss?.(leg, sentAt) === true ? null : 20),
  });
  s.send({ type: "connect" });
  return s;
}

const legOf = (s: Sim, id: string | null | undefined): string => {
  const l = id == null ? undefined : s.legsById.get(id);
  return l === undefined ? "-" : `${l.gateway}/${l.kind}`;
};

test("a-standby-comes-up-on-the-next-gateway-over-another-protocol-and-carries-no-routes", () => {
  const s = sim();
  s.runUntil(2000);
  const snap = s.snapshot();
  assert.equal(snap.state, "connected");
  assert.equal(legOf(s, snap.activeLegId), "gw1/wireguard");
  assert.ok(snap.standby !== null, "a standby is up");
  assert.equal(`${snap.standby.gateway}/${snap.standby.protocol}`, "gw2/ikev2", "another gateway, reached another way");
  assert.deepEqual(
    s.routeLog.map((r) => legOf(s, r.legId)),
    ["gw1/wireguard"],
    "the standby never held routes",
  );
  const started = s.events.find((e) => e.type === "race-started" && e.reason === "standby");
  assert.ok(started?.type === "race-started");
  assert.deepEqual(
    started.legs.map((l) => `${l.gateway}/${l.kind}`),
    ["gw2/ikev2", "gw2/anyconnect-tls", "gw2/wireguard", "gw3/ikev2", "gw3/anyconnect-tls", "gw3/wireguard"],
  );
  assert.equal(
    s.races.filter((r) => r.reason === "standby").length,
    0,
    "standby races are not recorded as the connection's races",
  );
  assert.ok(s.timers.has("standby"), "the standby's freshness is checked");
  const monitors = s.effectsOf("start-monitor");
  assert.deepEqual(
    monitors.map((m) => `${legOf(s, m.legId)}:${m.role}`),
    ["gw1/wireguard:active", "gw2/ikev2:standby"],
  );
});

test("the-standby-is-promoted-by-a-route-change-when-the-active-gateway-dies", () => {
  const s = sim({ gw1DiesAt: 5000 });
  s.runUntil(4999);
  const standbyId = s.snapshot().standby?.legId;
  assert.ok(standbyId !== undefined);
  s.runUntilTrue(() => s.snapshot().lastFailover !== null, 3000);
  const f = s.snapshot().lastFailover;
  assert.ok(f !== null);
  assert.equal(f.via, "standby");
  assert.deepEqual(f.to, { gateway: "gw2", kind: "ikev2" });
  assert.equal(f.restoredAfterMs, f.detectedAfterMs, "no race: traffic moves the moment the failure is seen");
  assert.ok(f.detectedAfterMs >= 600 && f.detectedAfterMs < 700, `detected after ${f.detectedAfterMs} ms`);
  assert.equal(s.snapshot().activeLegId, standbyId);
  assert.equal(s.routes, standbyId, "routes moved to the standby at once");
  assert.equal(
    s.events.filter((e) => e.type === "race-started" && e.reason === "failover").length,
    0,
    "no failover race",
  );
  assert.ok(!s.running.has("L1"), "the failed leg is torn down");
  // The promoted leg is now probed at the active rate, and a new standby avoids the gateway just left.
  const restarts = s
    .effectsOf("start-monitor")
    .filter((m) => m.legId === standbyId)
    .map((m) => m.role);
  assert.deepEqual(restarts, ["standby", "active"]);
  s.runUntil(s.now + STANDBY_RAISE_DELAY_MS - 10);
  assert.equal(s.snapshot().standby, null, "the next standby waits while the new tunnel settles");
  s.runUntil(s.now + 500);
  const next = s.snapshot().standby;
  assert.equal(next?.gateway, "gw3", "the dead gateway is not the new standby");
  assert.equal(next.protocol, "wireguard", "reached another way than the new active (IKEv2)");
});

test("a-stale-standby-is-not-trusted-and-the-failover-races-instead", () => {
  // gw2's standby path went silent before gw1 died: promoting it would trade one dead tunnel for another.
  const s = sim({ gw1DiesAt: 5000, gw2SilentFrom: 3000 });
  s.runUntilTrue(() => s.snapshot().state === "failing-over", 7000);
  assert.equal(s.snapshot().standby, null);
  s.runUntilTrue(() => s.snapshot().state === "connected", 3000);
  const f = s.snapshot().lastFailover;
  assert.equal(f?.via, "race");
  assert.equal(s.snapshot().gateway, "gw3", "gw2 hangs, gw3 wins the race");
});

test("with-the-standby-off-no-second-tunnel-is-raised", () => {
  const s = sim({ standby: "off", gw1DiesAt: 5000 });
  s.runUntil(4000);
  assert.equal(s.snapshot().standby, null);
  assert.equal(s.running.size, 1);
  s.runUntil(8000);
  assert.equal(s.snapshot().lastFailover?.via, "race");
});

test("disconnect-tears-the-standby-down-with-everything-else", () => {
  const s = sim();
  s.runUntil(2000);
  assert.equal(s.running.size, 2);
  s.send({ type: "disconnect" });
  s.runUntil(3000);
  assert.equal(s.running.size, 0);
  assert.equal(s.monitors.size, 0);
  assert.equal(s.timers.size, 0);
});

test("a-failed-standby-race-retries-later-not-in-a-loop", () => {
  const s = sim({ gw2Fails: true });
  s.runUntil(2000);
  const sb = s.snapshot().standby;
  assert.equal(sb?.gateway, "gw3", "gw2's legs fail, the standby race moves on to gw3");
  const s2 = new Sim({
    gateways: GWS.slice(0, 2),
    ctx: context(GWS.slice(0, 2), ON),
    legs: (leg) => (leg.gateway === "gw2" ? { fail: 40, code: "unreachable" } : { up: 100 }),
  });
  s2.send({ type: "connect" });
  s2.runUntil(2000);
  assert.equal(s2.snapshot().standby, null);
  const standbyRaces = (): number =>
    s2.events.filter((e) => e.type === "race-started" && e.reason === "standby").length;
  assert.equal(standbyRaces(), 1);
  const ended = s2.events.find((e) => e.type === "race-ended" && e.race.reason === "standby");
  assert.ok(ended?.type === "race-ended" && ended.race.endedAt !== null && ended.race.winner === null);
  s2.runUntil(ended.race.endedAt + STANDBY_RETRY_MS - 10);
  assert.equal(standbyRaces(), 1, "no retry before STANDBY_RETRY_MS");
  s2.runUntil(ended.race.endedAt + STANDBY_RETRY_MS + 10);
  assert.equal(standbyRaces(), 2, "one retry after STANDBY_RETRY_MS");
});

test("a-brownout-moves-to-a-clean-standby-at-once", () => {
  const rnd = seededRandom(7);
  const s = sim({ loss: (leg, t) => leg.gateway === "gw1" && t >= 10_000 && rnd() < 0.4 });
  s.runUntilTrue(() => s.snapshot().lastFailover !== null, 20_000);
  const f = s.snapshot().lastFailover;
  assert.equal(f?.via, "standby");
  assert.match(f.reason, /^brownout/);
  assert.equal(s.snapshot().gateway, "gw2");
});

test("a-standby-that-goes-silent-is-replaced", () => {
  const s = sim({ gw2SilentFrom: 3000 });
  s.runUntil(2000);
  const first = s.snapshot().standby;
  assert.equal(first?.gateway, "gw2");
  const freshMs = s.ctx.policy.standby.freshMs;
  s.runUntil(3000 + STANDBY_STALE_FACTOR * freshMs + STANDBY_CHECK_MS + 100);
  assert.ok(!s.running.has(first.legId), "the silent standby was stopped");
  s.runUntil(s.now + STANDBY_RETRY_MS + 1000);
  const next = s.snapshot().standby;
  assert.ok(next !== null && next.legId !== first.legId, "a new standby came up");
  assert.equal(s.snapshot().state, "connected");
});

test("the-standby-plan-never-includes-the-active-or-avoided-gateway", () => {
  const shared = { ...initialState().shared, candidates: GWS };
  const policy = context(GWS).policy.race;
  const active: Leg = { id: "L1", gateway: "gw1", kind: "anyconnect-tls" };
  const p = planStandby(shared, active, ["gw2"], policy);
  assert.deepEqual(
    p.legs.map((l) => `${l.gateway}/${l.kind}`),
    ["gw3/wireguard", "gw3/ikev2", "gw3/anyconnect-tls"],
  );
  assert.equal(p.shared.legSeq, 3);
});

test("random-failures-never-leave-two-tunnels-to-one-gateway-or-a-standby-on-the-active-one", () => {
  for (let seed = 1; seed <= 40; seed++) {
    const rnd = seededRandom(seed);
    const deaths = new Map<string, number>();
    for (const g of ["gw1", "gw2", "gw3"]) if (rnd() < 0.6) deaths.set(g, Math.floor(rnd() * 20_000));
    const s = new Sim({
      gateways: GWS,
      ctx: context(GWS, ON),
      legs: (leg, sim) =>
        (deaths.get(leg.gateway) ?? Infinity) <= sim.now ? "hang" : { up: 50 + Math.floor(rnd() * 200) },
      path: (leg, t) => ((deaths.get(leg.gateway) ?? Infinity) <= t || rnd() < 0.02 ? null : 20),
    });
    s.send({ type: "connect" });
    for (let t = 0; t < 30_000; t += 100) {
      s.runUntil(t);
      const snap = s.snapshot();
      if (snap.standby !== null)
        assert.notEqual(snap.standby.gateway, snap.gateway, `seed ${seed} at ${t}: standby on the active gateway`);
      const up = [...s.running].filter((id) =>
        s.effects.some((e) => e.effect.type === "start-monitor" && e.effect.legId === id),
      );
      const gws = up.map((id) => s.legsById.get(id)?.gateway);
      assert.equal(
        new Set(gws).size,
        gws.length,
        `seed ${seed} at ${t}: two monitored tunnels to one gateway: ${gws.join(",")}`,
      );
    }
    s.send({ type: "disconnect" });
    s.runFor(100);
    assert.equal(s.running.size, 0, `seed ${seed}: legs left running after disconnect`);
  }
});
