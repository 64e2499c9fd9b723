/**
 * Trusted network detection and always-on with the real lab: the client's network hands out the lab's DNS domain
 * (its resolv.conf), and a TLS host in the DNS namespace answers with the pinned key. detourd, asked to connect at
 * start, stays down and says which rule matched; a connect is refused naming it. When the TLS host goes away the
 * network is no longer trusted and detourd connects by itself. An impostor (the same domain, a TLS host with
 * another key) is untrusted: detourd connects, and always-on (allowDisconnect: false) refuses a disconnect.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient, ControlError } from "../../main/client/control-client.ts";
import { keygen, loadPrivateKey, signPolicy } from "../../main/cli/policy-tools.ts";
import { parseConfig, type DetourConfig, type DetourConfigInput } from "../../main/core/config/schema.ts";
import { agentLogs, agentStart, agentStop } from "./agent.ts";
import { nsRun } from "./exec.ts";
import * as lab from "./lab.ts";
import { REPO_ROOT } from "./services.ts";
import {
  makeTrustedCertificate,
  officeTrustedNetworks,
  TRUSTED_TLS_PORT,
  TrustedTlsHost,
  type TestCertificate,
} from "./trusted-host.ts";
import { waitForStatus } from "./wait-status.ts";

const ID = "trust";
/** The first verdict needs detourd's start (tsx, ~1-3 s) and one handshake on the lab's links. */
const VERDICT_WITHIN_MS = 20_000;
/** The recheck (2 s here) plus the poll (2 s) plus a connect on a loaded machine. */
const CONNECT_WITHIN_MS = 30_000;
/** How long "stays down" is watched: two rechecks. */
const STAYS_DOWN_MS = 5000;

const topo = lab.topologyOf(ID);
let base: DetourConfig;
let clientConfigFile = "";
let real: TestCertificate = { pin: "", certFile: "", keyFile: "" };
let fake: TestCertificate = { pin: "", certFile: "", keyFile: "" };
const tlsHost = new TrustedTlsHost(ID);
let client: ControlClient | null = null;

function trustedConfig(extra: Partial<DetourConfigInput> = {}): DetourConfig {
  const parsed = parseConfig({
    ...base,
    trustedNetworks: officeTrustedNetworks(ID, real.pin),
    ...extra,
  });
  if (!parsed.ok) throw new Error(`trusted config invalid: ${JSON.stringify(parsed.issues)}`);
  return parsed.config;
}

async function startAgent(
  config: DetourConfig,
  opts: { connect?: boolean; extraArgs?: string[] } = {},
): Promise<ControlClient> {
  await stopAgent();
  writeFileSync(clientConfigFile, JSON.stringify(config, null, 2));
  const a = await agentStart(ID, {
    connect: opts.connect ?? true,
    ...(opts.extraArgs === undefined ? {} : { extraArgs: opts.extraArgs }),
  });
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  return client;
}

async function stopAgent(): Promise<void> {
  client?.close();
  client = null;
  await agentStop(ID);
}

/** detourd's devices in the client namespace that carry an address: tunnels (the idle WireGuard spare has none). */
async function addressedTunnels(): Promise<string[]> {
  const out = await nsRun(topo.client.ns, ["ip", "-o", "addr", "show"]);
  return [
    ...new Set(
      out
        .split("\n")
        .map((l) => l.split(/\s+/)[1] ?? "")
        .filter((n) => n.startsWith(`d${ID}`)),
    ),
  ];
}

before(async () => {
  await lab.down(ID);
  const state = await lab.up(ID);
  clientConfigFile = state.clientConfig;
  const parsed = parseConfig(JSON.parse(readFileSync(clientConfigFile, "utf8")));
  if (!parsed.ok) throw new Error(`lab config invalid: ${JSON.stringify(parsed.issues)}`);
  base = parsed.config;
  real = makeTrustedCertificate(ID, "real");
  fake = makeTrustedCertificate(ID, "fake");
  assert.notEqual(real.pin, fake.pin, "the impostor's key differs");
});

after(async () => {
  await stopAgent();
  await tlsHost.stop();
  await lab.down(ID);
});

