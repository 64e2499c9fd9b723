/** The openconnect output codec against lines captured from openconnect 9.01 in the lab, hostile lines and fuzzing. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { MAX_LINE_CHARS, MAX_OTHER_CHARS, parseLine, REDACTED_TEXT, type OcEvent } from "./output-parser.ts";
import { seededRandom as prng } from "../../../test/fakes/seeded-random.ts";

function fixture(name: string): string[] {
  return readFileSync(join(import.meta.dirname, "fixtures", `${name}.log`), "utf8")
    .split("\n")
    .filter((l) => l !== "");
}

function kinds(name: string): OcEvent["kind"][] {
  return fixture(name)
    .map((l) => parseLine(l).event.kind)
    .filter((k) => k !== "other" && k !== "redacted");
}

/** What each captured scenario must read as; the driver's decisions hang on these sequences. */
const SCENARIOS: Record<string, OcEvent["kind"][]> = {
  "connect-dtls": [
    "connecting",
    "tcp-connected",
    "tls-connected",
    "cstp-connected",
    "dtls-initialised",
    "dtls-established",
    "configured",
    "user-cancelled",
  ],
  "connect-tls": ["connecting", "tcp-connected", "tls-connected", "cstp-connected", "configured", "user-cancelled"],
  "cookie-connect": [
    "connecting",
    "tcp-connected",
    "tls-connected",
    "cstp-connected",
    "dtls-initialised",
    "dtls-established",
    "configured",
    "user-cancelled",
  ],
  "cookie-rejected": ["cookie-rejected"],
  "dtls-then-cstp-dead-peer": [
    "connecting",
    "tcp-connected",
    "tls-connected",
    "cstp-connected",
    "dtls-initialised",
    "dtls-established",
    "configured",
    "dtls-dead-peer",
    "dtls-timed-out",
    "dtls-handshake-failed",
    "cstp-dead-peer",
    "tls-connected",
    "cstp-connected",
    "user-cancelled",
  ],
  "gateway-killed": [
    "connecting",
    "tcp-connected",
    "tls-connected",
    "cstp-connected",
    "dtls-initialised",
    "dtls-established",
    "configured",
    "cstp-read-error",
    "reconnect-failed",
    "reconnect-wait",
    "connect-cancelled",
    "reconnect-failed",
    "reconnect-wait",
    "reconnect-gave-up",
    "user-cancelled",
  ],
  "server-disconnect": [
    "connecting",
    "tcp-connected",
    "tls-connected",
    "cstp-connected",
    "dtls-initialised",
    "dtls-established",
    "configured",
    "server-disconnect",
    "session-terminated",
  ],
  "tls-blocked": ["connecting", "connect-cancelled", "connect-failed", "auth-incomplete"],
  "tls-rejected": ["connecting", "connect-refused", "auth-incomplete"],
  "udp-dropped": [
    "connecting",
    "tcp-connected",
    "tls-connected",
    "cstp-connected",
    "dtls-initialised",
    "dtls-timed-out",
    "dtls-handshake-failed",
    "configured",
    "user-cancelled",
  ],
  "wrong-password": [
    "connecting",
    "tcp-connected",
    "tls-connected",
    "login-failed",
    "input-required",
    "auth-incomplete",
  ],
  "wrong-pin": ["connecting", "tcp-connected", "pin-mismatch", "certificate-error", "auth-incomplete"],
};

test("captured-scenarios-read-as-the-events-the-driver-acts-on", () => {
  for (const [name, expected] of Object.entries(SCENARIOS)) assert.deepEqual(kinds(name), expected, name);
});

