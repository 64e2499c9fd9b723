/**
 * Managed policy with the real daemon, engines and gateways: a signed policy applies live; tampered, unsigned,
 * unknown-key, downgraded, expired and invalid documents are each refused with their code while the last good
 * policy stays in force and the tunnel stays up on the same leg; a valid policy that disallows the active gateway
 * moves the tunnel, corp stays reachable, and a restart keeps the policy.
 */
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient, isControlError } from "../../main/client/control-client.ts";
import { keygen, loadPrivateKey, signPolicy } from "../../main/cli/policy-tools.ts";
import type { RejectionCode } from "../../main/core/policy/verify.ts";
import { agentStart, agentStop } from "./agent.ts";
import * as lab from "./lab.ts";
import { ProbeClient } from "./probe-client.ts";

const ID = "pol";
/** A healthy lab connects in well under a second; allow for a loaded two-core machine. */
const CONNECT_WITHIN_MS = 15_000;
/** The daemon reads a changed policy file ~0.2 s after the change (POLICY_SETTLE_MS); 10 s bounds a slow machine. */
const POLICY_SEEN_WITHIN_MS = 10_000;
/** Moving off a disallowed gateway is a standby promotion or a failover race: sub-second; 15 s bounds a hung test. */
const MOVE_WITHIN_MS = 15_000;
const POLL_MS = 100;
/** Route swaps settle in milliseconds; a few tries cover a loaded machine. */
const CORP_TRIES = 10;

type Status = Awaited<ReturnType<ControlClient["status"]>>;

const dir = join(lab.labDirOf(ID), "policy");
const policyFile = join(dir, "policy.json");
const keysDir = join(dir, "trusted-keys");
const itDir = join(dir, "it");
let probe: ProbeClient | null = null;
let client: ControlClient | null = null;
let organisation = "";
const rogue = generateKeyPairSync("ed25519").privateKey;

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  organisation = `Detour lab ${ID}`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(keysDir, { recursive: true, mode: 0o700 });
  const k = keygen(itDir);
  renameSync(k.publicPath, join(keysDir, `${k.keyId}.pem`));
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", lab.topologyOf(ID).client.ns] });
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await probe?.close();
  rmSync(dir, { recursive: true, force: true });
  await lab.down(ID);
});

function policyBytes(version: number, settings: Record<string, unknown>, over: Record<string, unknown> = {}): Buffer {
  const now = Date.now();
  return Buffer.from(
    JSON.stringify(
      {
        version,
        issuedAt: new Date(now - 3_600_000).toISOString(),
        expiresAt: new Date(now + 86_400_000).toISOString(),
        organisation,
        settings,
        ...over,
      },
      null,
      2,
    ) + "\n",
  );
}

function signed(bytes: Buffer, key = loadPrivateKey(join(itDir, "policy-signing.key"))): string {
  return JSON.stringify(signPolicy(bytes, key), null, 2) + "\n";
}

/** Installs a document the way a configuration tool would: a new file renamed over the old one. */
function install(text: string): void {
  writeFileSync(`${policyFile}.new`, text, { mode: 0o644 });
  renameSync(`${policyFile}.new`, policyFile);
}

async function waitFor(
  c: ControlClient,
  what: string,
  pred: (s: Status) => boolean,
  timeoutMs: number,
): Promise<Status> {
  const until = Date.now() + timeoutMs;
  let last: Status | null = null;
  for (let i = 0; i < Math.ceil(timeoutMs / POLL_MS) + 1 && Date.now() < until; i++) {
    last = await c.status();
    if (pred(last)) return last;
    await sleep(POLL_MS);
  }
  assert.fail(
    `timed out after ${timeoutMs} ms waiting for ${what}; last status: ${JSON.stringify({ state: last?.state, gateway: last?.gateway, policy: last?.policy }, null, 1)}`,
  );
}

async function corpSees(expected: string): Promise<string | null> {
  let seen: string | null = null;
  for (let i = 0; i < CORP_TRIES && probe !== null; i++) {
    const r = await probe.http({ url: "http://198.19.0.1/whoami", timeoutMs: 1000 });
    if (r.ok && r.status === 200) {
      seen = (JSON.parse(r.body) as { gateway: string | null }).gateway;
      if (seen === expected) return seen;
    }
    await sleep(POLL_MS);
  }
  return seen;
}

