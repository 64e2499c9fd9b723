import assert from "node:assert/strict";
import { test } from "node:test";
import { renderReport, type ChaosReport } from "./chaos.ts";

const T0 = 1_000_000;

function report(over: Partial<ChaosReport> = {}): ChaosReport {
  return {
    seed: 7,
    startedAt: T0,
    durationMs: 240_000,
    interrupted: false,
    schedule: [],
    fired: [],
    share: {
      healthyMs: 200_000,
      connectedWhileHealthyMs: 199_000,
      owedMs: 100_000,
      connectedWhileOwedMs: 99_000,
      notConnectedOwedMs: { racing: 1_000 },
    },
    stretches: [],
    bundled: true,
    noDaemonKills: false,
    connectedPct: 99.5,
    connectedOwedPct: 99,
    leaked: 0,
    failovers: 10,
    failoversGoal: 7,
    violations: [],
    leftovers: [],
    rss: [],
    restarts: 0,
    maxEngines: 6,
    killSwitchRestoreMs: [],
    probes: { sent: 10, received: 10 },
    markdown: "",
    ...over,
  };
}

test("the-report-lists-each-owed-stretch-with-detourds-words-the-healthy-gateways-and-the-faults-before", () => {
  const md = renderReport(
    report({
      stretches: [
        {
          from: T0 + 61_500,
          ms: 1_250,
          states: [
            { state: "error", summary: "Cannot connect | retry in 2 s", ms: 1_000 },
            { state: "racing", summary: "Racing gw2", ms: 250 },
          ],
          healthy: [["gw2"], ["gw2", "gw3"]],
          lastFaults: [
            { at: T0 + 50_000, what: "kill gw1 (power off) for 9000 ms: gw1 powered off" },
            { at: T0 + 59_000, what: "restore gw2: gw2 restored" },
          ],
        },
      ],
    }),
    T0,
  );
  assert.match(md, /## Owed time not connected/);
  assert.match(md, /1 stretches, 1\.3 s/);
  assert.ok(
    md.includes(
      "| t+61.5 s | 1.25 s | error: Cannot connect \\| retry in 2 s (1.00 s); racing: Racing gw2 (0.25 s) | gw2 then gw2, gw3 | t+50.0 s kill gw1 (power off) for 9000 ms: gw1 powered off; t+59.0 s restore gw2: gw2 restored |",
    ),
    md,
  );
  assert.match(md, /from its esbuild bundle/);
});

test("the-report-says-when-a-slow-action-such-as-a-restore-was-done", () => {
  const md = renderReport(
    report({
      fired: [
        { atMs: 120_300, what: "restore gw1", note: "gw1 restored", tookMs: 1_300 },
        { atMs: 121_000, what: "lift i4", note: "block-protocol at gw2 lifted", tookMs: 20 },
      ],
    }),
    T0,
  );
  assert.ok(md.includes("- t+120.3 s restore gw1: gw1 restored (done after 1.3 s)"), md);
  assert.ok(md.includes("- t+121.0 s lift i4: block-protocol at gw2 lifted\n"), md);
});

test("the-report-gives-each-instances-rss-and-heap-medians-and-says-when-daemon-kills-were-left-out", () => {
  const series = [40, 30, 41, 31, 42, 32, 40, 30, 41, 31, 42, 32].map((h, i) => ({
    s: i * 5,
    rssKiB: 100 * 1024 + i * 1024,
    heapKiB: h * 1024,
  }));
  const md = renderReport(
    report({
      noDaemonKills: true,
      rss: [
        {
          pid: 42,
          firstKiB: 100 * 1024,
          lastKiB: 111 * 1024,
          maxKiB: 111 * 1024,
          spanMs: 55_000,
          heapFirstKiB: 40 * 1024,
          heapLastKiB: 32 * 1024,
          externalLastKiB: 2 * 1024,
          arrayBuffersLastKiB: 512,
          series,
        },
      ],
    }),
    T0,
  );
  assert.match(md, /detourd SIGKILLs were left out \(--no-daemon-kills\)/);
  assert.match(
    md,
    /\| 42 \| 100\.0 MiB \| 111\.0 MiB \| 111\.0 MiB \| 36\.0 MiB \| 36\.0 MiB \| 2\.0 MiB \/ 0\.5 MiB \| 55 s \|/,
  );
  assert.match(md, /pid 42\) first \/ last \| 100\.0 \/ 111\.0 MiB \(\+11\.0 % over 55 s\)/);
});
