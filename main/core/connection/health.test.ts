import assert from "node:assert/strict";
import { test } from "node:test";
import { HealthPolicy } from "../config/schema.ts";
import { seededRandom } from "../../../test/fakes/seeded-random.ts";
import {
  healthDeadline,
  healthEvaluate,
  healthNotePending,
  healthOnSample,
  healthStart,
  healthStats,
  type HealthState,
} from "./health.ts";
import type { HealthVerdict, ProbeSample } from "./types.ts";

/** The figures below were worked out for a 50 ms monitor and a 600 ms dead window; the defaults may move. */
const policy = HealthPolicy.parse({ probeIntervalMs: 50, deadAfterMs: 600 });

/**
 * Drives a health monitor the way the daemon's monitor does: a probe every interval, delivered when it is answered
 * or when it times out. `rtt(sentAt)` gives the path: a number, or null for a lost probe.
 */
class Feeder {
  h: HealthState;
  now: number;
  seq = 0;
  nextSend: number;
  pending: { at: number; sample: ProbeSample }[] = [];
  verdicts: { at: number; verdict: HealthVerdict }[] = [];
  constructor(
    start: number,
    public p = policy,
  ) {
    this.h = healthStart(start);
    this.now = start;
    this.nextSend = start;
  }
  run(until: number, rtt: (sentAt: number) => number | null): void {
    for (;;) {
      const due = this.pending.reduce<{ at: number; sample: ProbeSample } | undefined>(
        (a, x) => (a === undefined || x.at < a.at ? x : a),
        undefined,
      );
      const t = Math.min(this.nextSend, due?.at ?? Infinity);
      if (t > until) break;
      this.now = t;
      if (due !== undefined && due.at === t) {
        this.pending.splice(this.pending.indexOf(due), 1);
        const before = this.h.verdict.state;
        this.h = healthOnSample(this.h, due.sample, t, this.p);
        if (this.h.verdict.state !== before) this.verdicts.push({ at: t, verdict: this.h.verdict });
        continue;
      }
      const r = rtt(t);
      this.pending.push({ at: t + (r ?? this.p.probeTimeoutMs), sample: { seq: this.seq++, sentAt: t, rttMs: r } });
      this.nextSend = t + this.p.probeIntervalMs;
    }
    this.now = until;
  }
}

test("no-reply-since-the-monitor-started-is-dead-after-deadAfterMs-and-not-before", () => {
  const h = healthNotePending(healthStart(1000), 1000);
  assert.equal(healthDeadline(h, policy), 1600);
  assert.equal(healthEvaluate(h, 1599, policy).verdict.state, "healthy");
  assert.deepEqual(healthEvaluate(h, 1600, policy).verdict, {
    state: "dead",
    reason: "no reply in 0.6 s since the monitor started",
    lastReplyAt: 1000,
  });
});

test("dead-is-measured-from-the-last-reply", () => {
  let h = healthStart(0);
  h = healthOnSample(h, { seq: 1, sentAt: 400, rttMs: 30 }, 430, policy);
  assert.equal(h.lastReplyAt, 430);
  assert.equal(healthDeadline(h, policy), 1030);
  // The next probe went out at 450 and is still in flight.
  h = healthNotePending(h, 450);
  assert.equal(healthDeadline(h, policy), 1030);
  assert.equal(healthEvaluate(h, 1029, policy).verdict.state, "healthy");
  const v = healthEvaluate(h, 1030, policy).verdict;
  assert.ok(v.state === "dead" && v.lastReplyAt === 430 && v.reason === "no reply for 0.6 s");
  h = healthOnSample(h, { seq: 2, sentAt: 450, rttMs: 10 }, 1035, policy);
  assert.equal(h.lastReplyAt, 460, "a reply reported late does not move lastReplyAt past when it arrived");
});

test("a-stalled-daemon-that-sent-nothing-is-not-a-dead-tunnel", () => {
  // Last reply at 430; then the daemon itself was not scheduled until 1100 and sent nothing meanwhile.
  let h = healthOnSample(healthStart(0), { seq: 1, sentAt: 400, rttMs: 30 }, 430, policy);
  h = healthNotePending(h, 1099);
  assert.equal(
    healthEvaluate(h, 1100, policy).verdict.state,
    "healthy",
    "700 ms of silence, but only one probe 1 ms old",
  );
  // The probe sent on waking must itself go unanswered for the window less one interval (550 ms).
  assert.equal(healthDeadline(h, policy), 1649);
  assert.equal(healthEvaluate(h, 1648, policy).verdict.state, "healthy");
  assert.equal(healthEvaluate(h, 1649, policy).verdict.state, "dead");
  // Its reply clears the evidence.
  h = healthOnSample(h, { seq: 2, sentAt: 1099, rttMs: 2 }, 1101, policy);
  assert.equal(h.unansweredSince, null);
  assert.equal(healthEvaluate(h, 1649, policy).verdict.state, "healthy");
});

test("a-probe-lost-before-the-newest-answered-one-is-no-evidence", () => {
  let h = healthStart(0);
  h = healthOnSample(h, { seq: 2, sentAt: 450, rttMs: 5 }, 455, policy);
  // seq 1 (sent at 400) was lost; its timeout arrives later and says nothing about the leg now.
  h = healthOnSample(h, { seq: 1, sentAt: 400, rttMs: null }, 1400, policy);
  assert.equal(h.unansweredSince, null);
  assert.equal(healthNotePending(h, 400).unansweredSince, null);
  assert.equal(healthEvaluate(h, 1400, policy).verdict.state, "healthy", "no probe sent after 450 is known to wait");
  // A timeout of a probe sent after the newest answer is evidence from when it was sent.
  h = healthOnSample(h, { seq: 3, sentAt: 475, rttMs: null }, 1475, policy);
  assert.equal(h.unansweredSince, 475);
  assert.equal(healthEvaluate(h, 1475, policy).verdict.state, "dead");
});

