import assert from "node:assert/strict";
import { test } from "node:test";
import { failedOver, status } from "./fixtures.test-helper.ts";
import {
  DAEMON_SETTLE_MS,
  ERROR_REPEAT_MS,
  ERROR_SETTLE_MS,
  errorCause,
  FAILOVER_QUIET_MS,
  NotifyRules,
  RECOVERY_SETTLE_MS,
} from "./notify-rules.ts";

const errorStatus = (reason: string, nextRetryAt: number | null) =>
  status({ state: "error", gateway: null, protocol: null, summary: reason, error: { reason, nextRetryAt } });

test("a-failover-is-told-once-with-where-to-and-why", () => {
  const r = new NotifyRules();
  assert.deepEqual(r.observe(status(), 0), []);
  const n = r.observe(status(failedOver(1000)), 1000);
  assert.equal(n.length, 1);
  assert.equal(n[0]?.cause, "failover");
  assert.equal(n[0].body, "Now on Paris: Frankfurt stopped answering.");
  assert.deepEqual(r.observe(status(failedOver(1000)), 2000), [], "the same failover is not told twice");
});

test("a-failover-before-the-app-started-is-not-news", () => {
  assert.deepEqual(new NotifyRules().observe(status(failedOver(5)), 1000), []);
});

test("flapping-gives-one-notice-then-one-summary-per-quiet-period", () => {
  const r = new NotifyRules();
  r.observe(status(), 0);
  let told = 0;
  for (let t = 1000; t < FAILOVER_QUIET_MS * 3; t += 5000)
    told += r.observe(status(failedOver(t, t % 10000 === 0 ? "Paris" : "Frankfurt")), t).length;
  // 3 quiet periods of flapping every 5 s (72 failovers): the first at once, then one summary per period.
  assert.equal(told, 3);
  const deadline = r.nextDeadline();
  assert.ok(deadline !== null);
  const summary = r.observe(status(), deadline);
  assert.equal(summary.length, 1);
  assert.equal(summary[0]?.cause, "failover-repeated");
  assert.match(summary[0].body, /switched gateways \d+ times/);
});

test("a-short-error-that-recovers-is-not-told-and-a-lasting-one-is-told-once", () => {
  const r = new NotifyRules();
  r.observe(status(), 0);
  assert.deepEqual(r.observe(errorStatus("No gateway reachable", 5000), 1000), []);
  assert.deepEqual(r.observe(status(), 3000), [], "recovered within the settle time");
  assert.deepEqual(r.observe(errorStatus("No gateway reachable", 5000), 100_000), []);
  assert.equal(r.nextDeadline(), 100_000 + ERROR_SETTLE_MS);
  const n = r.observe(errorStatus("No gateway reachable", 5000), 100_000 + ERROR_SETTLE_MS);
  assert.equal(n.length, 1);
  assert.equal(n[0]?.cause, "no-gateway");
  assert.deepEqual(r.observe(errorStatus("No gateway reachable", 5000), 200_000), [], "told once per episode");
  // A short recovery is part of the same episode; a long one ends it, but the repeat bound still holds.
  r.observe(status(), 210_000);
  r.observe(status(), 210_000 + RECOVERY_SETTLE_MS);
  r.observe(errorStatus("No gateway reachable", 5000), 300_000);
  assert.deepEqual(r.observe(errorStatus("No gateway reachable", 5000), 300_000 + ERROR_SETTLE_MS), []);
  r.observe(status(), 400_000);
  r.observe(status(), 400_000 + RECOVERY_SETTLE_MS);
  const later = 110_000 + ERROR_REPEAT_MS;
  r.observe(errorStatus("No gateway reachable", 5000), later);
  assert.equal(r.observe(errorStatus("No gateway reachable", 5000), later + ERROR_SETTLE_MS).length, 1);
});

test("an-error-only-the-user-can-fix-is-told-at-once-with-its-own-text", () => {
  const r = new NotifyRules();
  const n = r.observe(errorStatus("The gateways refused our credentials", null), 0);
  assert.equal(n.length, 1);
  assert.equal(n[0]?.cause, "credentials");
  assert.match(n[0].body, /helpdesk/);
  assert.equal(errorCause("No gateway presented its pinned identity"), "identity");
  assert.equal(errorCause("The configuration cannot work"), "configuration");
  assert.equal(errorCause("Every gateway refused the connection"), "refused");
});

