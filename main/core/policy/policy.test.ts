import assert from "node:assert/strict";
import { createHash, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { test } from "node:test";
import { parseConfig, type DetourConfig, type DetourConfigInput } from "../config/schema.ts";
import {
  decodeBase64,
  decodeUtf8,
  encodeBase64,
  encodeUtf8,
  ENVELOPE_FORMAT,
  type PolicyDocument,
} from "./document.ts";
import { layer, preferenceRefusal } from "./layers.ts";
import { flattenSettings, parseSettingValue, unflattenSettings } from "./settings.ts";
import { verifyEnvelope, type SignatureCheck, type VerifyContext } from "./verify.ts";

const NOW = Date.parse("2025-06-01T12:00:00Z");
const ORG = "Example Corp";

function keyPair(): { priv: KeyObject; pub: KeyObject; id: string; check: SignatureCheck } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
  const id = createHash("sha256").update(raw).digest("hex").slice(0, 16);
  return { priv: privateKey, pub: publicKey, id, check: (m, s) => verify(null, m, publicKey, s) };
}

const K = keyPair();
const OTHER = keyPair();

function doc(over: Partial<PolicyDocument> & Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: 5,
    issuedAt: "2025-05-01T00:00:00Z",
    expiresAt: "2025-12-31T00:00:00Z",
    organisation: ORG,
    settings: { allowedGateways: ["gw1", "gw2"] },
    ...over,
  };
}

function envelope(policy: unknown, key = K): { text: string; b64: string } {
  const bytes = Buffer.from(JSON.stringify(policy), "utf8");
  const b64 = bytes.toString("base64");
  return {
    text: JSON.stringify({
      format: ENVELOPE_FORMAT,
      keyId: key.id,
      policy: b64,
      signature: sign(null, bytes, key.priv).toString("base64"),
    }),
    b64,
  };
}

function ctx(over: Partial<VerifyContext> = {}): VerifyContext {
  return { keys: new Map([[K.id, K.check]]), current: null, now: NOW, organisation: ORG, ...over };
}

test("a-valid-signed-policy-is-accepted-with-its-key-and-settings", () => {
  const r = verifyEnvelope(envelope(doc()).text, ctx());
  assert.ok(r.ok);
  assert.equal(r.keyId, K.id);
  assert.deepEqual(r.policy.settings.allowedGateways, ["gw1", "gw2"]);
  assert.equal(r.unchanged, false);
});

test("each-bad-document-is-refused-with-its-stable-code-and-field", () => {
  const good = envelope(doc());
  const env = JSON.parse(good.text) as Record<string, string>;
  const bytes = Buffer.from(env.policy ?? "", "base64");
  bytes[10] = (bytes[10] ?? 0) ^ 1;
  const tampered = JSON.stringify({ ...env, policy: bytes.toString("base64") });
  const cases: [string, string, string, string | undefined][] = [
    ["not json", "{", "malformed", undefined],
    ["bare policy", JSON.stringify(doc()), "unsigned", undefined],
    ["no signature", JSON.stringify({ ...env, signature: "" }), "unsigned", "signature"],
    ["tampered", tampered, "bad-signature", "signature"],
    ["unknown key", envelope(doc(), OTHER).text, "unknown-key", "keyId"],
    [
      "bad protocol",
      envelope(doc({ settings: { allowedProtocols: ["wireguard", "pptp"] } as never })).text,
      "invalid-field",
      "settings.allowedProtocols[1]",
    ],
    ["unknown setting", envelope(doc({ settings: { colour: "red" } as never })).text, "invalid-field", "settings"],
    ["other organisation", envelope(doc({ organisation: "Other Corp" })).text, "invalid-field", "organisation"],
    ["expired", envelope(doc({ expiresAt: "2025-05-31T00:00:00Z" })).text, "expired", "expiresAt"],
    ["wrong format", JSON.stringify({ ...env, format: "x" }), "malformed", "format"],
  ];
  for (const [name, text, code, field] of cases) {
    const r = verifyEnvelope(text, ctx());
    assert.ok(!r.ok, name);
    assert.equal(r.rejection.code, code, `${name}: ${r.rejection.message}`);
    if (field !== undefined) assert.equal(r.rejection.field, field, name);
    assert.ok(r.rejection.message.length > 10, name);
  }
});

