import assert from "node:assert/strict";
import { test } from "node:test";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import type { CheckAnswer } from "../core/captive.ts";
import { CAPTIVE_POLL_MS, CAPTIVE_RECHECK_MIN_MS, CaptiveMonitor, type CaptiveHost } from "./captive.ts";
import { createLogger } from "./log.ts";

const PORTAL = "198.18.205.1";
const CHECK_HOST = "198.18.204.1";
const RESOLVER = "198.18.53.2";

/** A network whose check answers with a redirect to the portal until `signedIn`. */
function world(
  opts: { exceptionMs?: number; allowException?: boolean; fetch?: () => Promise<CheckAnswer> | null } = {},
) {
  const clock = new FakeClock();
  const net = { signedIn: false, silent: false, fetches: 0 };
  const reports: string[] = [];
  let reconnects = 0;
  let applies = 0;
  const host: CaptiveHost = {
    config: () => ({
      captive: {
        checkUrl: "http://check.lab.detour.test/generate_204",
        exceptionMs: opts.exceptionMs ?? 300_000,
        allowException: opts.allowException ?? true,
      },
    }),
    probe: {
      resolve: () => Promise.resolve([CHECK_HOST]),
      fetch: (): Promise<CheckAnswer> => {
        net.fetches += 1;
        const own = opts.fetch?.() ?? null;
        if (own !== null) return own;
        if (net.silent) return Promise.reject(new Error("no answer within 3000 ms"));
        return Promise.resolve(
          net.signedIn
            ? { status: 204, location: null, bodyBytes: 0 }
            : { status: 302, location: `http://${PORTAL}/`, bodyBytes: 0 },
        );
      },
    },
    networkResolvers: () => [RESOLVER],
    applyKillSwitch: () => {
      applies += 1;
      return Promise.resolve();
    },
    reconnect: () => {
      reconnects += 1;
    },
    report: (change) => {
      reports.push(change);
    },
    clock,
    log: createLogger({ write: () => undefined }),
    track: (p) => {
      p.catch(() => undefined);
    },
  };
  const m = new CaptiveMonitor(host);
  return { m, clock, net, reports, reconnects: () => reconnects, applies: () => applies };
}

test("a-portal-says-sign-in-opens-the-exception-and-a-sign-in-closes-it-and-reconnects", async () => {
  const w = world();
  const v = await w.m.check("connect-failed");
  assert.equal(v.kind, "captive");
  const s = w.m.status();
  assert.equal(s.state, "sign-in-required");
  assert.equal(s.portalUrl, `http://${PORTAL}/`);
  assert.equal(s.exception.state, "open");
  assert.deepEqual(w.m.killSwitchInputs(), {
    checkAddresses: [CHECK_HOST],
    captiveException: { portalAddresses: [PORTAL], resolvers: [RESOLVER] },
  });
  w.net.signedIn = true;
  await w.clock.advance(CAPTIVE_POLL_MS);
  assert.equal(w.m.status().state, "open");
  assert.equal(w.m.status().exception.state, "closed");
  assert.equal(w.m.status().exception.closedReason, "signed in");
  assert.equal(w.m.killSwitchInputs().captiveException, null);
  assert.equal(w.reconnects(), 1);
  assert.deepEqual(w.reports, ["sign-in-required", "exception-opened", "open", "exception-closed"]);
});

test("the-exception-closes-when-its-time-runs-out-and-polling-stops", async () => {
  const w = world({ exceptionMs: 10_000 });
  await w.m.check("start");
  await w.clock.advance(10_000);
  const s = w.m.status();
  assert.equal(s.state, "sign-in-required", "still captive: the user did not sign in");
  assert.equal(s.exception.state, "closed");
  assert.equal(s.exception.closedReason, "timed out");
  assert.equal(w.m.killSwitchInputs().captiveException, null);
  const fetches = w.net.fetches;
  await w.clock.advance(5 * CAPTIVE_POLL_MS);
  assert.equal(w.net.fetches, fetches, "no polling without an exception");
  assert.equal(w.reconnects(), 0);
});

