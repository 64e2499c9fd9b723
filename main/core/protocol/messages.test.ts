/** The control protocol's codec: valid messages, malformed, truncated and oversized input, and systematic mutations. */
import { initialKillSwitchStatus } from "../killswitch-status.ts";
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ConnectionEvent, DrillResult, RaceRecord } from "../connection/types.ts";
import {
  COMMANDS,
  encodeLine,
  EVENT_TYPES,
  LineDecoder,
  MAX_LINE_LENGTH,
  parseClientMessage,
  parseDaemonMessage,
  type DaemonMessage,
  type StatusPayload,
} from "./messages.ts";

const RACE: RaceRecord = {
  id: "R1",
  reason: "connect",
  startedAt: 1000,
  endedAt: 1400,
  winner: { id: "L1", gateway: "gw1", kind: "wireguard" },
  legs: [
    {
      leg: { id: "L1", gateway: "gw1", kind: "wireguard" },
      outcome: "won",
      startedAt: 1000,
      endedAt: 1180,
      error: null,
    },
    {
      leg: { id: "L2", gateway: "gw2", kind: "ikev2" },
      outcome: "failed",
      startedAt: 1250,
      endedAt: 1300,
      error: { code: "unreachable", message: "no answer" },
    },
  ],
};

const STATUS: StatusPayload = {
  state: "connected",
  summary: "Connected to gw1 over WireGuard.",
  gateway: "gw1",
  protocol: "wireguard",
  activeLegId: "L1",
  standby: { gateway: "gw2", protocol: "ikev2", legId: "L4", lastReplyAt: 1390 },
  since: 1400,
  candidates: [
    {
      name: "gw1",
      hostname: "gw1.example.com",
      address: "198.18.1.2",
      priority: 10,
      region: "eu",
      kinds: ["wireguard"],
      sources: ["config"],
      probe: null,
    },
  ],
  lastRace: RACE,
  lastFailover: {
    from: { gateway: "gw2", kind: "ikev2" },
    to: { gateway: "gw1", kind: "wireguard" },
    reason: "no reply for 600 ms",
    via: "race",
    lastReplyAt: 500,
    detectedAt: 1100,
    restoredAt: 1400,
    detectedAfterMs: 600,
    restoredAfterMs: 900,
  },
  error: null,
  daemon: { version: "0.1.0", pid: 42, startedAt: 1, configPath: "/etc/detour/client.json" },
};

const DRILL: DrillResult = {
  id: "D1",
  startedAt: 2000,
  endedAt: 2900,
  slaMs: 1000,
  verdict: "pass",
  reason: "detected in 312 ms and restored in 355 ms, within SLA 1000 ms",
  from: { gateway: "gw1", kind: "wireguard" },
  to: { gateway: "gw2", kind: "wireguard" },
  blockedAt: 2050,
  liftedAt: 2880,
  detectedAt: 2362,
  detectedAfterMs: 312,
  restoredAt: 2405,
  restoredAfterMs: 355,
  probesSent: 18,
  probesLost: 17,
  failover: STATUS.lastFailover,
};

const EVENTS: ConnectionEvent[] = [
  { type: "state", at: 1, state: "racing", detail: "3 legs" },
  {
    type: "race-started",
    at: 2,
    raceId: "R1",
    reason: "connect",
    legs: [{ id: "L1", gateway: "gw1", kind: "wireguard" }],
  },
  { type: "leg", at: 3, raceId: "R1", record: RACE.legs[0] ?? assert.fail() },
  { type: "race-ended", at: 4, race: RACE },
  { type: "failover", at: 5, failover: STATUS.lastFailover ?? assert.fail() },
  { type: "health", at: 6, legId: "L1", verdict: { state: "dead", reason: "no reply", lastReplyAt: 5 } },
  { type: "drill", at: 7, drill: DRILL },
  {
    type: "kill-switch",
    at: 8,
    change: "restored",
    status: { ...initialKillSwitchStatus(), state: "in-force", mode: "blocking", ownGroup: 64950, restorations: 1 },
    detail: "table missing (ruleset changed); put back as in-force",
  },
  {
    type: "path-mtu",
    at: 9,
    legId: "L1",
    gateway: "gw1",
    protocol: "wireguard",
    ifname: "dt-l1",
    change: "lowered",
    from: 1440,
    to: 1328,
    detail: "packets of 1440 bytes vanish on the path to gw1 while 1328 cross",
  },
  {
    type: "crash-protection",
    at: 10,
    inForce: false,
    detail: "the connect intent could not be written (/var/lib/detour/owned.json: ENOSPC); retrying",
  },
];

