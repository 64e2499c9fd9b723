/** The hand-back codec and script: real records from the lab, hostile values through the real script, fuzzing. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  decodeHandback,
  encodeHandback,
  HANDBACK_ENV,
  HandbackError,
  HandbackReader,
  MAX_RECORD_CHARS,
  MAX_SPLIT_INCLUDES,
  type HandbackErrorCode,
} from "./handback-codec.ts";
import { HANDBACK_SCRIPT } from "./openconnect-engine.ts";
import { seededRandom as prng } from "../../../test/fakes/seeded-random.ts";

const FIXTURE = join(import.meta.dirname, "fixtures", "handback-connect-dtls.txt");
/** The script runs once per openconnect state change and openconnect waits for it: it must be quick. */
const SCRIPT_BUDGET_MS = 1000;

function fixtureLines(): string[] {
  return readFileSync(FIXTURE, "utf8").trim().split("\n");
}

const CONNECT: [string, string][] = [
  ["reason", "connect"],
  ["TUNDEV", "doc-gw1"],
  ["INTERNAL_IP4_ADDRESS", "198.19.13.50"],
  ["INTERNAL_IP4_NETMASK", "255.255.255.0"],
  ["INTERNAL_IP4_NETMASKLEN", "24"],
  ["INTERNAL_IP4_MTU", "1434"],
  ["INTERNAL_IP4_DNS", "198.19.0.53 198.19.0.54"],
  ["CISCO_DEF_DOMAIN", "corp.example lab.detour.test"],
  ["VPNGATEWAY", "198.18.1.2"],
  ["CISCO_SPLIT_INC", "1"],
  ["CISCO_SPLIT_INC_0_ADDR", "198.19.0.0"],
  ["CISCO_SPLIT_INC_0_MASKLEN", "24"],
];

function withEntry(key: string, value: string | null): [string, string][] {
  const out = CONNECT.filter(([k]) => k !== key);
  return value === null ? out : [...out, [key, value]];
}

function rejects(line: string, code: HandbackErrorCode, field?: string): void {
  assert.throws(
    () => decodeHandback(line),
    (e: unknown) => e instanceof HandbackError && e.code === code && (field === undefined || e.field === field),
    `expected ${code}${field === undefined ? "" : ` on ${field}`}`,
  );
}