test(
  "bad-policies-are-refused-the-last-good-stays-and-a-policy-without-the-active-gateway-moves-the-tunnel",
  { timeout: 180_000 },
  async () => {
    install(signed(policyBytes(5, { allowedGateways: ["gw1", "gw2", "gw3"], race: { staggerMs: 300 } })));
    const a = await agentStart(ID, { extraArgs: ["--policy-file", policyFile, "--trusted-keys", keysDir] });
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    const applied = await waitFor(c, "policy 5 in force", (s) => s.policy?.version === 5, POLICY_SEEN_WITHIN_MS);
    assert.deepEqual(applied.policy?.locked, ["allowedGateways", "race.staggerMs"]);
    await c.connect();
    const up = await waitFor(c, "connected", (s) => s.state === "connected", CONNECT_WITHIN_MS);
    const leg = up.activeLegId;
    assert.equal(up.gateway, "gw1");
    assert.equal(await corpSees("gw1"), "gw1");

    const good = policyBytes(6, { allowedGateways: ["gw1"] });
    const tampered = JSON.parse(signed(good)) as { policy: string };
    const flipped = Buffer.from(tampered.policy, "base64");
    flipped[flipped.indexOf("6")] = "7".charCodeAt(0); // one byte: version 6 becomes 7
    const cases: [string, string, RejectionCode, string | undefined][] = [
      ["tampered", JSON.stringify({ ...tampered, policy: flipped.toString("base64") }), "bad-signature", "signature"],
      ["unsigned", policyBytes(6, { allowedGateways: ["gw2"] }).toString("utf8"), "unsigned", undefined],
      ["unknown key", signed(policyBytes(6, { allowedGateways: ["gw2"] }), rogue), "unknown-key", "keyId"],
      ["downgraded", signed(policyBytes(4, { allowedGateways: ["gw2"] })), "downgrade", "version"],
      [
        "expired",
        signed(
          policyBytes(
            6,
            { allowedGateways: ["gw2"] },
            { issuedAt: "2024-01-01T00:00:00Z", expiresAt: "2024-02-01T00:00:00Z" },
          ),
        ),
        "expired",
        "expiresAt",
      ],
      [
        "invalid field",
        signed(policyBytes(6, { allowedProtocols: ["wireguard", "pptp"] })),
        "invalid-field",
        "settings.allowedProtocols[1]",
      ],
    ];
    let lastAt = 0;
    for (const [name, text, code, field] of cases) {
      install(text);
      const s = await waitFor(
        c,
        `${name} refused`,
        (x) => (x.policy?.lastRejection?.at ?? 0) > lastAt,
        POLICY_SEEN_WITHIN_MS,
      );
      const r = s.policy?.lastRejection;
      assert.ok(r != null);
      lastAt = r.at;
      console.log(`${name}: ${r.code}${r.field === undefined ? "" : ` (${r.field})`}: ${r.message}`);
      assert.equal(r.code, code, name);
      if (field !== undefined) assert.equal(r.field, field, name);
      assert.equal(s.policy?.version, 5, `${name}: the last good policy stays in force`);
      assert.equal(s.state, "connected", `${name}: the tunnel stays up`);
      assert.equal(s.activeLegId, leg, `${name}: on the same leg`);
    }
    assert.equal(await corpSees("gw1"), "gw1", "corp still answers through gw1");

    install(signed(policyBytes(7, { allowedGateways: ["gw2", "gw3"], standby: { mode: "on" } })));
    const moved = await waitFor(
      c,
      "the tunnel off gw1",
      (s) => s.policy?.version === 7 && s.state === "connected" && s.gateway !== null && s.gateway !== "gw1",
      MOVE_WITHIN_MS,
    );
    console.log(
      `policy 7: moved to ${String(moved.gateway)} over ${String(moved.protocol)}; failover: ${JSON.stringify(moved.lastFailover)}`,
    );
    assert.equal(moved.policy?.lastRejection?.at, lastAt, "no new rejection");
    assert.ok(moved.gateway !== null);
    assert.equal(await corpSees(moved.gateway), moved.gateway, "corp is reached through the allowed gateway");

    await assert.rejects(
      c.setPref("standby.mode", "off"),
      (e: unknown) => isControlError(e) && e.code === "refused" && /managed by Detour lab pol's policy/.test(e.message),
    );
    const prefs = await c.setPref("autoConnect", "false");
    assert.equal(prefs.entries.find((e) => e.key === "standby.mode")?.locked, true);

    client.close();
    client = null;
    await agentStop(ID);
    rmSync(policyFile, { force: true });
    const b = await agentStart(ID, { extraArgs: ["--policy-file", policyFile, "--trusted-keys", keysDir] });
    client = await ControlClient.connect(b.socket, { timeoutMs: 5000 });
    const restarted = await client.status();
    assert.equal(restarted.policy?.version, 7, "a restart keeps the last good policy from the state folder");
    assert.deepEqual(
      restarted.candidates.length === 0
        ? (await client.gateways()).candidates.map((g) => g.name).sort()
        : restarted.candidates.map((g) => g.name).sort(),
      ["gw2", "gw3"],
    );
  },
);
