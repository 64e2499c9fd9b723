import assert from "node:assert/strict";
import { test } from "node:test";
import {
  compareMarkdown,
  parseCompareOptions,
  SCENARIOS,
  timedTable,
  verdicts,
  type CompareResult,
} from "./compare-report.ts";

test("quick-run-options-select-scenarios-and-soak-length", () => {
  assert.deepEqual(parseCompareOptions([]), { only: [...SCENARIOS], falseAlarmMinutes: 10, detourOnly: false });
  assert.deepEqual(parseCompareOptions(["--only", "failover,connect", "--false-alarm-minutes=0.5"]), {
    only: ["failover", "connect"],
    falseAlarmMinutes: 0.5,
    detourOnly: false,
  });
  assert.equal(parseCompareOptions(["--only", "false-alarm", "--detour-only"]).detourOnly, true);
  assert.throws(() => parseCompareOptions(["--detour-only=yes"]), /takes no value/);
  assert.deepEqual(parseCompareOptions(["--only", "connect", "--only", "connect"]).only, ["connect"]);
});

test("bad-options-are-refused-by-name", () => {
  assert.throws(() => parseCompareOptions(["--only", "bogus"]), /unknown scenario "bogus"/);
  assert.throws(() => parseCompareOptions(["--false-alarm-minutes", "0"]), /--false-alarm-minutes/);
  assert.throws(() => parseCompareOptions(["--false-alarm-minutes"]), /needs a value/);
  assert.throws(() => parseCompareOptions(["--fast"]), /unknown option "--fast"/);
});

const RESULT: CompareResult = {
  runs: 3,
  falseAlarmMinutes: 10,
  connect: [
    { setup: "Detour", settings: "", detour: "target", ms: [130, 140, 150], failures: 0 },
    { setup: "plain WireGuard", settings: "", singleEngine: true, ms: [90, 100, 110], failures: 0 },
    { setup: "plain IKEv2", settings: "", singleEngine: true, ms: [150, 160, 170], failures: 1 },
  ],
  udpBlocked: [{ setup: "Detour", settings: "", detour: "target", ms: [300, 400, 900], failures: 0 }],
  failover: [
    { setup: "Detour", settings: "", detour: "target", ms: [600, 700, 800], lost: [30, 35, 40], failures: 0 },
    { setup: "watchdog", settings: "N = 3 s", ms: [3500], lost: [175], failures: 2 },
  ],
  falseAlarm: [
    { setup: "Detour", settings: "", detour: true, minutes: 10, failovers: 0, streamLossPct: 9.8 },
    {
      setup: "strongSwan",
      settings: "",
      detour: false,
      minutes: 10,
      failovers: null,
      streamLossPct: null,
      error: "no SA",
    },
  ],
};

test("targets-compare-detour-with-the-fastest-engine-and-the-issue-thresholds", () => {
  const v = verdicts(RESULT);
  assert.deepEqual(
    v.map((x) => x.met),
    [false, true, false, true],
  );
  assert.match(v[0]?.measured ?? "", /plain WireGuard 100 ms = 1\.40x/);
});

test("missing-measurements-are-said-not-judged", () => {
  const v = verdicts({
    runs: 1,
    falseAlarmMinutes: 1,
    failover: [{ setup: "Detour", settings: "", detour: "target", ms: [], failures: 1 }],
  });
  assert.deepEqual(
    v.map((x) => x.met),
    [null],
  );
});

test("tables-show-ratios-against-detour-failures-and-probes-lost", () => {
  const lines = timedTable(RESULT.failover ?? [], true);
  const watchdog = lines.find((l) => l.startsWith("| watchdog"));
  assert.match(watchdog ?? "", /\| 3500 ms \|.*\| 1 \/ 2 \| 5\.00x \| 175 \(175–175\) \| N = 3 s \|/);
  const md = compareMarkdown(RESULT, { lab: "lab", failover: "stream" });
  assert.match(md, /\| \*\*Detour\*\* \| 10 \| 0 \| 9\.8 % \|/);
  assert.match(md, /failed: no SA/);
  assert.match(md, /\*\*not met\*\*/);
});
