import assert from "node:assert/strict";
import { test } from "node:test";
import { openSignInFor } from "./app-host.ts";
import { status } from "./fixtures.test-helper.ts";

const PORTAL = "http://198.18.205.1/signin";
const captive = status({
  state: "error",
  gateway: null,
  protocol: null,
  summary: "No gateway reachable",
  captive: {
    state: "sign-in-required",
    reason: `the check URL was redirected to ${PORTAL}`,
    portalUrl: PORTAL,
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
    },
  },
});

test("the-window-opens-the-sign-in-page-detourd-found-and-nothing-else", () => {
  const opened: string[] = [];
  const open = (u: string): boolean => {
    opened.push(u);
    return true;
  };
  assert.deepEqual(openSignInFor(captive, open), { ok: true, value: null });
  assert.deepEqual(opened, [PORTAL]);
  const none = openSignInFor(status(), open);
  assert.equal(!none.ok && none.code, "refused", "no sign-in page on an open network");
  assert.equal(opened.length, 1);
});

test("the-browser-build-says-what-to-open-and-an-unsafe-address-is-refused", () => {
  const r = openSignInFor(captive, undefined);
  assert.ok(!r.ok);
  assert.equal(r.code, "unavailable");
  assert.match(r.message, /open http:\/\/198\.18\.205\.1\/signin in a web browser/);
  const bad = openSignInFor(captive, () => false);
  assert.equal(!bad.ok && bad.code, "invalid");
});
