import assert from "node:assert/strict";
import { test } from "node:test";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import type { MachineInput } from "../core/connection/types.ts";
import type { SleepMonitorListener } from "../../native/platform/platform.ts";
import type { Logger } from "./log.ts";
import { NetworkWatch, SLEEP_IMPOSTOR_REPORT_MS, WAKE_DEDUPE_MS, WAKE_TICK_MS } from "./network-watch.ts";

interface Watched {
  clock: FakeClock;
  watch: NetworkWatch;
  wakes: Extract<MachineInput, { type: "wake" }>[];
  reports: { name: string; body: object }[];
  logind: () => SleepMonitorListener;
  stopped: () => boolean;
}

function watched(withLogind = true): Watched {
  const clock = new FakeClock();
  const wakes: Watched["wakes"] = [];
  const reports: Watched["reports"] = [];
  let listener: SleepMonitorListener | null = null;
  let stopped = false;
  const quiet = (): void => undefined;
  const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet };
  const watch = new NetworkWatch(
    {
      monitor: { subscribe: () => ({ stop: quiet, recheck: quiet }) },
      ...(withLogind
        ? {
            sleep: {
              subscribe: (l: SleepMonitorListener) => {
                listener = l;
                return {
                  stop: () => {
                    stopped = true;
                  },
                };
              },
            },
          }
        : {}),
      ifnamePrefix: "dt",
      targets: () => [],
      now: () => clock.monotonic(),
      dispatch: (i) => {
        if (i.type === "wake") wakes.push(i);
      },
      networkChanged: quiet,
      refreshNetworkKey: () => Promise.resolve(),
      report: (name, body) => reports.push({ name, body }),
      track: () => undefined,
      log,
    },
    clock,
  );
  watch.start();
  return {
    clock,
    watch,
    wakes,
    reports,
    logind: () => {
      assert.ok(listener !== null, "the watch subscribed to the sleep monitor");
      return listener;
    },
    stopped: () => stopped,
  };
}

test("logind's-resume-is-a-wake-at-once-and-the-clock-jump-of-the-same-sleep-is-not-a-second-one", async () => {
  const w = watched();
  const l = w.logind();
  l.state("listening", "org.freedesktop.login1 is :1.2");
  assert.deepEqual(w.watch.status().sleep.sources, ["clock", "logind"]);
  l.prepareForSleep({ at: w.clock.wall(), sleeping: true });
  assert.equal(w.wakes.length, 0, "about to sleep is no wake, and nothing is taken down");
  assert.ok(w.watch.status().sleep.lastSleepAt !== null);
  // Five minutes suspended: the monotonic clock stood still, the wall clock did not; logind speaks first.
  w.clock.stepWall(300_000);
  l.prepareForSleep({ at: w.clock.wall(), sleeping: false });
  assert.equal(w.wakes.length, 1, "the wake is dispatched at once, before any tick");
  assert.equal(w.wakes[0]?.sleptMs, 300_000);
  await w.clock.advance(WAKE_TICK_MS);
  assert.equal(w.wakes.length, 1, "the clocks' view of the same sleep is consumed");
  // An NTP correction right after the resume: the same wake, absorbed.
  w.clock.stepWall(6_000);
  await w.clock.advance(WAKE_TICK_MS);
  assert.equal(w.wakes.length, 1, "a clock jump right after the resume does not dispatch a second wake");
  const s = w.watch.status().sleep;
  assert.equal(s.absorbed, 1);
  assert.equal(s.lastWake?.source, "logind");
  assert.equal(w.watch.status().wakes, 1);
  assert.deepEqual(
    w.reports.filter((r) => r.name === "detour.sleep.woke").map((r) => r.body),
    [{ source: "logind", sleptMs: 300_000 }],
  );
  w.watch.stop();
  assert.ok(w.stopped(), "the sleep monitor is unsubscribed");
});