test("configuration-or-policy-can-forbid-the-exception", async () => {
  const w = world({ allowException: false });
  await w.m.check("start");
  assert.equal(w.m.status().state, "sign-in-required");
  assert.equal(w.m.status().exception.state, "forbidden");
  assert.equal(w.m.killSwitchInputs().captiveException, null);
});

test("a-check-that-gets-no-answer-opens-nothing", async () => {
  const w = world();
  w.net.silent = true;
  const v = await w.m.check("start");
  assert.equal(v.kind, "unknown");
  assert.equal(w.m.status().state, "unknown");
  assert.equal(w.m.killSwitchInputs().captiveException, null);
});

test("failed-connects-trigger-at-most-one-check-per-interval", async () => {
  const w = world();
  w.net.silent = true;
  w.m.connectFailed();
  w.m.connectFailed();
  await w.clock.settle();
  assert.equal(w.net.fetches, 1);
  await w.clock.advance(CAPTIVE_RECHECK_MIN_MS);
  w.m.connectFailed();
  await w.clock.settle();
  assert.equal(w.net.fetches, 2);
});

test("a-tunnel-coming-up-closes-an-open-exception", async () => {
  const w = world();
  await w.m.check("start");
  w.m.connected();
  assert.equal(w.m.status().exception.closedReason, "connected");
  assert.equal(w.m.killSwitchInputs().captiveException, null);
});

test("a-sign-in-exception-that-ran-out-is-not-reopened-by-retries-only-by-the-users-next-connect", async () => {
  const w = world({ exceptionMs: 10_000 });
  await w.m.check("connect-failed");
  await w.clock.advance(10_000);
  assert.equal(w.m.status().exception.closedReason, "timed out");
  await w.clock.advance(CAPTIVE_RECHECK_MIN_MS);
  const fetches = w.net.fetches;
  w.m.connectFailed();
  await w.clock.settle();
  assert.equal(w.net.fetches, fetches + 1, "the network is still checked");
  assert.equal(w.m.status().state, "sign-in-required");
  assert.equal(w.m.status().exception.state, "closed", "a retry does not reopen it");
  assert.equal(w.m.killSwitchInputs().captiveException, null);
  w.m.userConnected();
  await w.m.check("request");
  assert.equal(w.m.status().exception.state, "open", "the user's connect gets a fresh exception");
  assert.equal(w.m.status().exception.opened, 2);
});

test("a-network-change-checks-the-new-network-at-once-and-drops-the-old-networks-late-answer", async () => {
  // The first check (on the old network) waits for an answer that comes only after the move, and says "open".
  let answerOld: (a: CheckAnswer) => void = () => undefined;
  let calls = 0;
  const w = world({
    fetch: () => {
      calls += 1;
      return calls === 1
        ? new Promise<CheckAnswer>((resolve) => {
            answerOld = resolve;
          })
        : null;
    },
  });
  const onOld = w.m.check("start");
  assert.equal(w.m.check("poll"), onOld, "another trigger shares the running check");
  for (let i = 0; i < 100 && calls === 0; i++) await new Promise((r) => setImmediate(r));
  assert.equal(calls, 1, "the old network's check is waiting for its answer");
  const onHotel = w.m.check("network-change");
  assert.notEqual(onHotel, onOld, "a network change does not wait for the old network's check");
  assert.equal((await onHotel).kind, "captive");
  assert.equal(w.m.status().state, "sign-in-required");
  answerOld({ status: 204, location: null, bodyBytes: 0 });
  assert.equal((await onOld).kind, "open");
  assert.equal(w.m.status().state, "sign-in-required", "the old network's late answer changes nothing");
  assert.equal(w.m.status().checks, 1);
  assert.equal(w.reconnects(), 0);
});
