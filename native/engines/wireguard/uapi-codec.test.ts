/** The UAPI codec against real-shaped dumps, broken replies and a few thousand random and mutated inputs. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { inspect } from "node:util";
import { describe, test } from "node:test";
import { Secret } from "../../../main/core/secret.ts";
import { seededRandom as prng } from "../../../test/fakes/seeded-random.ts";
import {
  MAX_REPLY_BYTES,
  UapiError,
  encodeEndpointUpdate,
  encodeGet,
  encodeSet,
  keyFromHex,
  keyToHex,
  lastHandshakeMs,
  parseGetReply,
  parseSetReply,
  type UapiDump,
  type UapiSetConfig,
} from "./uapi-codec.ts";

const PRIVATE_B64 = randomBytes(32).toString("base64");
const PRIVATE_HEX = Buffer.from(PRIVATE_B64, "base64").toString("hex");
const PEER_B64 = randomBytes(32).toString("base64");
const PEER_HEX = Buffer.from(PEER_B64, "base64").toString("hex");
const PSK_HEX = randomBytes(32).toString("hex");

function config(over: Partial<UapiSetConfig["peer"]> = {}): UapiSetConfig {
  return {
    privateKey: new Secret(PRIVATE_B64),
    peer: {
      publicKey: PEER_B64,
      endpoint: "198.18.1.2:51820",
      persistentKeepaliveSec: 25,
      allowedIps: ["198.19.0.0/24"],
      ...over,
    },
  };
}

/** What wireguard-go 0.0.20220316 answers to get=1 once a handshake happened. */
const DUMP = [
  `private_key=${PRIVATE_HEX}`,
  "listen_port=35119",
  `public_key=${PEER_HEX}`,
  `preshared_key=${PSK_HEX}`,
  "protocol_version=1",
  "endpoint=198.18.1.2:51820",
  "last_handshake_time_sec=1795314357",
  "last_handshake_time_nsec=172068192",
  "tx_bytes=724",
  "rx_bytes=604",
  "persistent_keepalive_interval=25",
  "allowed_ip=198.19.0.0/24",
  "errno=0",
  "",
  "",
].join("\n");

function assertNoSecrets(value: unknown): void {
  const text = `${JSON.stringify(value)} ${inspect(value, { depth: 10 })} ${value instanceof Error ? `${value.message} ${value.stack ?? ""}` : ""}`;
  // Any 20-character window: a corrupted line must not leak most of a key either.
  for (const [name, key] of [
    ["private key", PRIVATE_HEX],
    ["private key", PRIVATE_B64],
    ["preshared key", PSK_HEX],
  ] as const) {
    for (let i = 0; i + 20 <= key.length; i++)
      assert.ok(!text.includes(key.slice(i, i + 20)), `the ${name} never appears`);
  }
}

describe("keys", () => {
  test("base64-and-hex-round-trip", () => {
    for (let i = 0; i < 50; i++) {
      const b64 = randomBytes(32).toString("base64");
      assert.equal(keyFromHex(keyToHex(b64, "k"), "k"), b64);
    }
  });

  test("invalid-keys-are-typed-errors-that-do-not-quote-the-key", () => {
    const bad = [
      "",
      "abc",
      PRIVATE_B64.slice(0, -2),
      `${PRIVATE_B64}x`,
      PRIVATE_B64.replace("=", "A"),
      `${PRIVATE_B64.slice(0, 42)}B=`,
      "!".repeat(43) + "=",
    ];
    for (const k of bad) {
      assert.throws(
        () => keyToHex(k, "the private key"),
        (e: unknown) => e instanceof UapiError && e.code === "invalid-value" && !e.message.includes(k || "\u0000"),
      );
    }
    assert.throws(() => keyFromHex("AB".repeat(32), "k"), UapiError);
    assert.throws(() => keyFromHex("ab".repeat(31), "k"), UapiError);
  });
});