test(
  "on-the-trusted-network-detour-stays-down-and-says-which-rule-then-leaving-it-connects",
  { timeout: 120_000 },
  async () => {
    await tlsHost.start(real);
    const c = await startAgent(trustedConfig());
    const s = await waitForStatus(
      c,
      "the trusted verdict",
      (x) => x.trusted?.checkedAt != null && x.trusted.trusted,
      VERDICT_WITHIN_MS,
      { context: () => agentLogs(ID) },
    );
    assert.ok(s.trusted !== undefined);
    assert.equal(s.trusted.rule, "office");
    assert.equal(s.trusted.heldDown, true);
    assert.equal(s.state, "disconnected");
    await sleep(STAYS_DOWN_MS);
    const later = await c.status();
    assert.equal(later.state, "disconnected", "still down after two rechecks");
    assert.equal(later.trusted?.rule, "office");
    assert.deepEqual(await addressedTunnels(), [], "no tunnel came up");
    const status = await nsRun(topo.client.ns, [
      join(REPO_ROOT, "bin", "detour"),
      "--socket",
      join(lab.labDirOf(ID), "detourd.sock"),
      "status",
    ]).catch((e: unknown) => String(e));
    console.log(status);
    assert.match(status, /On trusted network office: Detour stays disconnected here/);
    await assert.rejects(c.connect(), (e: unknown) => {
      assert.ok(e instanceof ControlError);
      assert.equal(e.code, "refused");
      assert.match(e.message, /trusted network "office".*trustedNetworkPolicy: disconnect/);
      return true;
    });
    const t0 = Date.now();
    await tlsHost.stop();
    const up = await waitForStatus(
      c,
      "connected once the trusted host went away",
      (x) => x.state === "connected",
      CONNECT_WITHIN_MS,
      { context: () => agentLogs(ID) },
    );
    console.log(`connected ${String(Date.now() - t0)} ms after the trusted host went away`);
    assert.ok(up.trusted !== undefined);
    assert.equal(up.trusted.trusted, false);
    assert.match(up.trusted.reason, /no pinned TLS host answered/);
    await stopAgent();
  },
);

test(
  "an-impostor-with-the-trusted-domain-but-another-key-is-untrusted-and-always-on-refuses-a-disconnect",
  { timeout: 120_000 },
  async () => {
    await tlsHost.start(fake);
    const c = await startAgent(trustedConfig({ allowDisconnect: false }));
    const up = await waitForStatus(
      c,
      "connected on the impostor's network",
      (x) => x.state === "connected",
      CONNECT_WITHIN_MS,
      {
        context: () => agentLogs(ID),
      },
    );
    assert.ok(up.trusted !== undefined);
    assert.equal(up.trusted.trusted, false);
    assert.match(up.trusted.reason, /matches no pin/);
    await assert.rejects(c.disconnect(), (e: unknown) => {
      assert.ok(e instanceof ControlError);
      assert.equal(e.code, "refused");
      assert.match(e.message, /allowDisconnect: false/);
      return true;
    });
    assert.equal((await c.status()).state, "connected", "still connected after the refused disconnect");
    await stopAgent();
    await tlsHost.stop();
  },
);

test(
  "the-network-handing-out-another-domain-is-a-network-change-and-always-on-connects",
  { timeout: 120_000 },
  async () => {
    const resolv = `/etc/netns/${topo.client.ns}/resolv.conf`;
    const original = readFileSync(resolv, "utf8");
    try {
      await tlsHost.start(real);
      const c = await startAgent(trustedConfig());
      await waitForStatus(c, "the trusted verdict", (x) => x.trusted?.trusted === true, VERDICT_WITHIN_MS, {
        context: () => agentLogs(ID),
      });
      // A DHCP client on another network: the same resolver, another domain (written in place: it is bind-mounted).
      writeFileSync(resolv, original.replace(/^search .*$/m, "search hotel.example.net"));
      const up = await waitForStatus(
        c,
        "connected after the domain changed",
        (x) => x.state === "connected",
        CONNECT_WITHIN_MS,
        { context: () => agentLogs(ID) },
      );
      assert.ok(up.trusted !== undefined);
      assert.equal(up.trusted.trusted, false);
      assert.match(up.trusted.reason, /no trusted network rule matches.*hotel\.example\.net/);
    } finally {
      // detourd first: its disconnect puts back the resolv.conf it saved (the changed one) over whatever is there.
      await stopAgent();
      writeFileSync(resolv, original);
      await tlsHost.stop();
    }
  },
);