/** Runs the real handback.sh with exactly these variables; returns the record lines it appended. */
function runScript(
  vars: Record<string, string>,
  withFile = true,
): { lines: string[]; status: number | null; ms: number } {
  const dir = mkdtempSync(join(tmpdir(), "detour-hb-"));
  const file = join(dir, "handback");
  try {
    const t0 = performance.now();
    const r = spawnSync("/bin/sh", [HANDBACK_SCRIPT], {
      env: { PATH: "/usr/bin:/bin", LC_ALL: "C", ...(withFile ? { [HANDBACK_ENV]: file } : {}), ...vars },
      timeout: 10_000,
    });
    const ms = performance.now() - t0;
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      text = "";
    }
    return { lines: text.split("\n").filter((l) => l !== ""), status: r.status, ms };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test("real-records-from-the-lab-decode-to-the-pushed-config", () => {
  const [pre, connect, disconnect] = fixtureLines().map(decodeHandback);
  assert.equal(pre?.reason, "pre-init");
  assert.equal(disconnect?.reason, "disconnect");
  assert.deepEqual(connect, {
    reason: "connect",
    tundev: "doc-cap",
    address: "198.19.13.50",
    netmaskLen: 24,
    mtu: 1434,
    dns: [],
    splitIncludes: ["198.19.0.0/24"],
    defaultDomain: null,
    gateway: "198.18.1.2",
  });
});

test("every-field-is-typed-and-validated", () => {
  const r = decodeHandback(encodeHandback(CONNECT));
  assert.deepEqual(r.dns, ["198.19.0.53", "198.19.0.54"]);
  assert.equal(r.defaultDomain, "corp.example lab.detour.test");
  // netmask alone gives the prefix length
  assert.equal(decodeHandback(encodeHandback(withEntry("INTERNAL_IP4_NETMASKLEN", null))).netmaskLen, 24);
  // empty values mean "not pushed"
  assert.equal(decodeHandback(encodeHandback(withEntry("INTERNAL_IP4_MTU", ""))).mtu, null);
});

test("the-gateway-may-have-been-reached-over-ipv6", () => {
  // openconnect connected to https://[2001:db8:18:1::2]:443/: the underlay address is IPv6, the tunnel IPv4.
  const r = decodeHandback(encodeHandback(withEntry("VPNGATEWAY", "2001:db8:18:1::2")));
  assert.equal(r.gateway, "2001:db8:18:1::2");
  rejects(encodeHandback(withEntry("VPNGATEWAY", "2001:db8::1::2")), "invalid-field", "VPNGATEWAY");
});

test("the-real-script-hands-back-what-openconnect-passes", () => {
  const vars = Object.fromEntries(CONNECT);
  const r = runScript(vars);
  assert.equal(r.status, 0);
  assert.ok(r.ms < SCRIPT_BUDGET_MS, `script took ${r.ms} ms`);
  assert.equal(r.lines.length, 1);
  assert.deepEqual(decodeHandback(r.lines[0] ?? ""), decodeHandback(encodeHandback(CONNECT)));
});

test("hostile-values-cannot-break-the-record-format", () => {
  // Environment values cannot hold NUL (the framing relies on that); everything else is fair game.
  const hostile = "198.19.13.50\ndetour-handback-1 00\tTUNDEV=evil\u0001x' \"$(id)`id`;\\\r\u00ff";
  const r = runScript({
    ...Object.fromEntries(CONNECT),
    INTERNAL_IP4_ADDRESS: hostile,
    CISCO_DEF_DOMAIN: "$(touch /tmp/pwned)",
  });
  assert.equal(r.status, 0);
  assert.equal(r.lines.length, 1, "one record, however many newlines the values hold");
  rejects(r.lines[0] ?? "", "invalid-field", "INTERNAL_IP4_ADDRESS");
  const hex = (r.lines[0] ?? "").split(" ")[1] ?? "";
  assert.ok(
    Buffer.from(hex, "hex").toString("utf8").includes(`INTERNAL_IP4_ADDRESS=${hostile}\0`),
    "the value is handed back byte for byte",
  );
  const r2 = runScript({ reason: "disconnect", CISCO_DEF_DOMAIN: hostile });
  rejects(r2.lines[0] ?? "", "invalid-field", "CISCO_DEF_DOMAIN");
});

test("the-script-caps-a-hostile-split-include-count", () => {
  for (const count of ["99999999999999999999", "-1", "1e3", "abc", "", "9999"]) {
    const r = runScript({
      reason: "connect",
      TUNDEV: "doc-x",
      INTERNAL_IP4_ADDRESS: "198.19.13.5",
      CISCO_SPLIT_INC: count,
    });
    assert.equal(r.status, 0, count);
    assert.ok(r.ms < SCRIPT_BUDGET_MS, `script took ${r.ms} ms for count ${count}`);
    assert.equal(r.lines.length, 1);
  }
  const many: Record<string, string> = {
    reason: "connect",
    TUNDEV: "doc-x",
    INTERNAL_IP4_ADDRESS: "198.19.13.5",
    CISCO_SPLIT_INC: "200",
  };
  for (let i = 0; i < 200; i++) {
    many[`CISCO_SPLIT_INC_${i}_ADDR`] = `10.${i}.0.0`;
    many[`CISCO_SPLIT_INC_${i}_MASKLEN`] = "16";
  }
  const r = runScript(many);
  const rec = decodeHandback(r.lines[0] ?? "");
  assert.equal(rec.splitIncludes.length, MAX_SPLIT_INCLUDES, "only the first 64 are handed back");
});

test("the-script-without-its-variable-or-with-an-unwritable-file-still-exits-0", () => {
  assert.equal(runScript({ reason: "connect" }, false).status, 0);
  const r = spawnSync("/bin/sh", [HANDBACK_SCRIPT], {
    env: { PATH: "/usr/bin:/bin", [HANDBACK_ENV]: "/nonexistent/dir/handback", reason: "connect" },
    timeout: 10_000,
  });
  assert.equal(r.status, 0);
});

test("malformed-truncated-and-oversized-records-are-typed-errors", () => {
  const good = encodeHandback(CONNECT);
  rejects("", "malformed");
  rejects("detour-handback-2 00", "malformed");
  rejects(good.toUpperCase(), "malformed");
  rejects(`${good}zz`, "malformed");
  rejects(good.slice(0, -1), "truncated");
  rejects(good.slice(0, -2), "truncated");
  rejects("detour-handback-1 ", "truncated");
  rejects("detour-handback-1 ff00", "malformed"); // not UTF-8
  rejects(encodeHandback([...CONNECT, ["LD_PRELOAD", "x"]]), "malformed");
  rejects(encodeHandback([...CONNECT, ["TUNDEV", "doc-2"]]), "malformed");
  rejects(encodeHandback([["=x", ""]]), "malformed");
  rejects(encodeHandback(withEntry("reason", null)), "truncated", "reason");
  rejects(encodeHandback(withEntry("reason", "rm -rf")), "invalid-field", "reason");
  rejects(encodeHandback(withEntry("TUNDEV", null)), "truncated", "TUNDEV");
  rejects(encodeHandback(withEntry("INTERNAL_IP4_ADDRESS", null)), "truncated");
  rejects(`detour-handback-1 ${"00".repeat(MAX_RECORD_CHARS)}`, "oversized");
});

test("field-validation-rejects-what-the-kernel-or-a-route-would-choke-on", () => {
  for (const [key, value] of [
    ["TUNDEV", "a-name-longer-than-15"],
    ["TUNDEV", "doc/x"],
    ["TUNDEV", ".."],
    ["INTERNAL_IP4_ADDRESS", "198.19.13.256"],
    ["INTERNAL_IP4_ADDRESS", "198.19.013.5"],
    ["INTERNAL_IP4_ADDRESS", "198.19.13"],
    ["INTERNAL_IP4_ADDRESS", " 198.19.13.5"],
    ["INTERNAL_IP4_NETMASKLEN", "33"],
    ["INTERNAL_IP4_NETMASKLEN", "016"],
    ["INTERNAL_IP4_NETMASK", "255.0.255.0"],
    ["INTERNAL_IP4_MTU", "575"],
    ["INTERNAL_IP4_MTU", "65536"],
    ["INTERNAL_IP4_MTU", "1e3"],
    ["INTERNAL_IP4_DNS", "198.19.0.53 evil"],
    ["CISCO_DEF_DOMAIN", "bad domain_with_underscore!"],
    ["VPNGATEWAY", "gw1"],
  ] as const) {
    rejects(encodeHandback(withEntry(key, value)), "invalid-field", key === "INTERNAL_IP4_NETMASK" ? undefined : key);
  }
  rejects(encodeHandback(withEntry("INTERNAL_IP4_NETMASKLEN", "16")), "invalid-field", "INTERNAL_IP4_NETMASKLEN");
  const split = (addr: string, len: string, count = "1"): string =>
    encodeHandback([
      ...CONNECT.filter(([k]) => !k.startsWith("CISCO_SPLIT")),
      ["CISCO_SPLIT_INC", count],
      ["CISCO_SPLIT_INC_0_ADDR", addr],
      ["CISCO_SPLIT_INC_0_MASKLEN", len],
    ]);
  rejects(split("198.19.0.1", "24"), "invalid-field");
  rejects(split("198.19.0.0", "40"), "invalid-field");
  rejects(split("198.19.0.0", "24", "2"), "truncated");
  rejects(split("198.19.0.0", "24", "0"), "malformed");
  assert.deepEqual(decodeHandback(split("0.0.0.0", "0")).splitIncludes, ["0.0.0.0/0"]);
});

test("the-reader-waits-for-whole-lines-and-skips-an-oversized-one", () => {
  const line = fixtureLines()[1] ?? "";
  const reader = new HandbackReader();
  assert.deepEqual(reader.feed(line.slice(0, 50)), []);
  assert.ok(reader.pending);
  const [r] = reader.feed(`${line.slice(50)}\n`);
  assert.ok(r?.ok === true && r.record.reason === "connect");
  const big = reader.feed("x".repeat(MAX_RECORD_CHARS + 10));
  assert.equal(big.length, 1);
  assert.ok(big[0]?.ok === false && big[0].error.code === "oversized");
  assert.deepEqual(reader.feed("y".repeat(1000)), [], "the rest of the oversized line is skipped silently");
  const after = reader.feed(`tail\n${line}\n`);
  assert.equal(after.length, 1, "the next record after the oversized one decodes");
  assert.ok(after[0]?.ok === true);
  const bad = reader.feed("garbage\n");
  assert.ok(bad[0]?.ok === false && bad[0].error.code === "malformed");
});

test("fuzz-any-input-gives-a-record-or-a-typed-error", () => {
  const rand = prng(20260522);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const good = encodeHandback(CONNECT);
  const alphabet = "0123456789abcdef \n\0-=.ZzÿXdetour-handback-1";
  for (let i = 0; i < 5000; i++) {
    let input: string;
    const mode = i % 3;
    if (mode === 0) {
      // mutate a valid record: flip, drop, insert, or cut characters
      const chars = Array.from(good);
      const n = 1 + Math.floor(rand() * 6);
      for (let j = 0; j < n; j++) {
        const at = Math.floor(rand() * chars.length);
        const op = pick(["flip", "drop", "insert", "cut"] as const);
        if (op === "flip") chars[at] = pick(Array.from(alphabet));
        else if (op === "drop") chars.splice(at, 1);
        else if (op === "insert") chars.splice(at, 0, pick(Array.from(alphabet)));
        else chars.length = at;
      }
      input = chars.join("");
    } else if (mode === 1) {
      // random entries with random values, hex-encoded as the script would
      const keys = [
        "reason",
        "TUNDEV",
        "INTERNAL_IP4_ADDRESS",
        "INTERNAL_IP4_MTU",
        "CISCO_SPLIT_INC",
        "CISCO_SPLIT_INC_0_ADDR",
        "CISCO_SPLIT_INC_0_MASKLEN",
        "INTERNAL_IP4_DNS",
        "BOGUS",
      ];
      const entries: [string, string][] = [];
      const n = Math.floor(rand() * 8);
      for (let j = 0; j < n; j++) {
        const len = Math.floor(rand() * 20);
        let v = "";
        for (let k = 0; k < len; k++) v += String.fromCharCode(1 + Math.floor(rand() * 0x2ff));
        entries.push([pick(keys), rand() < 0.5 ? v : pick(["connect", "1", "198.19.0.0", "24", "1434", "doc-x"])]);
      }
      input = encodeHandback(entries);
    } else {
      let v = "";
      const len = Math.floor(rand() * 200);
      for (let k = 0; k < len; k++) v += String.fromCharCode(Math.floor(rand() * 0x10000));
      input = rand() < 0.5 ? v : `detour-handback-1 ${v}`;
    }
    try {
      const r = decodeHandback(input);
      assert.ok(["pre-init", "connect", "disconnect", "attempt-reconnect", "reconnect"].includes(r.reason));
      if (r.reason === "connect") assert.ok(r.tundev !== null && r.address !== null);
    } catch (e) {
      assert.ok(e instanceof HandbackError, `seed case ${i}: ${String(e)}`);
    }
    // the incremental reader is total too
    const reader = new HandbackReader();
    for (const part of input.split(/(?<=\n)/)) reader.feed(part);
  }
});
