import assert from "node:assert/strict";
import { test } from "node:test";
import type { StatusPayload } from "../../main/core/protocol/messages.ts";
import { captiveWords } from "./captive.ts";

function withCaptive(exception: Partial<NonNullable<StatusPayload["captive"]>["exception"]>): StatusPayload {
  return {
    state: "error",
    killSwitch: { mode: "blocking" },
    captive: {
      state: "sign-in-required",
      reason: "the check URL was redirected to http://198.18.205.1/signin",
      portalUrl: "http://198.18.205.1/signin",
      checkedAt: 1,
      checks: 1,
      exception: {
        state: "open",
        openedAt: 1,
        closesAt: 300_001,
        portalAddresses: ["198.18.205.1"],
        resolvers: ["198.18.53.2"],
        closedReason: null,
        opened: 1,
        ...exception,
      },
    },
  } as unknown as StatusPayload;
}

test("the-panel-says-sign-in-what-to-open-and-what-is-reachable-meanwhile", () => {
  const w = captiveWords(withCaptive({}));
  assert.ok(w !== null);
  assert.equal(w.headline, "Sign in to this network");
  assert.equal(w.url, "http://198.18.205.1/signin");
  assert.match(w.exception ?? "", /^Meanwhile this computer may reach only this network's sign-in page/);
  // The status line above the panel carries the reason and the time left: the panel does not repeat them.
  assert.doesNotMatch(JSON.stringify(w), /redirected|T300001|300001/);
});

test("without-a-blocking-kill-switch-the-panel-does-not-claim-everything-else-is-blocked", () => {
  const w = captiveWords({ ...withCaptive({}), killSwitch: undefined });
  assert.match(w?.exception ?? "", /your organisation's networks stay blocked/);
});

test("without-an-open-exception-the-panel-leaves-why-to-the-status-line", () => {
  for (const ex of [{ state: "closed", closedReason: "timed out" }, { state: "forbidden" }] as const) {
    const w = captiveWords(withCaptive(ex));
    assert.ok(w !== null, `the panel still shows the page to open (${ex.state})`);
    assert.equal(w.exception, null);
  }
});

test("no-panel-on-an-open-network-or-once-connected", () => {
  assert.equal(captiveWords(null), null);
  assert.equal(captiveWords({ state: "connected" } as unknown as StatusPayload), null);
  assert.equal(captiveWords({ ...withCaptive({}), state: "connected" }), null);
});