test("stats-report-rtt-percentiles-jitter-and-settled-loss", () => {
  let h = healthStart(0);
  const rtts = [10, 20, 30, 40, null, 50, 60, 70, 80, null];
  rtts.forEach((rtt, i) => {
    h = healthOnSample(h, { seq: i, sentAt: i * 100, rttMs: rtt }, i * 100 + (rtt ?? 1000), policy);
  });
  // At 2000 every sample sent up to 1000 is settled; all ten are within the 5 s window.
  const s = healthStats(h, 2000, policy);
  assert.equal(s.samples, 10);
  assert.equal(s.lossPct, 20);
  assert.equal(s.rttP50Ms, 40);
  assert.equal(s.rttP95Ms, 80);
  assert.equal(s.jitterMs, 10);
  assert.equal(s.lastReplyAt, 880);
});

test("a-duplicate-sample-counts-once", () => {
  let h = healthStart(0);
  h = healthOnSample(h, { seq: 1, sentAt: 0, rttMs: null }, 1000, policy);
  h = healthOnSample(h, { seq: 1, sentAt: 0, rttMs: null }, 1000, policy);
  assert.equal(h.samples.length, 1);
});

test("loss-above-the-threshold-held-for-holdMs-is-a-brownout", () => {
  const f = new Feeder(0);
  const rng = seededRandom(7);
  f.run(10_000, () => 20);
  assert.equal(f.h.verdict.state, "healthy");
  // 40 % loss from t=10 s: settled after the 1 s timeout, above 25 % of the window after a while, then held 3 s.
  f.run(30_000, (t) => (t >= 10_000 && rng() < 0.4 ? null : 20));
  const first = f.verdicts[0];
  assert.ok(first !== undefined, JSON.stringify(f.verdicts));
  assert.match(JSON.stringify(first.verdict), /^\{"state":"brownout","reason":"brownout: loss \d+% over 5 s"/);
  assert.ok(
    first.at >= 10_000 + policy.probeTimeoutMs + policy.brownout.holdMs,
    `brownout at ${first.at} is not before timeout + hold`,
  );
  assert.ok(
    first.at <= 10_000 + policy.probeTimeoutMs + policy.brownout.windowMs + policy.brownout.holdMs,
    `brownout at ${first.at}`,
  );
  assert.equal(f.verdicts.length, 1, "no flapping while the loss persists");
});

test("a-burst-over-the-threshold-for-less-than-holdMs-is-no-brownout-a-longer-one-is", () => {
  // Every other probe lost: 50 % loss. Over a 5 s window, 2.8 s of it keeps window loss above 25 % for ~2.7 s.
  const burst = (from: number, ms: number) => (t: number) =>
    t >= from && t < from + ms && Math.round(t / 50) % 2 === 0 ? null : 20;
  const short = new Feeder(0);
  short.run(10_000, () => 20);
  short.run(40_000, burst(10_000, 2800));
  assert.deepEqual(short.verdicts, []);
  const long = new Feeder(0);
  long.run(10_000, () => 20);
  long.run(40_000, burst(10_000, 4000));
  assert.deepEqual(
    long.verdicts.map((v) => v.verdict.state),
    ["brownout", "healthy"],
  );
});

test("brownout-clears-only-below-half-the-threshold", () => {
  const f = new Feeder(0);
  const rng = seededRandom(11);
  f.run(20_000, (t) => (rng() < (t < 10_000 ? 0 : 0.5) ? null : 20));
  assert.equal(f.h.verdict.state, "brownout");
  // 20 % is below the 25 % threshold but above half of it: the brownout holds.
  f.run(60_000, () => (rng() < 0.2 ? null : 20));
  assert.equal(f.h.verdict.state, "brownout");
  f.run(80_000, () => (rng() < 0.02 ? null : 20));
  assert.equal(f.h.verdict.state, "healthy");
  assert.deepEqual(
    f.verdicts.map((v) => v.verdict.state),
    ["brownout", "healthy"],
  );
});

test("median-rtt-over-the-threshold-is-a-brownout-when-configured", () => {
  const p = { ...policy, brownout: { ...policy.brownout, rttMs: 200 } };
  const f = new Feeder(0, p);
  f.run(10_000, () => 40);
  f.run(20_000, () => 350);
  const v = f.h.verdict;
  assert.ok(v.state === "brownout" && /median RTT 350 ms/.test(v.reason), JSON.stringify(v));
  f.run(40_000, () => 180);
  assert.equal(f.h.verdict.state, "brownout", "180 ms is under 200 but not under 80 % of it");
  f.run(60_000, () => 40);
  assert.equal(f.h.verdict.state, "healthy");
});

test("five-percent-random-loss-for-ten-minutes-never-leaves-healthy", () => {
  for (const seed of [1, 2, 3]) {
    const rng = seededRandom(seed);
    const f = new Feeder(0);
    f.run(600_000, () => (rng() < 0.05 ? null : 15 + Math.floor(rng() * 20)));
    assert.deepEqual(f.verdicts, [], `seed ${seed}`);
    const s = healthStats(f.h, f.now, policy);
    assert.ok(s.lossPct !== null && s.lossPct < 15, `seed ${seed}: ${String(s.lossPct)}`);
  }
});
