/** The `openconnect --authenticate` output codec: the real output's shape, quoting, and incomplete or forged output. */
import assert from "node:assert/strict";
import { inspect } from "node:util";
import { test } from "node:test";
import { parseAuthOutput } from "./auth-output.ts";

const PIN = "pin-sha256:gh3pvWmSY1dQQd63md0KMR55ia7Uw+LMENE8F6J+cvU=";
/** The shape openconnect 9.01 printed in the lab, with a made-up cookie. */
const REAL = `COOKIE='openconnect_strapkey=MHcCAQEEIFAKE; webvpn=FAKE@1@ABC'
HOST='198.18.1.2'
CONNECT_URL='https://198.18.1.2/'
FINGERPRINT='${PIN}'
RESOLVE='198.18.1.2:198.18.1.2'
`;

test("real-authenticate-output-gives-a-session-with-a-redacted-cookie", () => {
  const s = parseAuthOutput(REAL);
  assert.ok(s !== null);
  assert.equal(s.cookie.reveal(), "openconnect_strapkey=MHcCAQEEIFAKE; webvpn=FAKE@1@ABC");
  assert.equal(s.fingerprint, PIN);
  assert.equal(s.connectUrl, "https://198.18.1.2/");
  assert.equal(s.resolve, "198.18.1.2:198.18.1.2");
  const shown = `${JSON.stringify(s)} ${inspect(s)} ${String(s.cookie)}`;
  assert.ok(!shown.includes("FAKE"), shown);
});

test("shell-quoting-is-undone", () => {
  const s = parseAuthOutput(REAL.replace("webvpn=FAKE", "webvpn=it'\\''s"));
  assert.equal(s?.cookie.reveal(), "openconnect_strapkey=MHcCAQEEIFAKE; webvpn=it's@1@ABC");
});

test("incomplete-or-odd-output-is-refused", () => {
  assert.equal(parseAuthOutput(""), null);
  assert.equal(parseAuthOutput(REAL.replace(/^COOKIE=.*\n/m, "")), null);
  assert.equal(parseAuthOutput(REAL.replace(PIN, "not-a-pin")), null);
  assert.equal(parseAuthOutput(REAL.replace("https://198.18.1.2/", "http://198.18.1.2/")), null);
  assert.equal(parseAuthOutput(REAL.replace("RESOLVE='198.18.1.2:198.18.1.2'", "RESOLVE='x:evil host'")), null);
  assert.equal(parseAuthOutput(REAL.replace("COOKIE='openconnect", "COOKIE=openconnect")), null);
  // the first value of a key wins, so later text cannot replace what openconnect printed first
  assert.equal(parseAuthOutput(`${REAL}CONNECT_URL='https://evil.example/'\n`)?.connectUrl, "https://198.18.1.2/");
});