describe("set transaction", () => {
  test("endpoint-before-keepalive-in-one-transaction", () => {
    const tx = encodeSet(config()).reveal();
    assert.equal(
      tx,
      `set=1\nprivate_key=${PRIVATE_HEX}\nreplace_peers=true\npublic_key=${PEER_HEX}\nendpoint=198.18.1.2:51820\n` +
        "persistent_keepalive_interval=25\nreplace_allowed_ips=true\nallowed_ip=198.19.0.0/24\n\n",
    );
    assert.ok(tx.indexOf("endpoint=") < tx.indexOf("persistent_keepalive_interval="));
  });

  test("listen-port-and-several-allowed-ips", () => {
    const tx = encodeSet({
      ...config({ allowedIps: ["198.19.0.0/24", "fd00::/64"], endpoint: "[fd00::1]:51820" }),
      listenPort: 51000,
    }).reveal();
    assert.match(tx, /\nlisten_port=51000\nreplace_peers=true\n/);
    assert.match(tx, /\nendpoint=\[fd00::1\]:51820\n/);
    assert.match(tx, /allowed_ip=198\.19\.0\.0\/24\nallowed_ip=fd00::\/64\n\n$/);
  });

  test("the-transaction-prints-redacted", () => {
    const tx = encodeSet(config());
    assertNoSecrets(tx);
    assert.equal(String(tx), "[redacted]");
  });

  test("bad-values-are-refused-before-anything-is-written", () => {
    const cases: UapiSetConfig[] = [
      { ...config(), privateKey: new Secret("not a key") },
      config({ publicKey: "nope" }),
      config({ endpoint: "198.18.1.2" }),
      config({ endpoint: "198.18.1.2:0" }),
      config({ endpoint: "198.18.1.256:51820" }),
      config({ endpoint: "198.18.1.2:51820\nprivate_key=00" }),
      config({ persistentKeepaliveSec: -1 }),
      config({ persistentKeepaliveSec: 1.5 }),
      config({ allowedIps: [] }),
      config({ allowedIps: ["198.19.0.0/33"] }),
      config({ allowedIps: ["198.19.0.0/24\nreplace_peers=true"] }),
      { ...config(), listenPort: 70000 },
    ];
    for (const c of cases) {
      assert.throws(
        () => encodeSet(c),
        (e: unknown) => e instanceof UapiError && e.code === "invalid-value" && (assertNoSecrets(e), true),
      );
    }
  });

  test("get-request", () => {
    assert.equal(encodeGet(), "get=1\n\n");
  });
});

describe("get reply", () => {
  test("a-real-dump-parses-without-its-secrets", () => {
    const d = parseGetReply(DUMP);
    assert.equal(d.hasPrivateKey, true);
    assert.equal(d.listenPort, 35119);
    assert.equal(d.peers.length, 1);
    const p = d.peers[0];
    assert.ok(p !== undefined);
    assert.equal(p.publicKey, PEER_B64);
    assert.equal(p.hasPresharedKey, true);
    assert.equal(p.endpoint, "198.18.1.2:51820");
    assert.equal(p.rxBytes, 604);
    assert.equal(p.txBytes, 724);
    assert.equal(p.persistentKeepaliveInterval, 25);
    assert.deepEqual(p.allowedIps, ["198.19.0.0/24"]);
    assert.equal(lastHandshakeMs(p), 1795314357172);
    assertNoSecrets(d);
  });

  test("no-handshake-yet-and-no-peers", () => {
    const d = parseGetReply(
      DUMP.replace("last_handshake_time_sec=1795314357", "last_handshake_time_sec=0").replace(
        "last_handshake_time_nsec=172068192",
        "last_handshake_time_nsec=0",
      ),
    );
    assert.equal(d.peers[0] !== undefined && lastHandshakeMs(d.peers[0]), null);
    const empty = parseGetReply(`private_key=${"0".repeat(64)}\nlisten_port=0\nerrno=0\n\n`);
    assert.equal(empty.hasPrivateKey, false);
    assert.deepEqual(empty.peers, []);
  });

  test("unknown-keys-are-kept-where-they-appeared", () => {
    const d = parseGetReply(
      DUMP.replace("listen_port=35119\n", `listen_port=35119\nfuture_knob=7\nfuture_key=${PRIVATE_HEX}\n`).replace(
        "tx_bytes=724\n",
        "tx_bytes=724\npeer_knob=x=y\n",
      ),
    );
    assert.deepEqual(
      d.extra,
      [
        ["future_knob", "7"],
        ["future_key", "[redacted]"],
      ],
      "a key-like unknown value is redacted",
    );
    assert.deepEqual(d.peers[0]?.extra, [["peer_knob", "x=y"]]);
    assertNoSecrets(d);
  });

  test("errno-trailer-is-a-typed-error", () => {
    assert.throws(
      () => parseGetReply("errno=-22\n\n"),
      (e: unknown) => e instanceof UapiError && e.code === "errno" && e.errno === -22,
    );
    assert.throws(
      () => {
        parseSetReply("errno=1\n\n");
      },
      (e: unknown) => e instanceof UapiError && e.code === "errno" && e.errno === 1,
    );
    assert.doesNotThrow(() => {
      parseSetReply("errno=0\n\n");
    });
  });

  const broken: [string, string, string][] = [
    ["truncated: no blank line", DUMP.slice(0, -1), "truncated"],
    ["truncated mid-dump", DUMP.slice(0, 200), "truncated"],
    ["empty", "", "truncated"],
    ["only the blank line", "\n\n", "malformed"],
    ["no errno", DUMP.replace("errno=0\n", ""), "malformed"],
    ["errno not numeric", "errno=zero\n\n", "malformed"],
    ["line without =", DUMP.replace("tx_bytes=724", "tx_bytes 724"), "malformed"],
    ["blank line inside", DUMP.replace("tx_bytes=724\n", "tx_bytes=724\n\n"), "malformed"],
    ["errno twice", `errno=0\n${DUMP}`, "malformed"],
    ["counter not numeric", DUMP.replace("rx_bytes=604", "rx_bytes=6o4"), "invalid-value"],
    ["negative counter", DUMP.replace("rx_bytes=604", "rx_bytes=-4"), "invalid-value"],
    ["huge counter", DUMP.replace("rx_bytes=604", `rx_bytes=${"9".repeat(20)}`), "invalid-value"],
    [
      "nsec out of range",
      DUMP.replace("last_handshake_time_nsec=172068192", "last_handshake_time_nsec=1000000000"),
      "invalid-value",
    ],
    ["port out of range", DUMP.replace("listen_port=35119", "listen_port=65536"), "invalid-value"],
    ["bad public key", DUMP.replace(`public_key=${PEER_HEX}`, "public_key=xyz"), "invalid-value"],
    ["bad endpoint", DUMP.replace("endpoint=198.18.1.2:51820", `endpoint=${PRIVATE_HEX}`), "invalid-value"],
    ["bad allowed ip", DUMP.replace("allowed_ip=198.19.0.0/24", "allowed_ip=banana"), "invalid-value"],
    ["oversized", `listen_port=1\n${"x_pad=" + "a".repeat(MAX_REPLY_BYTES)}\nerrno=0\n\n`, "too-large"],
  ];
  for (const [name, text, code] of broken) {
    test(`broken-reply-${name.replace(/[^a-z0-9]+/g, "-")}`, () => {
      assert.throws(
        () => parseGetReply(text),
        (e: unknown) => {
          assert.ok(e instanceof UapiError, `typed error, got ${String(e)}`);
          assert.equal(e.code, code, e.message);
          assertNoSecrets(e);
          return true;
        },
      );
    });
  }
});

