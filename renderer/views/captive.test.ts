import assert from "node:assert/strict";
import { test } from "node:test";
import type { StatusPayload } from "../../main/core/protocol/messages.ts";
import { captiveWords } from "./captive.ts";

const clock = (ms: number): string => `T${String(ms)}`;

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

test("the-panel-says-sign-in-what-to-open-and-until-when-the-exception-lasts", () => {
  const w = captiveWords(withCaptive({}), clock);
  assert.ok(w !== null);
  assert.equal(w.headline, "Sign in to this network");
  assert.equal(w.url, "http://198.18.205.1/signin");
  assert.match(w.exception, /^Until T300001, this computer may reach only this network's sign-in page/);
});

test("without-a-blocking-kill-switch-the-panel-does-not-claim-everything-else-is-blocked", () => {
  const w = captiveWords({ ...withCaptive({}), killSwitch: undefined }, clock);
  assert.match(w?.exception ?? "", /your organisation's networks stay blocked/);
});

test("the-panel-says-when-the-time-ran-out-or-the-policy-forbids-it", () => {
  assert.match(
    captiveWords(withCaptive({ state: "closed", closedReason: "timed out" }), clock)?.exception ?? "",
    /ran out/,
  );
  assert.match(captiveWords(withCaptive({ state: "forbidden" }), clock)?.exception ?? "", /does not allow/);
});

test("no-panel-on-an-open-network-or-once-connected", () => {
  assert.equal(captiveWords(null, clock), null);
  assert.equal(captiveWords({ state: "connected" } as unknown as StatusPayload, clock), null);
  assert.equal(captiveWords({ ...withCaptive({}), state: "connected" }, clock), null);
});