test("lines-carry-their-values", () => {
  const find = <K extends OcEvent["kind"]>(name: string, kind: K): Extract<OcEvent, { kind: K }> => {
    const e = fixture(name)
      .map((l) => parseLine(l).event)
      .find((x) => x.kind === kind);
    assert.ok(e !== undefined, `${kind} in ${name}`);
    return e as Extract<OcEvent, { kind: K }>;
  };
  assert.deepEqual(find("connect-dtls", "cstp-connected"), { kind: "cstp-connected", dpdSec: 5, keepaliveSec: 10 });
  assert.deepEqual(find("connect-dtls", "configured"), {
    kind: "configured",
    address: "198.19.13.50",
    dtls: "connected",
  });
  assert.deepEqual(find("connect-tls", "configured"), {
    kind: "configured",
    address: "198.19.13.50",
    dtls: "disabled",
  });
  assert.deepEqual(find("udp-dropped", "configured"), {
    kind: "configured",
    address: "198.19.13.50",
    dtls: "in-progress",
  });
  assert.equal(find("connect-dtls", "dtls-established").ciphersuite, "(DTLS1.2)-(PSK)-(AES-256-GCM)");
  assert.equal(find("wrong-pin", "pin-mismatch").presented, "pin-sha256:gh3pvWmSY1dQQd63md0KMR55ia7Uw+LMENE8F6J+cvU=");
  assert.equal(find("tls-rejected", "connect-refused").target, "198.18.1.2:443");
  assert.deepEqual(find("gateway-killed", "reconnect-wait"), {
    kind: "reconnect-wait",
    sleepSec: 10,
    remainingSec: 300,
  });
  assert.equal(find("udp-dropped", "dtls-handshake-failed").reason, "Resource temporarily unavailable, try again.");
  // the state openconnect prints when DTLS finished its handshake just before the tun was configured
  assert.deepEqual(
    parseLine("[2026-11-22 04:30:01] Configured as 198.19.13.50, with SSL connected and DTLS established").event,
    { kind: "configured", address: "198.19.13.50", dtls: "established" },
  );
  assert.deepEqual(parseLine("Configured as 198.19.13.50, with SSL + LZ4 connected and DTLS + LZ4 connected").event, {
    kind: "configured",
    address: "198.19.13.50",
    dtls: "connected",
  });
  const stamped = parseLine("[2026-11-22 04:14:37] DTLS Dead Peer Detection detected dead peer!");
  assert.equal(stamped.stamp, "2026-11-22 04:14:37");
  assert.equal(parseLine("Failed to complete authentication").stamp, null);
  assert.deepEqual(parseLine("[2026-11-22 04:14:37] Attempt new DTLS connection").event, { kind: "dtls-retry" });
  assert.deepEqual(parseLine("[2026-11-22 04:14:37] CSTP Dead Peer Detection detected dead peer!").event, {
    kind: "cstp-dead-peer",
  });
  assert.deepEqual(parseLine("Session terminated by server; reason: idle timeout").event, {
    kind: "session-terminated",
    reason: "idle timeout",
  });
});

const SECRET_LINES = [
  "[2026-11-22 04:14:37] Set-Cookie: webvpn=3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C@1234@ABCDEF; Secure; HttpOnly",
  "[2026-11-22 04:14:37] Set-Cookie: webvpncontext=AO16OPsJdO9UYYkX8Q3XQmGe2AXi5E9M22QWqwWCs8I=; Max-Age=300",
  "[2026-11-22 04:14:37] Cookie: webvpn=3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C",
  "COOKIE='openconnect_strapkey=MHcCAQEEIKl3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C; webvpn=3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C'",
  "[2026-11-22 04:14:37] X-DTLS-Master-Secret: 3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C",
  "[2026-11-22 04:14:37] X-DTLS-Session-ID: 3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C",
  "[2026-11-22 04:14:37] X-CSTP-Address: 198.19.13.50",
  "[2026-11-22 04:14:37] Ingested STRAP public key MFkw3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C==",
  "Password: 3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C",
  "[2026-11-22 04:14:37] Authorization: Bearer 3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C",
  "[2026-11-22 04:14:37] DTLS handshake failed: token=3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C",
  "[2026-11-22 04:14:37] Failed to connect to host 198.18.1.2: cookie 3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C",
];