function line(m: unknown): string {
  return JSON.stringify(m);
}

function failure(r: ReturnType<typeof parseClientMessage> | ReturnType<typeof parseDaemonMessage>): {
  code: string;
  id: number | null;
  message: string;
} {
  if (r.ok) assert.fail(`expected the line to be rejected, got ${JSON.stringify(r.message)}`);
  return r;
}

describe("client messages", () => {
  test("hello-and-every-command-decode", () => {
    assert.deepEqual(parseClientMessage(line({ type: "hello", protocol: 1, client: "detour-cli/0.1" })), {
      ok: true,
      message: { type: "hello", protocol: 1, client: "detour-cli/0.1" },
    });
    for (const command of COMMANDS) {
      const params = command === "set-gateway" ? { params: { gateway: "gw2" } } : {};
      const r = parseClientMessage(line({ type: "request", id: 7, command, ...params }));
      // A drill without params is a drill at the daemon's default SLA.
      const expected = command === "drill" ? { params: {} } : params;
      assert.deepEqual(r, { ok: true, message: { type: "request", id: 7, command, ...expected } });
    }
  });

  test("a-drill-may-name-its-sla-and-nothing-else-takes-params", () => {
    assert.deepEqual(parseClientMessage(line({ type: "request", id: 2, command: "drill", params: { slaMs: 3000 } })), {
      ok: true,
      message: { type: "request", id: 2, command: "drill", params: { slaMs: 3000 } },
    });
    const cases: [unknown, RegExp][] = [
      [{ type: "request", id: 2, command: "drill", params: { slaMs: 0 } }, /^params\.slaMs: /],
      [{ type: "request", id: 2, command: "drill", params: { slaMs: 10_001 } }, /^params\.slaMs: /],
      [{ type: "request", id: 2, command: "drill", params: { slaMs: "1s" } }, /^params\.slaMs: /],
      [{ type: "request", id: 2, command: "drill", params: { sla: 5 } }, /Unrecognized key: "sla"/],
      [{ type: "request", id: 2, command: "status", params: {} }, /status takes no parameters/],
    ];
    for (const [value, re] of cases) {
      const f = failure(parseClientMessage(line(value)));
      assert.equal(f.code, "bad-request", JSON.stringify(value));
      assert.match(f.message, re, JSON.stringify(value));
      assert.equal(f.id, 2);
    }
  });

  test("set-gateway-takes-a-name-or-null-and-other-commands-take-no-params", () => {
    assert.deepEqual(
      parseClientMessage(line({ type: "request", id: 1, command: "set-gateway", params: { gateway: null } })),
      {
        ok: true,
        message: { type: "request", id: 1, command: "set-gateway", params: { gateway: null } },
      },
    );
    const missing = failure(parseClientMessage(line({ type: "request", id: 2, command: "set-gateway" })));
    assert.equal(missing.id, 2);
    assert.match(missing.message, /^params: /);
    assert.match(
      failure(parseClientMessage(line({ type: "request", id: 3, command: "set-gateway", params: { gateway: "" } })))
        .message,
      /^params\.gateway: /,
    );
    assert.match(
      failure(
        parseClientMessage(
          line({ type: "request", id: 4, command: "set-gateway", params: { gateway: "gw1", extra: 1 } }),
        ),
      ).message,
      /^params: /,
    );
    assert.match(
      failure(parseClientMessage(line({ type: "request", id: 5, command: "status", params: {} }))).message,
      /status takes no parameters/,
    );
  });

  test("unknown-command-is-its-own-code-and-keeps-the-id", () => {
    const f = failure(parseClientMessage(line({ type: "request", id: 9, command: "reboot" })));
    assert.equal(f.code, "unknown-command");
    assert.equal(f.id, 9);
    assert.match(f.message, /unknown command "reboot"/);
  });

  test("malformed-requests-name-the-bad-field", () => {
    const cases: [unknown, RegExp, number | null][] = [
      [{ type: "request", id: 3, command: "status", extra: 1 }, /Unrecognized key: "extra"/, 3],
      [{ type: "request", id: -1, command: "status" }, /^id: /, null],
      [{ type: "request", id: 1.5, command: "status" }, /^id: /, null],
      [{ type: "request", command: "status" }, /^id: /, null],
      [{ type: "request", id: 4, command: 12 }, /^command: /, 4],
      [{ type: "hello", protocol: "1", client: "x" }, /^protocol: /, null],
      [{ type: "hello", protocol: 1, client: "" }, /^client: /, null],
      [{ type: "hello", protocol: 1, client: "x".repeat(200) }, /^client: /, null],
      [{ type: "bye" }, /^type: expected one of hello, request; got "bye"/, null],
      [{ id: 5 }, /^type: expected one of hello, request; got nothing/, 5],
      [[1, 2], /expected a JSON object, got an array/, null],
      ["status", /expected a JSON object, got "status"/, null],
      [null, /expected a JSON object, got null/, null],
    ];
    for (const [value, re, id] of cases) {
      const f = failure(parseClientMessage(line(value)));
      assert.equal(f.code, "bad-request", JSON.stringify(value));
      assert.match(f.message, re, JSON.stringify(value));
      assert.equal(f.id, id, JSON.stringify(value));
    }
  });

  test("truncated-lines-are-bad-json-at-every-cut", () => {
    const full = line({ type: "request", id: 12, command: "subscribe" });
    for (let cut = 0; cut < full.length; cut++) {
      const f = failure(parseClientMessage(full.slice(0, cut)));
      assert.equal(f.code, "bad-request");
      assert.ok(f.message.length > 0);
    }
  });

  test("prototype-keys-are-not-message-types", () => {
    for (const t of ["__proto__", "constructor", "toString"]) {
      assert.equal(failure(parseClientMessage(`{"type":"${t}","id":1}`)).code, "bad-request");
    }
    assert.equal(
      failure(parseClientMessage('{"__proto__":{"type":"hello"},"protocol":1,"client":"x"}')).code,
      "bad-request",
    );
  });
});

