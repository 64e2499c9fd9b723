/**
 * Laptop life for the connection machine: a path change or a wake keeps the gateway (no failover recorded against
 * a gateway that was never at fault), offline is a state of its own without races or backoff, and the first route
 * back connects at once.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Sim, context, gateway } from "./harness.test.ts";
import { ROAM_VERIFY_MS, WAKE_VERIFY_MS } from "./states/connected.ts";
import type { Candidate, Leg, LegKind } from "./types.ts";

const KINDS: LegKind[] = ["wireguard", "ikev2", "anyconnect-tls"];
const GWS: Candidate[] = [gateway("gw1", 1, { kinds: KINDS }), gateway("gw2", 2, { kinds: KINDS })];

function sim(opts: { standby?: "on" | "off"; silent?: (leg: Leg, sentAt: number) => boolean } = {}): Sim {
  const s = new Sim({
    gateways: GWS,
    ctx: context(GWS, { standby: { mode: opts.standby ?? "off" } }),
    legs: () => ({ up: 100 }),
    path: (leg, sentAt) => (opts.silent?.(leg, sentAt) === true ? null : 20),
  });
  return s;
}

const leg = (s: Sim, id: string | null): string => {
  const l = id === null ? undefined : s.legsById.get(id);
  return l === undefined ? "-" : `${l.gateway}/${l.kind}`;
};

test("a-path-change-keeps-the-gateway-through-a-silence-longer-than-the-dead-window", () => {
  const changeAt = 3000;
  // The move: nothing comes back for 1 s (longer than the 600 ms dead window), then the gateway answers again.
  const s = sim({ standby: "on", silent: (_l, t) => t >= changeAt - 200 && t < changeAt + 1000 });
  s.send({ type: "connect" });
  s.runUntil(changeAt);
  const active = s.snapshot().activeLegId;
  const standby = s.snapshot().standby?.legId;
  assert.equal(leg(s, active), "gw1/wireguard");
  assert.ok(standby !== undefined, "a standby is up");
  s.send({ type: "network", change: "path-changed", detail: "moved" });
  assert.match(s.snapshot().summary, /checking the tunnel after the network changed/);
  assert.deepEqual(
    s.effectsOf("recheck-leg").map((e) => [e.legId, e.why]),
    [
      [active, "path-changed"],
      [standby, "path-changed"],
    ],
    "both tunnels are checked at once",
  );
  s.runUntil(changeAt + 3000);
  const snap = s.snapshot();
  assert.equal(snap.state, "connected");
  assert.equal(snap.activeLegId, active, "the same leg carries traffic");
  assert.equal(s.failovers.length, 0, "no failover recorded against a gateway that was never at fault");
  assert.equal(s.races.filter((r) => r.reason === "failover").length, 0, "no race");
  assert.doesNotMatch(snap.summary, /checking/, "the check ended with the first reply");
});

test("a-gateway-silent-after-the-path-change-is-raced-after-the-bound-its-own-leg-first", () => {
  const changeAt = 3000;
  // The old tunnel never answers again (the gateway dropped it); a fresh leg to the same gateway works.
  const s = sim({ silent: (l, t) => l.id === "L1" && t >= changeAt });
  s.send({ type: "connect" });
  s.runUntil(changeAt);
  s.send({ type: "network", change: "path-changed", detail: "moved" });
  s.runUntil(changeAt + ROAM_VERIFY_MS - 50);
  assert.equal(s.snapshot().state, "connected", "silence within the bound is the move, not a dead gateway");
  s.runUntilTrue(() => s.snapshot().state === "failing-over", 200);
  assert.match(s.snapshot().summary, /the session with gw1 was lost when the network changed, trying gw1/);
  const race = s.events.find((e) => e.type === "race-started" && e.reason === "failover");
  assert.ok(race?.type === "race-started");
  assert.equal(
    `${race.legs[0]?.gateway}/${race.legs[0]?.kind}`,
    "gw1/wireguard",
    "the same gateway and protocol first",
  );
  s.runUntilTrue(() => s.snapshot().state === "connected", 2000);
  assert.equal(leg(s, s.snapshot().activeLegId), "gw1/wireguard");
  assert.notEqual(s.snapshot().activeLegId, "L1");
  assert.equal(s.failovers.length, 0, "back on the same gateway: nothing recorded against it");
  assert.ok(!s.running.has("L1"), "the old tunnel is gone");
});

test("offline-while-connected-waits-for-a-network-without-races-or-backoff-and-connects-when-a-route-is-back", () => {
  const s = sim({ standby: "on" });
  s.send({ type: "connect" });
  s.runUntil(3000);
  assert.equal(s.snapshot().state, "connected");
  s.send({ type: "network", change: "offline", detail: "no route" });
  assert.equal(s.phase(), "waiting-for-network");
  assert.equal(s.snapshot().summary, "Waiting for a network: no route to any gateway");
  assert.equal(s.running.size, 0, "every tunnel stopped");
  assert.equal(s.routes, null);
  assert.equal(s.failovers.length, 0, "losing the network is no gateway's fault");
  const racesBefore = s.events.filter((e) => e.type === "race-started").length;
  s.runUntil(60_000);
  assert.equal(s.phase(), "waiting-for-network");
  assert.equal(s.events.filter((e) => e.type === "race-started").length, racesBefore, "no race while offline");
  assert.equal(s.timers.size, 0, "no backoff or any timer while offline");
  assert.equal(s.events.filter((e) => e.type === "state").slice(-1)[0]?.type, "state");
  const t = s.now;
  s.send({ type: "network", change: "online", detail: "a route" });
  assert.equal(s.phase(), "resolving", "the first route starts a connect at once");
  s.runUntilTrue(() => s.snapshot().state === "connected", 1000);
  assert.ok(s.now - t < 200, `connected ${String(s.now - t)} ms after the route came back`);
});

test("started-offline-a-connect-waits-for-a-network-and-the-first-route-connects", () => {
  const s = sim();
  s.send({ type: "network", change: "offline", detail: "no route", initial: true });
  assert.equal(s.phase(), "disconnected");
  s.send({ type: "connect" });
  assert.equal(s.phase(), "waiting-for-network");
  assert.equal(s.effectsOf("start-leg").length, 0);
  assert.equal(s.effectsOf("resolve-candidates").length, 0);
  s.runUntil(30_000);
  assert.equal(s.phase(), "waiting-for-network");
  s.send({ type: "network", change: "online", detail: "a route" });
  s.runUntilTrue(() => s.snapshot().state === "connected", 1000);
  assert.equal(s.phase(), "connected");
  s.send({ type: "disconnect" });
  s.send({ type: "network", change: "offline", detail: "no route" });
  s.send({ type: "connect" });
  s.send({ type: "disconnect" });
  assert.equal(s.phase(), "disconnected", "disconnect leaves the waiting state");
});

test("offline-during-a-race-or-an-error-stops-churning-and-a-route-back-retries-at-once", () => {
  const s = new Sim({ gateways: GWS, ctx: context(GWS), legs: () => ({ fail: 50, code: "unreachable" }) });
  s.send({ type: "connect" });
  s.runUntilTrue(() => s.snapshot().state === "error", 5000);
  assert.ok(s.timers.has("backoff"));
  s.send({ type: "network", change: "offline", detail: "no route" });
  assert.equal(s.phase(), "waiting-for-network");
  assert.equal(s.timers.size, 0, "the backoff is cancelled");
  const r = new Sim({ gateways: GWS, ctx: context(GWS), legs: () => "hang" });
  r.send({ type: "connect" });
  r.runUntilTrue(() => r.snapshot().state === "racing", 1000);
  r.runFor(100);
  assert.ok(r.running.size > 0);
  r.send({ type: "network", change: "offline", detail: "no route" });
  assert.equal(r.phase(), "waiting-for-network");
  assert.equal(r.running.size, 0, "the race's legs stopped");
  // In error with a route that changed: the backoff is pointless, retry now.
  const e = new Sim({ gateways: GWS, ctx: context(GWS), legs: () => ({ fail: 50, code: "unreachable" }) });
  e.send({ type: "connect" });
  e.runUntilTrue(() => e.snapshot().state === "error", 5000);
  e.send({ type: "network", change: "path-changed", detail: "moved" });
  assert.equal(e.phase(), "resolving");
});

test("on-wake-the-tunnel-is-checked-at-once-and-a-dropped-session-reconnects-to-the-same-gateway", () => {
  const wakeAt = 5000;
  // The gateway dropped the old session while the laptop slept; it accepts a new one.
  const s = sim({ standby: "on", silent: (l, t) => l.id === "L1" && t >= wakeAt });
  s.send({ type: "connect" });
  s.runUntil(wakeAt);
  s.send({ type: "wake", sleptMs: 300_000 });
  assert.deepEqual(
    s.effectsOf("recheck-leg").map((e) => e.why),
    ["wake", "wake"],
    "an immediate probe burst on both tunnels",
  );
  s.runUntilTrue(() => s.snapshot().state === "connected" && s.snapshot().activeLegId !== "L1", 4000);
  const snap = s.snapshot();
  assert.equal(snap.gateway, "gw1", "the same gateway first, although the standby elsewhere answered");
  assert.equal(s.failovers.length, 0, "nothing recorded against the gateway that only dropped a stale session");
  assert.ok(s.now - wakeAt <= WAKE_VERIFY_MS + 200, `traffic back ${String(s.now - wakeAt)} ms after the wake`);
  // Without a standby, the same gateway gets a fresh session and nothing is recorded against it.
  const n = sim({ silent: (l, t) => l.id === "L1" && t >= wakeAt });
  n.send({ type: "connect" });
  n.runUntil(wakeAt);
  n.send({ type: "wake", sleptMs: 30_000 });
  n.runUntilTrue(() => n.snapshot().state === "connected" && n.snapshot().activeLegId !== "L1", 4000);
  assert.equal(n.snapshot().gateway, "gw1");
  assert.equal(n.failovers.length, 0);
  // A session that survived: the first reply ends the check, nothing moves.
  const k = sim();
  k.send({ type: "connect" });
  k.runUntil(wakeAt);
  k.send({ type: "wake", sleptMs: 30_000 });
  k.runFor(100);
  assert.equal(k.snapshot().activeLegId, "L1");
  assert.doesNotMatch(k.snapshot().summary, /checking/);
});

const IKE: Candidate[] = [gateway("gw1", 1, { kinds: ["ikev2"] }), gateway("gw2", 2, { kinds: ["ikev2"] })];

test("an-ikev2-tunnel-follows-a-new-address-with-mobike-the-same-leg-is-checked-and-kept", () => {
  const changeAt = 3000;
  // MOBIKE: charon moves the IKE_SA to the new address; the tunnel is silent for 300 ms, then answers again.
  const s = new Sim({
    gateways: IKE,
    ctx: context(IKE),
    legs: () => ({ up: 100 }),
    path: (l, t) => (l.id === "L1" && t >= changeAt && t < changeAt + 300 ? null : 20),
  });
  s.send({ type: "connect" });
  s.runUntil(changeAt);
  assert.equal(leg(s, s.snapshot().activeLegId), "gw1/ikev2");
  s.send({ type: "network", change: "path-changed", detail: "moved" });
  assert.equal(s.phase(), "connected", "no fresh leg raced: charon follows the new address itself");
  assert.match(s.snapshot().summary, /checking the tunnel after the network changed/);
  assert.deepEqual(
    s.effectsOf("recheck-leg").map((e) => [e.legId, e.why]),
    [["L1", "path-changed"]],
  );
  s.runUntil(changeAt + 3000);
  assert.equal(s.snapshot().activeLegId, "L1", "the same leg carries traffic");
  assert.equal(s.effectsOf("start-leg").length, 1, "no other leg was started");
  assert.equal(s.failovers.length, 0);
  assert.doesNotMatch(s.snapshot().summary, /checking/);
});

test("an-ikev2-tunnel-silent-after-the-move-is-replaced-by-a-fresh-leg-to-its-gateway-after-the-bound", () => {
  const changeAt = 3000;
  // The gateway refused the MOBIKE update (or dropped the session): the old tunnel never answers again.
  const s = new Sim({
    gateways: IKE,
    ctx: context(IKE),
    legs: () => ({ up: 100 }),
    path: (l, t) => (l.id === "L1" && t >= changeAt ? null : 20),
  });
  s.send({ type: "connect" });
  s.runUntil(changeAt);
  s.send({ type: "network", change: "path-changed", detail: "moved" });
  s.runUntil(changeAt + ROAM_VERIFY_MS - 50);
  assert.equal(s.phase(), "connected", "silence within the bound is the move, not a lost session");
  assert.equal(s.snapshot().activeLegId, "L1");
  s.runUntilTrue(() => s.snapshot().state === "failing-over", 200);
  assert.match(s.snapshot().summary, /the session with gw1 was lost when the network changed, trying gw1/);
  assert.equal(s.routes, "L1", "the old tunnel keeps the routes until the new one is up");
  s.runUntilTrue(() => s.snapshot().state === "connected", 2000);
  assert.equal(leg(s, s.snapshot().activeLegId), "gw1/ikev2", "a fresh leg to the same gateway");
  assert.notEqual(s.snapshot().activeLegId, "L1");
  assert.ok(!s.running.has("L1"), "the silent leg is gone");
  assert.equal(s.failovers.length, 0, "back on the same gateway: nothing recorded against it");
});

test("an-engine-that-reconnects-after-the-first-replies-is-checked-again-not-failed-over", () => {
  const changeAt = 3000;
  // openconnect: a few packets still pass, then its reconnect (with its cookie) takes the tunnel down for 400 ms.
  const s = sim({ silent: (l, t) => l.id === "L1" && t >= changeAt + 150 && t < changeAt + 550 });
  s.send({ type: "connect" });
  s.runUntil(changeAt);
  s.send({ type: "network", change: "path-changed", detail: "moved" });
  s.runUntil(changeAt + 140);
  assert.doesNotMatch(s.snapshot().summary, /checking/, "the first replies ended the check");
  s.send({ type: "leg-down", legId: "L1", reason: "openconnect is reconnecting to the gateway" });
  assert.equal(s.phase(), "connected", "a reconnect soon after the path change is expected");
  assert.match(s.snapshot().summary, /checking/);
  s.runUntil(changeAt + 3000);
  assert.equal(s.snapshot().activeLegId, "L1", "the same tunnel, back after its reconnect");
  assert.equal(s.failovers.length, 0);
  // Long after the move, a leg-down is a failure again.
  s.runUntil(changeAt + 10_000);
  s.send({ type: "leg-down", legId: "L1", reason: "openconnect is reconnecting to the gateway" });
  assert.equal(s.phase(), "failing-over");
});

test("an-engine-that-reconnects-just-after-a-wake-is-checked-again-not-failed-over", () => {
  const wakeAt = 5000;
  const s = sim({ silent: (l, t) => l.id === "L1" && t >= wakeAt + 150 && t < wakeAt + 500 });
  s.send({ type: "connect" });
  s.runUntil(wakeAt);
  s.send({ type: "wake", sleptMs: 30_000 });
  s.runUntil(wakeAt + 140);
  s.send({ type: "leg-down", legId: "L1", reason: "openconnect is reconnecting to the gateway" });
  assert.equal(s.phase(), "connected");
  assert.match(s.snapshot().summary, /checking the tunnel after waking up/);
  s.runUntil(wakeAt + 3000);
  assert.equal(s.snapshot().activeLegId, "L1");
  assert.equal(s.failovers.length, 0);
});
