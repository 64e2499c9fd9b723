import assert from "node:assert/strict";
import { test } from "node:test";
import { judgeCheckAnswer, judgeCheckHostAnswer, portalTarget, type CaptiveVerdict } from "./captive.ts";

const portalOf = (v: CaptiveVerdict): string | null | undefined => (v.kind === "captive" ? v.portalUrl : undefined);
const reasonOf = (v: CaptiveVerdict): string => (v.kind === "open" ? "" : v.reason);

const CHECK = "http://check.lab.detour.test/generate_204";

test("a-204-or-an-empty-200-means-the-network-is-open", () => {
  assert.deepEqual(judgeCheckAnswer(CHECK, { status: 204, location: null, bodyBytes: 0 }), { kind: "open" });
  assert.deepEqual(judgeCheckAnswer(CHECK, { status: 200, location: null, bodyBytes: 0 }), { kind: "open" });
});

test("a-redirect-is-a-portal-and-its-target-is-the-sign-in-page", () => {
  const v = judgeCheckAnswer(CHECK, { status: 302, location: "http://198.18.205.1/login?x=1", bodyBytes: 0 });
  assert.equal(v.kind, "captive");
  assert.equal(portalOf(v), "http://198.18.205.1/login?x=1");
  const rel = judgeCheckAnswer(CHECK, { status: 307, location: "/portal", bodyBytes: 0 });
  assert.equal(portalOf(rel), "http://check.lab.detour.test/portal");
});

test("content-instead-of-204-or-a-511-is-a-portal-answering-in-place", () => {
  const v = judgeCheckAnswer(CHECK, { status: 200, location: null, bodyBytes: 812 });
  assert.equal(v.kind, "captive");
  assert.match(reasonOf(v), /812 bytes/);
  assert.equal(judgeCheckAnswer(CHECK, { status: 511, location: null, bodyBytes: 10 }).kind, "captive");
});

test("errors-and-redirects-without-a-target-are-not-taken-for-a-portal", () => {
  assert.equal(judgeCheckAnswer(CHECK, { status: 503, location: null, bodyBytes: 0 }).kind, "unknown");
  assert.equal(judgeCheckAnswer(CHECK, { status: 302, location: null, bodyBytes: 0 }).kind, "unknown");
});

test("a-hostile-redirect-target-is-never-a-sign-in-page", () => {
  for (const bad of [
    "javascript:alert(1)",
    "data:text/html,x",
    "//evil.example/x",
    "http://u:p@evil.example/",
    "ftp://x/",
  ])
    assert.equal(portalTarget(CHECK, bad), null, bad);
  const v = judgeCheckAnswer(CHECK, { status: 302, location: "javascript:alert(1)", bodyBytes: 0 });
  assert.equal(portalOf(v), null);
});

test("a-dns-answer-in-private-or-special-use-space-for-the-check-host-is-a-portal", () => {
  for (const a of ["10.1.2.3", "192.168.1.1", "172.20.0.1", "100.64.0.1", "127.0.0.1", "169.254.1.1"])
    assert.equal(judgeCheckHostAnswer("check.example", [a])?.kind, "captive", a);
  assert.equal(judgeCheckHostAnswer("check.example", ["198.18.204.1", "2001:db8:18:204::1"]), null);
});