test("a-daemon-restart-is-not-told-but-a-lasting-outage-is", () => {
  const r = new NotifyRules();
  r.observe(status(), 0);
  assert.deepEqual(r.observe(null, 1000), []);
  assert.deepEqual(r.observe(status(), 4000), []);
  r.observe(null, 10_000);
  const n = r.observe(null, 10_000 + DAEMON_SETTLE_MS);
  assert.equal(n[0]?.cause, "daemon-unreachable");
  assert.deepEqual(r.observe(null, 60_000), []);
});

test("the-users-notification-preference-filters-what-is-shown", () => {
  const r = new NotifyRules();
  r.observe(status(), 0);
  assert.deepEqual(r.observe(status(failedOver(1000)), 1000, "errors"), []);
  assert.equal(r.observe(errorStatus("The gateways refused our credentials", null), 2000, "errors").length, 1);
  const off = new NotifyRules();
  assert.deepEqual(off.observe(errorStatus("The gateways refused our credentials", null), 0, "off"), []);
});

test("waiting-for-a-network-is-never-an-error-notice-however-long-it-lasts", () => {
  const r = new NotifyRules();
  r.observe(status(), 0);
  const waiting = status({
    state: "waiting-for-network",
    gateway: null,
    protocol: null,
    summary: "Waiting for a network: no route to any gateway",
  });
  for (let t = 1000; t <= 3_600_000; t += 60_000)
    assert.deepEqual(r.observe(waiting, t), [], `nothing told after ${String(t)} ms offline`);
  assert.deepEqual(r.observe(status(), 3_700_000), [], "coming back is not news either");
});

test("offline-for-ten-minutes-with-the-network-flapping-tells-nothing", () => {
  const r = new NotifyRules();
  r.observe(status(), 0);
  const monitorOffline = {
    id: null,
    remembered: null,
    monitor: { online: false, lastChange: null, changes: 1, watcherDeaths: 0, wakes: 0 },
  };
  const told: string[] = [];
  // Every 30 s: the legs fail while the monitor already says offline (15 s of error), then detourd waits.
  for (let t = 1000; t < 600_000; t += 30_000) {
    const err = { ...errorStatus("No gateway reachable: no route to any gateway", t + 4000), network: monitorOffline };
    for (let u = t; u < t + 15_000; u += 1000) told.push(...r.observe(err, u).map((n) => n.cause));
    const waiting = status({
      state: "waiting-for-network",
      gateway: null,
      protocol: null,
      summary: "Waiting for a network: no route to any gateway",
      ...failedOver(t + 15_000),
    });
    for (let u = t + 15_000; u < t + 30_000; u += 1000)
      told.push(...r.observe({ ...waiting, state: "waiting-for-network" }, u).map((n) => n.cause));
  }
  assert.deepEqual(told, [], "no notification storm while offline");
  // Back online: a real error is told again after its own settle time.
  assert.deepEqual(r.observe(errorStatus("No gateway reachable", 700_000), 600_000), []);
  assert.equal(r.observe(errorStatus("No gateway reachable", 700_000), 600_000 + ERROR_SETTLE_MS).length, 1);
});

test("a-network-that-wants-a-sign-in-is-told-once-as-sign-in-not-as-cannot-connect", () => {
  const r = new NotifyRules();
  r.observe(status(), 0);
  const captive = {
    ...errorStatus("No gateway reachable", 5000),
    captive: {
      state: "sign-in-required" as const,
      reason: "the check URL was redirected to http://198.18.205.1/signin",
      portalUrl: "http://198.18.205.1/signin",
      checkedAt: 1,
      checks: 1,
      exception: {
        state: "open" as const,
        openedAt: 1000,
        closesAt: 301_000,
        portalAddresses: ["198.18.205.1"],
        resolvers: ["198.18.53.2"],
        closedReason: null,
        opened: 1,
      },
    },
  };
  const told = [];
  for (let t = 1000; t <= 120_000; t += 1000) told.push(...r.observe(captive, t, "errors"));
  assert.deepEqual(
    told.map((n) => [n.cause, n.title]),
    [["sign-in", "Sign in to this network"]],
  );
  assert.match(told[0]?.body ?? "", /Open sign-in page/);
});
