/** charon's words, as seen in the lab, mapped to the error a user sees. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { classifyIkeFailure } from "./ike-failure.ts";

const PIN = "gw2.lab.detour.test";

function verdict(lines: string[], errmsg = "", deadlineHit = false): string {
  return classifyIkeFailure({ errmsg, lines, deadlineHit, remoteId: PIN }).code;
}

test("refused-authentication-is-auth-failed", () => {
  // what gw1 answers when pinned to gw2: it finds no config for IDr gw2 and refuses before proving anything
  const lines = [
    "[ENC] parsed IKE_AUTH response 1 [ N(AUTH_FAILED) ]",
    "[IKE] received AUTHENTICATION_FAILED notify error",
  ];
  assert.equal(verdict(lines, "establishing CHILD_SA 'detour' failed"), "auth-failed");
  assert.match(
    classifyIkeFailure({ errmsg: "", lines, deadlineHit: false, remoteId: PIN }).message,
    /cannot tell these apart/,
  );
});

test("a-gateway-that-proves-another-identity-is-identity-mismatch", () => {
  assert.equal(
    verdict(["[CFG] constraint check failed: identity 'gw2.lab.detour.test' required"]),
    "identity-mismatch",
  );
  assert.equal(
    verdict(["[IKE] no shared key found for 'client@lab.detour.test' - 'evil.example'"]),
    "identity-mismatch",
  );
  assert.equal(
    verdict([`[IKE] no shared key found for 'client@lab.detour.test' - '${PIN}'`]),
    "bad-config",
    "no key for the pinned pair is our config",
  );
});

test("identity-beats-auth-when-both-appear", () => {
  const lines = [
    "[CFG] constraint check failed: identity 'gw2.lab.detour.test' required",
    "[IKE] received AUTHENTICATION_FAILED notify error",
  ];
  assert.equal(verdict(lines), "identity-mismatch");
});

test("a-silent-gateway-is-unreachable-once-charon-gives-up", () => {
  const lines = [
    "[IKE] retransmit 3 of request with message ID 0",
    "[IKE] giving up after 3 retransmits",
    "[IKE] establishing IKE_SA failed, peer not responding",
  ];
  assert.equal(verdict(lines, "establishing CHILD_SA 'detour' failed"), "unreachable");
});

test("a-silent-gateway-at-the-deadline-is-timeout", () => {
  const lines = [
    "[NET] sending packet: from 198.18.0.2[5000] to 198.18.1.2[500] (240 bytes)",
    "[IKE] retransmit 1 of request with message ID 0",
  ];
  const f = classifyIkeFailure({ errmsg: "", lines, deadlineHit: true, remoteId: PIN });
  assert.equal(f.code, "timeout");
  assert.match(f.message, /no answer/);
  assert.equal(verdict([], "CHILD_SA 'detour' not established after 4000ms"), "timeout");
});

test("a-refused-offer-is-bad-config", () => {
  assert.equal(verdict(["[IKE] received NO_PROPOSAL_CHOSEN notify error"]), "bad-config");
  assert.equal(verdict(["[IKE] received TS_UNACCEPTABLE notify error"]), "bad-config");
});

test("anything-else-says-charon-failed-and-keeps-its-words", () => {
  const f = classifyIkeFailure({
    errmsg: "something odd",
    lines: ["[IKE] odd line"],
    deadlineHit: false,
    remoteId: PIN,
  });
  assert.equal(f.code, "engine-crashed");
  assert.match(f.message, /something odd/);
  assert.deepEqual(f.evidence, ["[IKE] odd line", "something odd"]);
});