test("a-suspend-is-seen-at-the-first-input-after-resume-without-waiting-for-the-tick", async () => {
  const w = watched();
  await w.clock.advance(1_000);
  // Suspended for a minute: the monotonic clock stood still. The daemon's next input (a probe result) looks.
  w.clock.stepWall(60_000);
  w.watch.observe();
  assert.equal(w.wakes.length, 1, "seen at the input, before the background tick");
  assert.equal(w.wakes[0]?.sleptMs, 60_000);
  await w.clock.advance(WAKE_TICK_MS);
  w.watch.observe();
  assert.equal(w.wakes.length, 1, "the tick and later inputs do not see the same sleep again");
  w.watch.stop();
  w.clock.stepWall(60_000);
  w.watch.observe();
  assert.equal(w.wakes.length, 1, "a stopped watch looks at nothing");
});

test("a-clock-wake-first-absorbs-logind's-late-resume-but-a-new-sleep-is-a-new-wake", async () => {
  const w = watched();
  const l = w.logind();
  l.state("listening", null);
  l.prepareForSleep({ at: w.clock.wall(), sleeping: true });
  w.clock.stepWall(60_000);
  await w.clock.advance(WAKE_TICK_MS);
  assert.equal(w.wakes.length, 1, "the clocks saw the sleep first");
  assert.equal(w.watch.status().sleep.lastWake?.source, "clock");
  await w.clock.advance(1_500);
  l.prepareForSleep({ at: w.clock.wall(), sleeping: false });
  assert.equal(w.wakes.length, 1, "logind's resume of the same sleep is absorbed");
  // Asleep again (announced), right away: its resume is a wake of its own.
  l.prepareForSleep({ at: w.clock.wall(), sleeping: true });
  w.clock.stepWall(30_000);
  l.prepareForSleep({ at: w.clock.wall(), sleeping: false });
  assert.equal(w.wakes.length, 2);
  await w.clock.advance(WAKE_DEDUPE_MS + WAKE_TICK_MS);
  // Long after, a freeze the clocks see (no logind announcement) is a wake too.
  w.clock.stepWall(10_000);
  await w.clock.advance(WAKE_TICK_MS);
  assert.equal(w.wakes.length, 3);
  assert.equal(w.watch.status().sleep.absorbed, 1);
});

test("forged-sleep-signals-are-counted-and-reported-at-most-once-a-minute-and-the-watcher's-state-shows", async () => {
  const w = watched();
  const l = w.logind();
  l.state("unavailable", "no system bus at /run/dbus/system_bus_socket");
  assert.deepEqual(w.watch.status().sleep.sources, ["clock"], "without logind the clocks are the only detector");
  assert.equal(w.watch.status().sleep.logindDetail, "no system bus at /run/dbus/system_bus_socket");
  for (let i = 0; i < 5; i++) l.ignored("PrepareForSleep(false) from :1.66");
  l.watcherDied("busctl monitor exited (SIGKILL)");
  const s = w.watch.status().sleep;
  assert.equal(s.impostors, 5);
  assert.equal(s.watcherDeaths, 1);
  assert.equal(w.reports.filter((r) => r.name === "detour.sleep.impostor").length, 1);
  assert.equal(w.reports.filter((r) => r.name === "detour.sleep.watcher-died").length, 1);
  await w.clock.advance(SLEEP_IMPOSTOR_REPORT_MS);
  l.ignored("PrepareForSleep(false) from :1.66");
  assert.equal(w.reports.filter((r) => r.name === "detour.sleep.impostor").length, 2);
  assert.equal(w.wakes.length, 0);
});

test("a-platform-without-a-sleep-monitor-says-the-clocks-alone-detect-sleep", () => {
  const w = watched(false);
  assert.deepEqual(w.watch.status().sleep, {
    sources: ["clock"],
    logind: "unsupported",
    logindDetail: null,
    lastSleepAt: null,
    lastWake: null,
    absorbed: 0,
    watcherDeaths: 0,
    impostors: 0,
  });
});