describe("daemon messages", () => {
  test("each-command-result-and-every-event-type-decode", () => {
    const results: DaemonMessage[] = [
      { type: "hello", protocol: 1, daemon: "detourd/0.1.0" },
      { type: "response", id: 1, command: "status", result: STATUS },
      { type: "response", id: 2, command: "subscribe", result: STATUS },
      { type: "response", id: 3, command: "connect", result: null },
      {
        type: "response",
        id: 3,
        command: "connect",
        result: { killSwitch: { ...initialKillSwitchStatus(), state: "fallback", lastError: "nft: exit 1" } },
      },
      { type: "response", id: 4, command: "disconnect", result: null },
      {
        type: "response",
        id: 5,
        command: "gateways",
        result: { candidates: STATUS.candidates.map((c, i) => ({ ...c, rank: i + 1 })) },
      },
      { type: "response", id: 6, command: "race", result: RACE },
      { type: "response", id: 7, command: "race", result: null },
      { type: "response", id: 7, command: "status", result: { ...STATUS, lastDrill: DRILL } },
      { type: "response", id: 7, command: "drill", result: DRILL },
      {
        type: "response",
        id: 7,
        command: "drill",
        result: {
          ...DRILL,
          verdict: "refused",
          reason: "detourd is not connected",
          blockedAt: null,
          to: null,
          failover: null,
        },
      },
      { type: "error", id: 8, code: "internal", message: "status failed: boom" },
      { type: "error", id: null, code: "unsupported-protocol", message: "this daemon speaks protocol 1" },
      ...EVENTS.map((event): DaemonMessage => ({ type: "event", event })),
    ];
    assert.deepEqual(new Set(EVENTS.map((e) => e.type)), new Set(EVENT_TYPES));
    for (const m of results) assert.deepEqual(parseDaemonMessage(line(m)), { ok: true, message: m });
  });

  test("payload-fields-a-newer-daemon-adds-pass-through", () => {
    const r = parseDaemonMessage(
      line({
        type: "response",
        id: 1,
        command: "status",
        result: { ...STATUS, uptimeNote: "new", daemon: { ...STATUS.daemon, build: "x" } },
      }),
    );
    assert.ok(r.ok && r.message.type === "response" && r.message.command === "status");
    assert.equal((r.message.result as unknown as Record<string, unknown>).uptimeNote, "new");
  });

  test("a-malformed-result-is-rejected-with-its-path-and-id", () => {
    const badLeg = { ...RACE, legs: [{ ...RACE.legs[0], outcome: "exploded" }] };
    const cases: [unknown, RegExp][] = [
      [{ ...STATUS, state: "sleeping" }, /^result\.state: /],
      [{ ...STATUS, since: "yesterday" }, /^result\.since: /],
      [{ ...STATUS, lastRace: badLeg }, /^result\.lastRace\.legs\[0\]\.outcome: /],
      [
        { ...STATUS, lastFailover: { ...STATUS.lastFailover, detectedAfterMs: null } },
        /^result\.lastFailover\.detectedAfterMs: /,
      ],
      [
        { ...STATUS, candidates: [{ name: "gw1" }] },
        /^result\.candidates\[0\]\.hostname: expected string in a candidate, got nothing/,
      ],
      [{ ...STATUS, daemon: undefined }, /^result\.daemon: /],
    ];
    for (const [result, re] of cases) {
      const f = failure(parseDaemonMessage(line({ type: "response", id: 31, command: "status", result })));
      assert.match(f.message, re);
      assert.equal(f.id, 31);
    }
    assert.match(
      failure(parseDaemonMessage(line({ type: "response", id: 1, command: "connect", result: {} }))).message,
      /^result\.killSwitch: /,
    );
  });

  test("malformed-events-and-errors-are-rejected", () => {
    assert.match(
      failure(parseDaemonMessage(line({ type: "event", event: { type: "teleport", at: 1 } }))).message,
      /^event\.type: /,
    );
    assert.match(
      failure(
        parseDaemonMessage(line({ type: "event", event: { type: "state", at: "now", state: "racing", detail: "" } })),
      ).message,
      /^event\.at: /,
    );
    assert.match(
      failure(parseDaemonMessage(line({ type: "event", event: { type: "health", at: 1, legId: "L1", verdict: 5 } })))
        .message,
      /^event\.verdict: expected a health verdict/,
    );
    assert.match(
      failure(parseDaemonMessage(line({ type: "error", id: 1, code: "kaput", message: "x" }))).message,
      /^code: /,
    );
    assert.match(
      failure(parseDaemonMessage(line({ type: "response", id: 1, command: "fly", result: null }))).message,
      /^command: /,
    );
  });
});