test("under-lockdown-the-trusted-hosts-check-still-gets-out-and-detour-stays-down", { timeout: 120_000 }, async () => {
  await tlsHost.start(real);
  const c = await startAgent(trustedConfig({ lockdown: true }));
  const s = await waitForStatus(
    c,
    "the trusted verdict under lockdown",
    (x) => x.trusted?.checkedAt != null && x.killSwitch?.mode === "blocking",
    VERDICT_WITHIN_MS,
    { context: () => agentLogs(ID) },
  );
  // The first check may have run before the table went in: a recheck made under it is what counts.
  const first = s.trusted?.checkedAt ?? 0;
  const again = await waitForStatus(
    c,
    "a recheck under the blocking kill switch",
    (x) => (x.trusted?.checkedAt ?? 0) > first + 1000,
    VERDICT_WITHIN_MS,
    { context: () => agentLogs(ID) },
  );
  assert.ok(again.trusted !== undefined);
  assert.equal(again.trusted.trusted, true, again.trusted.reason);
  assert.equal(again.trusted.rule, "office");
  assert.equal(again.state, "disconnected");
  assert.equal(again.killSwitch?.mode, "blocking");
  const rules = await nsRun(topo.client.ns, ["nft", "list", "ruleset"]);
  assert.match(
    rules,
    new RegExp(`ip daddr ${topo.dns.address.replace(/\./g, "\\.")} tcp dport ${String(TRUSTED_TLS_PORT)} `),
  );
  await stopAgent();
  await tlsHost.stop();
});

test(
  "always-on-by-signed-policy-stays-down-on-the-trusted-network-connects-off-it-and-refuses-a-disconnect",
  { timeout: 120_000 },
  async () => {
    const dir = join(lab.labDirOf(ID), "policy");
    const keysDir = join(dir, "trusted-keys");
    mkdirSync(keysDir, { recursive: true, mode: 0o700 });
    const k = keygen(join(dir, "it"));
    renameSync(k.publicPath, join(keysDir, `${k.keyId}.pem`));
    const now = Date.now();
    const doc = Buffer.from(
      JSON.stringify({
        version: 1,
        issuedAt: new Date(now - 3_600_000).toISOString(),
        expiresAt: new Date(now + 86_400_000).toISOString(),
        organisation: base.organisation,
        settings: { autoConnect: true, allowDisconnect: false, trustedNetworkPolicy: "disconnect" },
      }) + "\n",
    );
    const policyFile = join(dir, "policy.json");
    writeFileSync(policyFile, JSON.stringify(signPolicy(doc, loadPrivateKey(k.privatePath))));
    await tlsHost.start(real);
    // No --connect: only the policy's always-on asks for a connection.
    const c = await startAgent(trustedConfig(), {
      connect: false,
      extraArgs: ["--policy-file", policyFile, "--trusted-keys", keysDir],
    });
    const down = await waitForStatus(
      c,
      "always-on held down by the trusted network",
      (x) => x.trusted?.trusted === true,
      VERDICT_WITHIN_MS,
      { context: () => agentLogs(ID) },
    );
    assert.ok(down.trusted !== undefined);
    assert.deepEqual([down.trusted.alwaysOn, down.trusted.allowDisconnect, down.state], [true, false, "disconnected"]);
    await tlsHost.stop();
    await waitForStatus(
      c,
      "always-on connected off the trusted network",
      (x) => x.state === "connected",
      CONNECT_WITHIN_MS,
      {
        context: () => agentLogs(ID),
      },
    );
    await assert.rejects(c.disconnect(), (e: unknown) => {
      assert.ok(e instanceof ControlError);
      assert.equal(e.code, "refused");
      assert.match(e.message, /allowDisconnect: false/);
      return true;
    });
    await stopAgent();
  },
);
