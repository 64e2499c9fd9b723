/** The bridge's token checks as pure functions; the HTTP and WebSocket checks run in the lab (test/e2e). */
import assert from "node:assert/strict";
import { test } from "node:test";
import { requestToken, tokenMatches } from "./dev-bridge.ts";

test("the-token-is-compared-whole-whatever-its-length", () => {
  assert.equal(tokenMatches("abc", "abc"), true);
  assert.equal(tokenMatches("ab", "abc"), false);
  assert.equal(tokenMatches("abcd", "abc"), false);
  assert.equal(tokenMatches("", "abc"), false);
  assert.equal(tokenMatches(null, "abc"), false);
});

test("the-token-comes-from-the-header-the-cookie-or-the-query", () => {
  assert.equal(requestToken({ headers: { authorization: "Bearer t1" }, url: "/" }), "t1");
  assert.equal(requestToken({ headers: { cookie: "a=b; detour-token=t2; c=d" }, url: "/" }), "t2");
  assert.equal(requestToken({ headers: {}, url: "/?token=t3" }), "t3");
  assert.equal(requestToken({ headers: { authorization: "Basic x" }, url: "/" }), null);
});