describe("framing", () => {
  test("lines-split-anywhere-reassemble", () => {
    const text = `${line({ a: 1 })}\n${line({ b: "é—ü" })}\r\n\n${line({ c: 3 })}\n`;
    for (let cut = 0; cut <= text.length; cut++) {
      const d = new LineDecoder();
      const first = d.push(text.slice(0, cut));
      const second = d.push(text.slice(cut));
      assert.deepEqual([...first.lines, ...second.lines], ['{"a":1}', '{"b":"é—ü"}', '{"c":3}']);
      assert.equal(d.buffered, 0);
    }
  });

  test("an-oversized-line-overflows-without-being-buffered-and-the-decoder-stays-spent", () => {
    const d = new LineDecoder(100);
    assert.deepEqual(d.push("x".repeat(60)), { lines: [], overflow: false });
    assert.equal(d.buffered, 60);
    assert.deepEqual(d.push("y".repeat(41)), { lines: [], overflow: true });
    assert.equal(d.buffered, 0);
    assert.deepEqual(d.push('{"ok":true}\n'), { lines: [], overflow: true });
  });

  test("complete-lines-before-an-oversized-one-are-still-delivered", () => {
    const d = new LineDecoder(10);
    assert.deepEqual(d.push(`abc\n${"z".repeat(11)}\n`), { lines: ["abc"], overflow: true });
    const exact = new LineDecoder(10);
    assert.deepEqual(exact.push(`${"z".repeat(10)}\n`), { lines: ["z".repeat(10)], overflow: false });
  });

  test("a-megabyte-stream-without-newline-overflows-at-the-limit", () => {
    const d = new LineDecoder();
    const chunk = "a".repeat(65_536);
    let pushed = 0;
    let overflow = false;
    while (!overflow && pushed < 4 * MAX_LINE_LENGTH) {
      overflow = d.push(chunk).overflow;
      pushed += chunk.length;
    }
    assert.ok(overflow);
    assert.ok(pushed <= MAX_LINE_LENGTH + chunk.length, `overflowed only after ${pushed} characters`);
  });

  test("encode-refuses-oversized-and-unserialisable-messages", () => {
    const ok = encodeLine({ type: "request", id: 1, command: "status" });
    assert.deepEqual(ok, { ok: true, line: '{"type":"request","id":1,"command":"status"}\n' });
    const big = encodeLine({ type: "error", id: 1, code: "internal", message: "m".repeat(MAX_LINE_LENGTH) });
    assert.ok(!big.ok && /line limit/.test(big.reason));
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    const bad = encodeLine({ type: "response", id: 1, command: "race", result: cyclic as unknown as RaceRecord });
    assert.ok(!bad.ok && /not serialisable/.test(bad.reason));
    const newline = encodeLine({ type: "error", id: 1, code: "internal", message: "two\nlines" });
    assert.ok(
      newline.ok && newline.line.indexOf("\n") === newline.line.length - 1,
      "a newline inside a message must stay escaped",
    );
  });
});

