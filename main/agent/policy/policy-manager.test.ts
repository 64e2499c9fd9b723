import assert from "node:assert/strict";
import { generateKeyPairSync, sign } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { parseConfig, type DetourConfig } from "../../core/config/schema.ts";
import { ENVELOPE_FORMAT } from "../../core/policy/document.ts";
import type { PolicyEvent } from "../../core/policy/status.ts";
import { createLogger } from "../log.ts";
import { keyIdOf } from "./keys.ts";
import { PolicyManager, PrefRefused } from "./policy-manager.ts";
import { fileSource } from "./sources.ts";

const NOW = Date.parse("2025-06-01T12:00:00Z");
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const log = createLogger({ level: "error" });

function baseConfig(): DetourConfig {
  const r = parseConfig({
    version: 1,
    organisation: "Example Corp",
    identity: {},
    gateways: ["gw1", "gw2"].map((name, i) => ({
      name,
      hostname: `${name}.example.com`,
      address: `198.18.${i + 1}.2`,
      priority: i + 1,
      region: "eu",
      protocols: { anyconnect: { pin: `pin-sha256:${"B".repeat(43)}=` } },
    })),
    protectedRoutes: ["198.19.0.0/16"],
    probe: { address: "198.19.0.1" },
  });
  assert.ok(r.ok);
  return r.config;
}

function signed(version: number, settings: Record<string, unknown>, over: Record<string, unknown> = {}): string {
  const bytes = Buffer.from(
    JSON.stringify({
      version,
      issuedAt: "2025-05-01T00:00:00Z",
      expiresAt: "2025-12-31T00:00:00Z",
      organisation: "Example Corp",
      settings,
      ...over,
    }),
  );
  return JSON.stringify({
    format: ENVELOPE_FORMAT,
    keyId: keyIdOf(publicKey),
    policy: bytes.toString("base64"),
    signature: sign(null, bytes, privateKey).toString("base64"),
  });
}

let dir: string;
let managers: PolicyManager[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "detour-policy-test-"));
  mkdirSync(join(dir, "keys"));
  writeFileSync(join(dir, "keys", "it.pem"), publicKey.export({ format: "pem", type: "spki" }));
});

afterEach(() => {
  for (const m of managers) m.stop();
  managers = [];
  rmSync(dir, { recursive: true, force: true });
});

function manager(): { m: PolicyManager; applied: string[][]; events: PolicyEvent[] } {
  const m = new PolicyManager({
    base: baseConfig(),
    stateDir: join(dir, "state"),
    trustedKeysDir: join(dir, "keys"),
    sources: [fileSource(join(dir, "policy.json"))],
    log,
    now: () => NOW,
  });
  managers.push(m);
  const applied: string[][] = [];
  const events: PolicyEvent[] = [];
  m.subscribe((e) => events.push(e));
  m.start((e) => {
    applied.push(e.config.gateways.map((g) => g.name));
    return false;
  });
  return { m, applied, events };
}

test("a-valid-policy-applies-a-bad-one-is-refused-and-the-last-good-stays-across-a-restart", async () => {
  const { m, applied, events } = manager();
  assert.equal(m.offer("test", signed(2, { allowedGateways: ["gw2"] })), null);
  assert.deepEqual(applied, [["gw2"]]);
  assert.equal(m.status().version, 2);
  assert.deepEqual(m.status().locked, ["allowedGateways"]);

  const r = m.offer("test", signed(1, {}));
  assert.equal(r?.code, "downgrade");
  assert.equal(m.status().version, 2, "the last good policy stays in force");
  assert.equal(m.status().lastRejection?.code, "downgrade");
  assert.equal(applied.length, 1, "nothing re-applied");
  assert.deepEqual(
    events.map((e) => e.change),
    ["applied", "rejected"],
  );
  m.offer("test", signed(1, {}));
  assert.equal(events.length, 2, "the same refused document is not reported twice");

  const again = manager();
  await again.m.settled();
  assert.equal(again.m.status().version, 2, "restored from the state folder");
  assert.deepEqual(
    again.m.effective().config.gateways.map((g) => g.name),
    ["gw2"],
  );
});

test("a-key-the-policy-locks-is-refused-with-the-organisation-and-free-keys-are-kept", () => {
  const { m, applied } = manager();
  m.offer("test", signed(3, { standby: { mode: "on" } }));
  assert.throws(
    () => m.setPref("standby.mode", "off"),
    (e: unknown) => e instanceof PrefRefused && /managed by Example Corp's policy/.test(e.message),
  );
  assert.throws(() => m.setPref("allowedGateways", "gw1"), /only be set by your organisation/);
  assert.throws(() => m.setPref("preferredGateway", "GW 1!"), PrefRefused);
  assert.throws(() => m.setPref("colour", "red"), /unknown setting/);
  const p = m.setPref("preferredGateway", "gw2");
  assert.equal(p.entries.find((e) => e.key === "preferredGateway")?.source, "user");
  assert.equal(p.entries.find((e) => e.key === "standby.mode")?.locked, true);
  assert.equal(m.effective().config.gateways.find((g) => g.name === "gw2")?.priority, 0);
  assert.equal(applied.length, 2);
  m.setPref("preferredGateway", null);
  assert.equal(m.prefs().entries.find((e) => e.key === "preferredGateway")?.source, "default");
});

test("documents-from-the-watched-file-are-read-when-it-changes", async () => {
  const { m } = manager();
  writeFileSync(join(dir, "policy.json"), signed(4, { lockdown: true }));
  m.refresh();
  await m.settled();
  assert.equal(m.status().version, 4);
  assert.equal(m.effective().config.lockdown, true);
  writeFileSync(join(dir, "policy.json"), "{ not json");
  m.refresh();
  await m.settled();
  assert.equal(m.status().lastRejection?.code, "malformed");
  assert.equal(m.status().version, 4);
});