test("no-cookie-password-or-key-reaches-an-event-or-its-text", () => {
  for (const line of SECRET_LINES) {
    const p = parseLine(line);
    assert.equal(p.event.kind, "redacted", line);
    assert.equal(p.text, REDACTED_TEXT);
    assert.ok(!JSON.stringify(p).includes("3F2A9B7C1D0E4F5A6B7C8D9E0F1A2B3C"), line);
  }
  // the captured runs at -v and -vvv printed context cookies; none of them survives parsing
  for (const name of Object.keys(SCENARIOS)) {
    for (const line of fixture(name)) {
      const out = JSON.stringify(parseLine(line));
      assert.ok(!/FIXTURE|webvpn|sh:0000|STRAP/i.test(out), `${name}: ${out}`);
    }
  }
  // the one fixed line that names cookies is kept: it is the auth-failed verdict of a cookie start
  assert.deepEqual(parseLine("[2026-11-22 04:17:37] Cookie was rejected by server; exiting.").event, {
    kind: "cookie-rejected",
  });
});

test("hostile-text-cannot-impersonate-a-state-line", () => {
  for (const line of [
    "[2026-11-22 04:14:37] Banner: CSTP Dead Peer Detection detected dead peer!",
    "[2026-11-22 04:14:37] Configured as 198.19.13.50, with SSL connected and DTLS connected and more",
    "Login failed. Please try again",
    "xLogin failed.",
    "[2026-11-22 04:14:37] [2026-11-22 04:14:37] CSTP connected. DPD 5, Keepalive 10",
    "[2026-11-22 04:14:37] CSTP connected. DPD 5, Keepalive 10\u0000",
    "None of the 1 fingerprint(s) specified via --servercert match server's certificate: evil$(id)",
  ]) {
    assert.equal(parseLine(line).event.kind, "other", line);
  }
});

test("malformed-and-oversized-lines-are-cut-and-cleaned", () => {
  const long = parseLine(`[2026-11-22 04:14:37] ${"A".repeat(1_000_000)}`);
  assert.equal(long.event.kind, "other");
  assert.ok(long.text.length <= MAX_OTHER_CHARS);
  const longKnown = parseLine(`DTLS handshake failed: ${"x".repeat(MAX_LINE_CHARS)}`);
  assert.equal(longKnown.event.kind, "other", "a reason longer than any real one is not trusted");
  const ctl = parseLine("\u001b[31mred\u0007\r");
  assert.deepEqual(ctl.event, { kind: "other", text: "?[31mred?" });
  assert.deepEqual(parseLine("").event, { kind: "other", text: "" });
  assert.equal(parseLine("[2026-11-22 04:14:37]").stamp, null);
});

test("fuzz-any-line-parses-to-a-bounded-clean-event", () => {
  const rand = prng(90101);
  const real = Object.keys(SCENARIOS).flatMap(fixture);
  for (let i = 0; i < 20_000; i++) {
    let line: string;
    if (i % 2 === 0) {
      const chars = Array.from(real[Math.floor(rand() * real.length)] ?? "");
      const n = 1 + Math.floor(rand() * 4);
      for (let j = 0; j < n; j++) {
        const at = Math.floor(rand() * (chars.length + 1));
        const c = String.fromCharCode(Math.floor(rand() * 0x3000));
        if (rand() < 0.5) chars.splice(at, 1, c);
        else chars.splice(at, 0, c);
      }
      line = chars.join("");
    } else {
      line = "";
      const len = Math.floor(rand() * 300);
      for (let k = 0; k < len; k++) line += String.fromCharCode(Math.floor(rand() * 0x10000));
    }
    const p = parseLine(line);
    assert.ok(p.text.length <= MAX_OTHER_CHARS);
    for (const v of [p.text, ...(Object.values(p.event) as unknown[])]) {
      if (typeof v !== "string") continue;
      // eslint-disable-next-line no-control-regex
      assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(v), `control characters in ${JSON.stringify(p)}`);
    }
    if (p.event.kind === "other") assert.equal(p.event.text, p.text);
  }
});
