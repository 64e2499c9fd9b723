/**
 * Preferences over the real control socket: a member of the control group cannot loosen what the configuration
 * (root) or the signed policy (IT) decided, lockdown first; root's configuration and IT's policy can.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync, sign } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { ControlClient, isControlError } from "../../client/control-client.ts";
import { parseConfig, type DetourConfig } from "../../core/config/schema.ts";
import { ENVELOPE_FORMAT } from "../../core/policy/document.ts";
import type { StatusPayload } from "../../core/protocol/messages.ts";
import { ControlServer } from "../control-server.ts";
import { createLogger } from "../log.ts";
import { keyIdOf } from "./keys.ts";
import { PolicyManager } from "./policy-manager.ts";
import { fileSource } from "./sources.ts";
import { policyHandlers } from "./wiring.ts";

const NOW = Date.parse("2025-06-01T12:00:00Z");
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const log = createLogger({ level: "error" });

function config(lockdown: boolean): DetourConfig {
  const r = parseConfig({
    version: 1,
    organisation: "Example Corp",
    identity: {},
    gateways: [
      {
        name: "gw1",
        hostname: "gw1.example.com",
        address: "198.18.1.2",
        priority: 1,
        region: "eu",
        protocols: { anyconnect: { pin: `pin-sha256:${"B".repeat(43)}=` } },
      },
    ],
    protectedRoutes: ["198.19.0.0/16"],
    probe: { address: "198.19.0.1" },
    lockdown,
  });
  assert.ok(r.ok);
  return r.config;
}

function signed(version: number, settings: Record<string, unknown>): string {
  const bytes = Buffer.from(
    JSON.stringify({
      version,
      issuedAt: "2025-05-01T00:00:00Z",
      expiresAt: "2025-12-31T00:00:00Z",
      organisation: "Example Corp",
      settings,
    }),
  );
  return JSON.stringify({
    format: ENVELOPE_FORMAT,
    keyId: keyIdOf(publicKey),
    policy: bytes.toString("base64"),
    signature: sign(null, bytes, privateKey).toString("base64"),
  });
}

const STATUS: StatusPayload = {
  state: "disconnected",
  summary: "Disconnected.",
  gateway: null,
  protocol: null,
  activeLegId: null,
  since: 0,
  candidates: [],
  lastRace: null,
  lastFailover: null,
  standby: null,
  error: null,
  daemon: { version: "0.1.0", pid: 1, startedAt: 0, configPath: "/etc/detour/client.json" },
};

let dir: string;
const cleanups: (() => Promise<void> | void)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "detour-prefs-control-"));
  mkdirSync(join(dir, "keys"));
  writeFileSync(join(dir, "keys", "it.pem"), publicKey.export({ format: "pem", type: "spki" }));
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  rmSync(dir, { recursive: true, force: true });
});

/** detourd's policy manager behind a real control socket, and a connected client (what `detour prefs` uses). */
async function daemonWith(lockdown: boolean): Promise<{ m: PolicyManager; c: ControlClient; applied: boolean[] }> {
  const m = new PolicyManager({
    base: config(lockdown),
    stateDir: join(dir, "state"),
    trustedKeysDir: join(dir, "keys"),
    sources: [fileSource(join(dir, "policy.json"))],
    log,
    now: () => NOW,
  });
  cleanups.push(() => {
    m.stop();
  });
  const applied: boolean[] = [];
  m.start((e) => {
    applied.push(e.config.lockdown);
    return false;
  });
  await m.settled();
  const path = join(dir, "detourd.sock");
  const server = await ControlServer.start({
    path,
    log,
    handlers: {
      status: () => Promise.resolve({ ...STATUS, policy: m.status() }),
      connect: () => Promise.resolve(null),
      disconnect: () => Promise.resolve(),
      gateways: () => Promise.resolve([]),
      race: () => Promise.resolve(null),
      subscribe: () => () => undefined,
      setGateway: (g) => Promise.resolve(g),
      ...policyHandlers(m),
    },
  });
  cleanups.push(() => server.close());
  const c = await ControlClient.connect(path, { client: "detour-cli/test" });
  cleanups.push(() => {
    c.close();
  });
  return { m, c, applied };
}

async function lockdownEntry(c: ControlClient): Promise<{ value: unknown; source: string; ignored?: string }> {
  const e = (await c.prefs()).entries.find((x) => x.key === "lockdown");
  assert.ok(e !== undefined);
  return e;
}

test("a-group-member-cannot-switch-off-the-lockdown-roots-configuration-turned-on", async () => {
  const { m, c, applied } = await daemonWith(true);
  await assert.rejects(c.setPref("lockdown", "false"), (e: unknown) => {
    assert.ok(isControlError(e), String(e));
    assert.equal(e.code, "refused");
    assert.match(e.message, /^lockdown is true by this device's configuration; a preference may only tighten it/);
    return true;
  });
  assert.equal(m.effective().config.lockdown, true, "lockdown stays in force");
  assert.deepEqual(applied, [], "nothing was put in force");
  assert.deepEqual(await lockdownEntry(c), {
    key: "lockdown",
    value: true,
    source: "default",
    locked: false,
    scope: "user",
  });
  // Turning it on again, or clearing the preference, loosens nothing and is allowed.
  assert.equal((await c.setPref("lockdown", "true")).entries.find((e) => e.key === "lockdown")?.value, true);
  assert.equal((await c.setPref("lockdown", null)).entries.find((e) => e.key === "lockdown")?.value, true);
});

test("a-lockdown-off-preference-stored-before-is-ignored-with-its-reason", async () => {
  mkdirSync(join(dir, "state"), { recursive: true });
  writeFileSync(join(dir, "state", "prefs.json"), JSON.stringify({ lockdown: false, autoConnect: true }));
  const { m, c } = await daemonWith(true);
  assert.equal(m.effective().config.lockdown, true);
  assert.equal(m.effective().autoConnect, true, "the rest of the stored preferences still apply");
  const e = await lockdownEntry(c);
  assert.equal(e.value, true);
  assert.match(e.ignored ?? "", /false would loosen it$/);
  const status = await c.status();
  assert.deepEqual(
    status.policy?.ignoredPrefs?.map((i) => [i.key, i.value]),
    [["lockdown", false]],
  );
});

test("roots-configuration-and-its-signed-policy-can-switch-lockdown-off", async () => {
  // Root's configuration without lockdown: a member may turn it on, and off again (back to what root decided).
  const plain = await daemonWith(false);
  await plain.c.setPref("lockdown", "true");
  assert.equal(plain.m.effective().config.lockdown, true);
  await plain.c.setPref("lockdown", "false");
  assert.equal(plain.m.effective().config.lockdown, false);
  for (const f of cleanups.splice(0).reverse()) await f();
  rmSync(join(dir, "state"), { recursive: true, force: true });

  // Root's configuration with lockdown, and IT's signed policy switching it off: the policy decides.
  const { m, c } = await daemonWith(true);
  assert.equal(m.offer("it", signed(2, { lockdown: false })), null);
  assert.equal(m.effective().config.lockdown, false);
  const e = await lockdownEntry(c);
  assert.equal(e.source, "policy");
  await assert.rejects(c.setPref("lockdown", "true"), /managed by Example Corp's policy/);
});