describe("fuzz", () => {
  // Systematic mutations rather than random ones: deterministic, and every position of every sample is hit.
  const SAMPLES = [
    line({ type: "hello", protocol: 1, client: "detour-cli/0.1" }),
    line({ type: "request", id: 3, command: "subscribe" }),
    line({ type: "response", id: 1, command: "status", result: STATUS }),
    line({ type: "event", event: EVENTS[3] }),
    line({ type: "error", id: null, code: "busy", message: "later" }),
  ];
  const INSERTS = [
    '"',
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\\",
    "0",
    "-",
    "null",
    "1e999",
    "\u0000",
    "\ud800",
    "é",
    '"__proto__"',
  ];

  function check(text: string): void {
    for (const parse of [parseClientMessage, parseDaemonMessage]) {
      const r = parse(text);
      if (!r.ok) {
        assert.ok((["bad-request", "unknown-command"] as string[]).includes(r.code), r.code);
        assert.ok(r.message.length > 0 && r.message.length <= 1000, `explanation of ${r.message.length} characters`);
        assert.ok(r.id === null || (Number.isInteger(r.id) && r.id >= 0));
      }
    }
  }

  test("every-deletion-insertion-and-replacement-gives-a-message-or-a-typed-error", () => {
    let cases = 0;
    for (const s of SAMPLES) {
      const step = Math.max(1, Math.floor(s.length / 400)); // the status sample is long: sample its positions
      for (let i = 0; i < s.length; i += step) {
        check(s.slice(0, i) + s.slice(i + 1));
        for (const ins of INSERTS) {
          check(s.slice(0, i) + ins + s.slice(i));
          check(s.slice(0, i) + ins + s.slice(i + 1));
        }
        cases += 1 + 2 * INSERTS.length;
      }
    }
    assert.ok(cases > 10_000, `only ${cases} cases`);
  });

  test("json-values-of-every-shape-give-a-typed-error", () => {
    const values: unknown[] = [
      0,
      -1,
      1e308,
      true,
      "",
      "x",
      [],
      {},
      { type: null },
      { type: 1 },
      { type: {} },
      { type: "request", id: 2 ** 53 },
      { type: "request", id: 1, command: "status", result: 1 },
      { type: "response" },
      { type: "event" },
      { type: "event", event: [] },
    ];
    for (const v of values) check(JSON.stringify(v));
  });
});

describe("managed policy", () => {
  test("policy-events-prefs-and-policy-status-round-trip", () => {
    const ev = {
      type: "policy",
      at: 1,
      change: "rejected",
      source: "file:/etc/detour/policy.json",
      code: "downgrade",
      field: "version",
      message: "version: 1 is not newer",
    };
    const d = parseDaemonMessage(JSON.stringify({ type: "event", event: ev }));
    assert.ok(d.ok && d.message.type === "event" && d.message.event.type === "policy");
    assert.ok(!parseDaemonMessage(JSON.stringify({ type: "event", event: { ...ev, code: "sunspots" } })).ok);
    const status = {
      version: 2,
      organisation: "Example",
      source: "file:x",
      keyId: "0123456789abcdef",
      issuedAt: "2025-01-01T00:00:00Z",
      expiresAt: "2026-01-01T00:00:00Z",
      appliedAt: 5,
      locked: ["allowedGateways"],
      lastRejection: null,
    };
    assert.ok(parseDaemonMessage(JSON.stringify({ type: "response", id: 1, command: "policy", result: status })).ok);
    assert.ok(
      !parseDaemonMessage(
        JSON.stringify({ type: "response", id: 1, command: "policy", result: { ...status, locked: ["colour"] } }),
      ).ok,
    );
    const req = parseClientMessage(
      JSON.stringify({ type: "request", id: 3, command: "prefs-set", args: { key: "autoConnect", value: "true" } }),
    );
    assert.ok(req.ok && req.message.type === "request" && req.message.args?.key === "autoConnect");
    assert.ok(
      parseDaemonMessage(
        JSON.stringify({
          type: "error",
          id: 3,
          code: "refused",
          message: "standby.mode is managed by Example's policy",
        }),
      ).ok,
    );
  });
});