const FRAGMENTS = [
  "=",
  "\n",
  "\n\n",
  "errno=0",
  "errno=-22",
  "public_key=",
  PEER_HEX,
  "private_key=",
  PRIVATE_HEX,
  "rx_bytes=",
  "12",
  "-",
  "allowed_ip=",
  "198.19.0.0/24",
  "::",
  "\u0000",
  "é",
  " ",
  "last_handshake_time_nsec=",
  "999999999",
];

function mutate(rand: () => number, s: string): string {
  let out = s;
  const edits = 1 + Math.floor(rand() * 4);
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(rand() * (out.length + 1));
    const op = Math.floor(rand() * 4);
    const frag = FRAGMENTS[Math.floor(rand() * FRAGMENTS.length)] ?? "";
    if (op === 0) out = out.slice(0, at) + out.slice(at + 1);
    else if (op === 1) out = out.slice(0, at) + frag + out.slice(at);
    else if (op === 2) out = out.slice(0, at);
    else out = out.slice(0, at) + String.fromCharCode(Math.floor(rand() * 128)) + out.slice(at + 1);
  }
  return out;
}

function checkDump(d: UapiDump): void {
  assert.ok(d.listenPort === null || (Number.isInteger(d.listenPort) && d.listenPort >= 0 && d.listenPort <= 65535));
  for (const p of d.peers) {
    assert.ok(Buffer.from(p.publicKey, "base64").length === 32);
    for (const n of [p.rxBytes, p.txBytes, p.lastHandshakeTimeSec, p.lastHandshakeTimeNsec])
      assert.ok(Number.isSafeInteger(n) && n >= 0);
  }
}

describe("property", () => {
  test("random-and-mutated-replies-give-a-valid-dump-or-a-typed-error", () => {
    const seed = Date.now() % 1_000_000;
    const rand = prng(seed);
    let parsed = 0;
    let refused = 0;
    for (let i = 0; i < 4000; i++) {
      const input =
        i % 3 === 0
          ? Array.from(
              { length: Math.floor(rand() * 12) },
              () => FRAGMENTS[Math.floor(rand() * FRAGMENTS.length)] ?? "",
            ).join("")
          : mutate(rand, i % 3 === 1 ? DUMP : "errno=0\n\n");
      for (const parse of [(t: string) => parseGetReply(t), (t: string) => (parseSetReply(t), null)]) {
        try {
          const r = parse(input);
          if (r !== null) checkDump(r);
          assertNoSecrets(r);
          parsed++;
        } catch (e) {
          assert.ok(e instanceof UapiError, `seed ${seed} case ${i}: ${JSON.stringify(input)} threw ${String(e)}`);
          assertNoSecrets(e);
          refused++;
        }
      }
    }
    assert.ok(parsed > 0 && refused > 0, `both outcomes were exercised (parsed ${parsed}, refused ${refused})`);
  });
});

test("a-roam-sets-only-the-peer's-endpoint-again-and-refuses-a-bad-one", () => {
  const pub = Buffer.alloc(32, 7).toString("base64");
  assert.equal(
    encodeEndpointUpdate(pub, "198.18.1.2:51820").reveal(),
    `set=1\npublic_key=${"07".repeat(32)}\nupdate_only=true\nendpoint=198.18.1.2:51820\n\n`,
  );
  assert.match(encodeEndpointUpdate(pub, "[2001:db8:18:1::2]:51820").reveal(), /endpoint=\[2001:db8:18:1::2\]:51820\n/);
  assert.throws(() => encodeEndpointUpdate(pub, "198.18.1.2:51820\nreplace_peers=true"), UapiError);
  assert.throws(() => encodeEndpointUpdate("short", "198.18.1.2:51820"), UapiError);
});