test("a-lower-or-reused-version-is-a-downgrade-but-re-reading-the-same-document-is-not", () => {
  const cur = envelope(doc({ version: 5 }));
  const current = { version: 5, policyBase64: cur.b64 };
  const lower = verifyEnvelope(envelope(doc({ version: 4 })).text, ctx({ current }));
  assert.ok(!lower.ok && lower.rejection.code === "downgrade" && lower.rejection.field === "version");
  const reused = verifyEnvelope(envelope(doc({ version: 5, settings: {} })).text, ctx({ current }));
  assert.ok(!reused.ok && reused.rejection.code === "downgrade");
  const same = verifyEnvelope(cur.text, ctx({ current }));
  assert.ok(same.ok && same.unchanged);
  const newer = verifyEnvelope(envelope(doc({ version: 6 })).text, ctx({ current }));
  assert.ok(newer.ok && !newer.unchanged);
});

test("base64-and-utf8-codecs-round-trip-and-refuse-garbage", () => {
  for (const s of ["", "a", "ab", "abc", "Zürich ☃ 𝄞"]) {
    const bytes = encodeUtf8(s);
    assert.deepEqual(Buffer.from(bytes), Buffer.from(s, "utf8"));
    assert.equal(encodeBase64(bytes), Buffer.from(s, "utf8").toString("base64"));
    assert.deepEqual(decodeBase64(encodeBase64(bytes)), bytes);
    assert.equal(decodeUtf8(bytes), s);
  }
  assert.equal(decodeBase64("abc"), null);
  assert.equal(decodeBase64("ab!="), null);
  assert.equal(decodeUtf8(Uint8Array.from([0xc0, 0x80])), null, "overlong");
  assert.equal(decodeUtf8(Uint8Array.from([0xe2, 0x82])), null, "truncated");
});

const BASE: DetourConfigInput = {
  version: 1,
  organisation: ORG,
  identity: {},
  gateways: ["gw1", "gw2", "gw3"].map((name, i) => ({
    name,
    hostname: `${name}.example.com`,
    address: `198.18.${i + 1}.2`,
    priority: (i + 1) * 10,
    region: "eu",
    protocols: {
      wireguard: { publicKey: "A".repeat(43) + "=", tunnelAddress: "198.19.11.2/32" },
      anyconnect: { pin: `pin-sha256:${"B".repeat(43)}=` },
    },
  })),
  protectedRoutes: ["198.19.0.0/16"],
  probe: { address: "198.19.0.1" },
};

function base(): DetourConfig {
  const r = parseConfig(BASE);
  assert.ok(r.ok);
  return r.config;
}

function policy(settings: PolicyDocument["settings"]): PolicyDocument {
  return {
    version: 1,
    issuedAt: "2025-05-01T00:00:00Z",
    expiresAt: "2025-12-31T00:00:00Z",
    organisation: ORG,
    settings,
  };
}

test("the-policy-wins-over-user-preferences-and-locks-the-keys-it-sets", () => {
  const r = layer(
    base(),
    { standby: { mode: "off" }, preferredGateway: "gw3", autoConnect: true },
    policy({ standby: { mode: "on" }, race: { staggerMs: 400 } }),
  );
  assert.ok(r.ok);
  const e = r.effective;
  assert.equal(e.config.standby.mode, "on", "the policy's value");
  assert.equal(e.config.race.staggerMs, 400);
  assert.equal(e.config.race.legDeadlineMs, 5000, "unset keys keep the configuration's value");
  assert.deepEqual(e.locked, ["race.staggerMs", "standby.mode"]);
  assert.equal(e.sources["standby.mode"], "policy");
  assert.equal(e.sources.preferredGateway, "user");
  assert.equal(e.sources.lockdown, "default");
  assert.equal(e.autoConnect, true);
  assert.equal(e.config.gateways.find((g) => g.name === "gw3")?.priority, 0, "the preferred gateway goes first");
});

test("allowed-gateways-and-protocols-filter-the-configuration", () => {
  const r = layer(base(), {}, policy({ allowedGateways: ["gw2", "gw3", "gw9"], allowedProtocols: ["anyconnect"] }));
  assert.ok(r.ok);
  assert.deepEqual(
    r.effective.config.gateways.map((g) => g.name),
    ["gw2", "gw3"],
  );
  assert.ok(
    r.effective.config.gateways.every(
      (g) => g.protocols.wireguard === undefined && g.protocols.anyconnect !== undefined,
    ),
  );
});

