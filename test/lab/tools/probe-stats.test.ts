/** Unit tests for the probe payload codec, reply ledger, RTT percentiles and gap detection: pure, time passed in. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  PROBE_PAYLOAD_BYTES,
  ProbeLedger,
  decodeProbe,
  encodeProbe,
  findGaps,
  percentile,
  summarizeRtts,
} from "./probe-stats.ts";

void describe("probe payload codec", () => {
  void it("round-trips run, sequence number and send time", () => {
    const p = { run: 0xdeadbeef, seq: 41, sentAt: 1_795_000_000_123.456 };
    const bytes = encodeProbe(p);
    assert.equal(bytes.byteLength, PROBE_PAYLOAD_BYTES);
    assert.deepEqual(decodeProbe(bytes), p);
  });

  void it("decodes a payload that sits inside a larger buffer (as Node hands out datagrams)", () => {
    const big = new Uint8Array(100);
    big.set(encodeProbe({ run: 7, seq: 3, sentAt: 5 }), 10);
    assert.deepEqual(decodeProbe(big.subarray(10, 10 + PROBE_PAYLOAD_BYTES)), { run: 7, seq: 3, sentAt: 5 });
  });

  void it("refuses datagrams that are not probes", () => {
    assert.equal(decodeProbe(new Uint8Array(0)), null);
    assert.equal(decodeProbe(new Uint8Array(PROBE_PAYLOAD_BYTES)), null, "wrong magic");
    const good = encodeProbe({ run: 1, seq: 1, sentAt: 1 });
    assert.equal(decodeProbe(good.subarray(0, PROBE_PAYLOAD_BYTES - 1)), null, "truncated");
    const longer = new Uint8Array(PROBE_PAYLOAD_BYTES + 1);
    longer.set(good);
    assert.equal(decodeProbe(longer), null, "trailing bytes");
    const nan = encodeProbe({ run: 1, seq: 1, sentAt: Number.NaN });
    assert.equal(decodeProbe(nan), null, "send time not a number");
  });
});

void describe("percentiles", () => {
  void it("uses nearest rank, so every percentile is an observed value", () => {
    const sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    assert.equal(percentile(sorted, 50), 5);
    assert.equal(percentile(sorted, 95), 10);
    assert.equal(percentile(sorted, 0), 1);
    assert.equal(percentile(sorted, 100), 10);
    assert.equal(percentile([42], 95), 42);
    assert.ok(Number.isNaN(percentile([], 50)));
  });

  void it("summarizes unsorted samples, rounded to microseconds", () => {
    assert.deepEqual(summarizeRtts([3, 1, 2, 4.0004]), { min: 1, p50: 2, avg: 2.5, p95: 4, max: 4 });
    assert.equal(summarizeRtts([]), null);
    const many = Array.from({ length: 100 }, (_, i) => 100 - i);
    const s = summarizeRtts(many);
    assert.deepEqual(s, { min: 1, p50: 50, avg: 50.5, p95: 95, max: 100 });
  });
});

void describe("gap detection", () => {
  const at = (replied: string): { sentAt: number; replied: boolean }[] =>
    Array.from(replied, (c, i) => ({ sentAt: i * 10, replied: c === "1" }));

  void it("finds no gap when every probe was answered", () => {
    assert.deepEqual(findGaps(at("11111"), 50), { gaps: [], gapCount: 0, longestGapMs: 0 });
  });

  void it("measures a gap from the first lost probe to the next answered one", () => {
    const r = findGaps(at("1100011"), 70);
    assert.deepEqual(r.gaps, [{ fromAt: 20, toAt: 50, lost: 3, durationMs: 30 }]);
    assert.equal(r.longestGapMs, 30);
  });

  void it("reports several gaps and the longest", () => {
    const r = findGaps(at("10110001"), 80);
    assert.deepEqual(
      r.gaps.map((g) => [g.fromAt, g.toAt, g.lost]),
      [
        [10, 20, 1],
        [40, 70, 3],
      ],
    );
    assert.equal(r.longestGapMs, 30);
    assert.equal(r.gapCount, 2);
  });

  void it("counts a loss at the very start (tunnel not up yet) as a gap", () => {
    assert.deepEqual(findGaps(at("0011"), 40).gaps, [{ fromAt: 0, toAt: 20, lost: 2, durationMs: 20 }]);
  });

  void it("leaves a gap that never recovered open, measured to the end of sending", () => {
    const r = findGaps(at("1100"), 45);
    assert.deepEqual(r.gaps, [{ fromAt: 20, toAt: null, lost: 2, durationMs: 25 }]);
    assert.equal(r.longestGapMs, 25);
    assert.deepEqual(findGaps(at("000"), 30).gaps, [{ fromAt: 0, toAt: null, lost: 3, durationMs: 30 }]);
  });

  void it("lists at most maxGaps gaps but counts and measures all of them", () => {
    const r = findGaps(at("0101010001"), 100, 2);
    assert.equal(r.gaps.length, 2);
    assert.equal(r.gapCount, 4);
    assert.equal(r.longestGapMs, 30);
  });

  void it("handles no probes at all", () => {
    assert.deepEqual(findGaps([], 0), { gaps: [], gapCount: 0, longestGapMs: 0 });
  });
});

void describe("ProbeLedger", () => {
  void it("counts a reply once and its copies as duplicates", () => {
    const ledger = new ProbeLedger(99, 1000);
    const p0 = ledger.nextProbe(0);
    const p1 = ledger.nextProbe(10);
    assert.equal(ledger.record(p0, 5), "reply");
    assert.equal(ledger.record(p0, 6), "duplicate");
    assert.equal(ledger.record(p1, 12), "reply");
    const c = ledger.counts();
    assert.equal(c.sent, 2);
    assert.equal(c.received, 2);
    assert.equal(c.duplicates, 1);
    assert.equal(c.lossPct, 0);
    assert.equal(c.firstReplyAt, 5);
    assert.deepEqual(c.rttMs, { min: 2, p50: 2, avg: 3.5, p95: 5, max: 5 });
  });

  void it("counts a reply after the timeout as late and the probe as lost", () => {
    const ledger = new ProbeLedger(1, 100);
    const p0 = ledger.nextProbe(0);
    const p1 = ledger.nextProbe(10);
    assert.equal(ledger.record(p0, 150), "late");
    assert.equal(ledger.record(p0, 160), "duplicate");
    assert.equal(ledger.record(p1, 60), "reply");
    const c = ledger.counts();
    assert.equal(c.received, 1);
    assert.equal(c.late, 1);
    assert.equal(c.lossPct, 50);
    assert.deepEqual(ledger.gaps(20).gaps, [{ fromAt: 0, toAt: 10, lost: 1, durationMs: 10 }]);
  });

  void it("takes replies of another run, unknown sequence numbers and garbage for strays", () => {
    const ledger = new ProbeLedger(5, 100);
    ledger.nextProbe(0);
    assert.equal(ledger.record({ run: 6, seq: 0, sentAt: 0 }, 1), "stray");
    assert.equal(ledger.record({ run: 5, seq: 1, sentAt: 0 }, 1), "stray");
    assert.equal(ledger.record(null, 1), "stray");
    const c = ledger.counts();
    assert.equal(c.stray, 3);
    assert.equal(c.received, 0);
    assert.equal(c.lossPct, 100);
    assert.equal(c.rttMs, null);
    assert.equal(c.firstReplyAt, null);
  });

  void it("knows which probes can still be answered in time", () => {
    const ledger = new ProbeLedger(1, 100);
    const p0 = ledger.nextProbe(0);
    ledger.nextProbe(50);
    ledger.nextProbe(90);
    assert.equal(ledger.pending(95), 3);
    ledger.record(p0, 96);
    assert.equal(ledger.pending(96), 2);
    assert.equal(ledger.pending(140), 2);
    assert.equal(ledger.pending(160), 1, "the probe sent at 50 has timed out");
    assert.equal(ledger.pending(191), 0);
    assert.equal(ledger.lastSentAt(), 90);
  });

  void it("reports zero loss and no gaps before the first probe", () => {
    const ledger = new ProbeLedger(1, 100);
    assert.equal(ledger.counts().lossPct, 0);
    assert.equal(ledger.lastSentAt(), null);
    assert.equal(ledger.pending(0), 0);
    assert.equal(ledger.gaps(0).gapCount, 0);
  });
});