test("a-policy-that-leaves-no-way-to-connect-is-an-invalid-field", () => {
  const none = layer(base(), {}, policy({ allowedGateways: ["gw9"] }));
  assert.ok(
    !none.ok && none.rejection.code === "invalid-field" && none.rejection.field === "settings.allowedGateways",
    JSON.stringify(none),
  );
  const noProto = layer(base(), {}, policy({ allowedProtocols: ["ikev2"] }));
  assert.ok(!noProto.ok && noProto.rejection.field === "settings.allowedProtocols");
});

function lockedDown(): DetourConfig {
  const r = parseConfig({ ...BASE, lockdown: true });
  assert.ok(r.ok);
  return r.config;
}

test("a-stored-preference-cannot-switch-off-the-lockdown-the-configuration-turned-on", () => {
  const r = layer(lockedDown(), { lockdown: false, standby: { mode: "off" } }, null);
  assert.ok(r.ok);
  const e = r.effective;
  assert.equal(e.config.lockdown, true, "the configuration's lockdown stays in force");
  assert.equal(e.values.lockdown, true);
  assert.equal(e.sources.lockdown, "default");
  assert.equal(e.config.standby.mode, "off", "a preference that loosens nothing still applies");
  assert.deepEqual(
    e.ignored.map((i) => [i.key, i.value]),
    [["lockdown", false]],
  );
  assert.match(e.ignored[0]?.reason ?? "", /^lockdown is true by this device's configuration; .*only tighten/);
});

test("a-preference-may-tighten-lockdown-and-undo-its-own-tightening", () => {
  const on = layer(base(), { lockdown: true }, null);
  assert.ok(on.ok);
  assert.equal(on.effective.config.lockdown, true);
  assert.equal(on.effective.sources.lockdown, "user");
  assert.deepEqual(on.effective.ignored, []);
  const off = layer(base(), { lockdown: false }, null);
  assert.ok(off.ok);
  assert.equal(off.effective.config.lockdown, false, "false is what the configuration says: nothing loosened");
  assert.deepEqual(off.effective.ignored, []);
  const same = layer(lockedDown(), { lockdown: true }, null);
  assert.ok(same.ok && same.effective.config.lockdown && same.effective.ignored.length === 0);
});

test("the-organisations-signed-policy-may-switch-lockdown-off-and-locks-it", () => {
  const r = layer(lockedDown(), { lockdown: true }, policy({ lockdown: false }));
  assert.ok(r.ok);
  assert.equal(r.effective.config.lockdown, false, "the organisation's signed policy decides");
  assert.deepEqual(r.effective.locked, ["lockdown"]);
});

test("managed-keys-in-stored-preferences-are-ignored-with-a-reason", () => {
  const r = layer(
    base(),
    {
      allowedGateways: ["gw1", "gw2", "gw3"],
      allowedProtocols: ["wireguard", "anyconnect"],
      telemetry: { endpoint: "https://elsewhere.example.net" },
      health: { deadAfterMs: 60_000 },
      autoConnect: true,
    },
    policy({ allowedGateways: ["gw2"] }),
  );
  assert.ok(r.ok);
  const e = r.effective;
  assert.deepEqual(
    e.config.gateways.map((g) => g.name),
    ["gw2"],
    "the policy's list, not the user's",
  );
  assert.equal(e.config.telemetry, undefined, "telemetry is not pointed anywhere by a preference");
  assert.notEqual(e.config.health.deadAfterMs, 60_000);
  assert.equal(e.autoConnect, true);
  assert.deepEqual(
    e.ignored.map((i) => i.key),
    ["allowedProtocols", "telemetry.endpoint", "health.deadAfterMs"],
    "allowedGateways is locked by the policy (reported as locked, not as ignored)",
  );
  for (const i of e.ignored) assert.match(i.reason, new RegExp(`^${i.key} can only be set by`));
});

test("preference-refusal-names-the-setting-and-why", () => {
  assert.equal(preferenceRefusal(lockedDown(), "lockdown", true), null);
  assert.match(preferenceRefusal(lockedDown(), "lockdown", false) ?? "", /^lockdown is true .* false would loosen it$/);
  assert.equal(preferenceRefusal(base(), "lockdown", false), null);
  assert.equal(preferenceRefusal(lockedDown(), "standby.mode", "off"), null);
  assert.match(preferenceRefusal(base(), "allowedGateways", ["gw1"]) ?? "", /^allowedGateways can only be set by/);
});

test("settings-flatten-to-dotted-keys-and-back", () => {
  const s = { race: { order: ["wireguard" as const], staggerMs: 300 }, lockdown: true };
  const flat = flattenSettings(s);
  assert.deepEqual([...flat.keys()].sort(), ["lockdown", "race.order", "race.staggerMs"]);
  assert.deepEqual(unflattenSettings(flat), s);
});

test("command-line-values-are-typed-per-key-and-checked", () => {
  assert.deepEqual(parseSettingValue("autoConnect", "true"), { ok: true, value: true });
  assert.deepEqual(parseSettingValue("preferredGateway", "none"), { ok: true, value: null });
  assert.deepEqual(parseSettingValue("race.order", "ikev2,wireguard"), { ok: true, value: ["ikev2", "wireguard"] });
  assert.equal(parseSettingValue("race.staggerMs", "5").ok, false, "below the minimum");
  assert.equal(parseSettingValue("standby.mode", "sometimes").ok, false);
});

test("legs-and-candidates-outside-the-policy-are-not-allowed", async () => {
  const { legAllowed, restrictCandidates } = await import("./apply.ts");
  const r = layer(base(), {}, policy({ allowedGateways: ["gw2", "gw3"], allowedProtocols: ["anyconnect"] }));
  assert.ok(r.ok);
  const cfg = r.effective.config;
  assert.equal(legAllowed(cfg, { gateway: "gw1", kind: "anyconnect-tls" }), false, "gateway no longer allowed");
  assert.equal(legAllowed(cfg, { gateway: "gw2", kind: "wireguard" }), false, "protocol no longer allowed");
  assert.equal(legAllowed(cfg, { gateway: "gw2", kind: "anyconnect-tls" }), true);
  const cands = ["gw1", "gw2"].map((name) => ({
    name,
    hostname: `${name}.example.com`,
    address: null,
    priority: 5,
    region: "eu",
    kinds: ["wireguard" as const, "anyconnect-tls" as const],
    sources: ["config" as const],
    probe: null,
  }));
  assert.deepEqual(
    restrictCandidates(cands, cfg).map((c) => [c.name, c.kinds, c.priority]),
    [["gw2", ["anyconnect-tls"], 20]],
  );
});

test("the-policy-sets-the-captive-sign-in-bound-or-forbids-the-exception-and-users-cannot", () => {
  const r = layer(base(), {}, policy({ captive: { exceptionMs: 60_000, allowException: false } }));
  assert.ok(r.ok);
  assert.equal(r.effective.config.captive.exceptionMs, 60_000);
  assert.equal(r.effective.config.captive.allowException, false);
  assert.equal(r.effective.config.captive.checkUrl, "http://connectivitycheck.gstatic.com/generate_204");
  assert.deepEqual(r.effective.locked, ["captive.allowException", "captive.exceptionMs"]);
  assert.match(preferenceRefusal(base(), "captive.allowException", true) ?? "", /only be set by your organisation/);
  const unset = layer(base(), {}, null);
  assert.ok(unset.ok);
  assert.equal(unset.effective.values["captive.exceptionMs"], 300_000, "five minutes unless policy says otherwise");
});

test("local-network-access-defaults-to-auto-policy-forces-it-and-a-user-may-only-turn-it-off", () => {
  const unset = layer(base(), {}, null);
  assert.ok(unset.ok);
  assert.equal(unset.effective.config.localNetworkAccess, "auto");
  assert.equal(unset.effective.values.localNetworkAccess, "auto");
  const forced = layer(base(), { localNetworkAccess: "on" }, policy({ localNetworkAccess: "off" }));
  assert.ok(forced.ok);
  assert.equal(forced.effective.config.localNetworkAccess, "off", "the policy wins over the user");
  assert.deepEqual(forced.effective.locked, ["localNetworkAccess"]);
  const on = layer(base(), {}, policy({ localNetworkAccess: "on" }));
  assert.ok(on.ok);
  assert.equal(on.effective.config.localNetworkAccess, "on");
  // A user turns it off; turning it on over the configuration's "auto" would loosen it, and is refused.
  assert.equal(preferenceRefusal(base(), "localNetworkAccess", "off"), null);
  assert.match(preferenceRefusal(base(), "localNetworkAccess", "on") ?? "", /may only tighten/);
  const userOff = layer(base(), { localNetworkAccess: "off" }, null);
  assert.ok(userOff.ok);
  assert.equal(userOff.effective.config.localNetworkAccess, "off");
  assert.equal(parseSettingValue("localNetworkAccess", "sometimes").ok, false);
});
