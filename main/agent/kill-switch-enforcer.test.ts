/**
 * The kill switch never fails open silently: the real daemon on a fake platform whose nft fails at exactly the
 * wrong moment, and whose firewall other software rewrites. What a user would notice: connect's answer, status,
 * events, and what the (fake) kernel holds.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DetourConfig } from "../core/config/schema.ts";
import { testConfig, writeTestKey, type TestConfigOptions } from "../../test/fakes/config.ts";
import type { ConnectionEvent } from "../core/connection/types.ts";
import { startDaemon, type DaemonRig } from "../../test/fakes/daemon-harness.ts";
import { parseNameservers } from "./data-plane.ts";
import { backstopFor, KILL_SWITCH_RETRY, KILL_SWITCH_VERIFY_INTERVAL_MS } from "./kill-switch-enforcer.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-ks-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});
const keyFile = writeTestKey(root);
const OWN_GID = 64950;

function config(over: TestConfigOptions = {}): DetourConfig {
  return testConfig({ keyFile, ...over });
}

interface Rig extends DaemonRig {
  /** The kill switch's changes that subscribers heard. */
  readonly events: Extract<ConnectionEvent, { type: "kill-switch" }>[];
}

async function rig(cfg: DetourConfig = config(), resolvConf = "nameserver 198.18.0.53\n"): Promise<Rig> {
  const d = await startDaemon({ root, config: cfg, gateways: { gw1: {}, gw2: {} }, resolvConf, ownGroup: OWN_GID });
  return {
    ...d,
    get events() {
      return d.heard.flatMap(({ event }) => (event.type === "kill-switch" ? [event] : []));
    },
  };
}

test("connect-answers-fallback-not-in-force-when-nft-fails-and-in-force-once-the-retry-applies", async () => {
  const r = await rig();
  r.world.failing.add("firewall.killSwitch");
  const answer = await r.control.connect();
  assert.equal(answer.killSwitch.state, "fallback", "connect must not claim a kill switch that is not in force");
  assert.equal(r.world.firewallTable, "fallback", "the minimal blocking table went in instead");
  assert.match(answer.killSwitch.lastError ?? "", /firewall\.killSwitch failed/);
  await r.clock.advance(10);
  const s = r.control.status().killSwitch;
  assert.deepEqual([s.state, s.applyFailures, s.fallbacks], ["fallback", 1, 1]);
  assert.notEqual(s.nextRetryAt, null, "a retry is scheduled");
  assert.deepEqual(
    r.events.map((e) => e.change),
    ["apply-failed", "fallback"],
  );
  // nft works again: the retry puts the real rules in, and says so.
  r.world.failing.delete("firewall.killSwitch");
  await r.clock.advance(KILL_SWITCH_RETRY.initialMs + 10);
  const back = r.control.status().killSwitch;
  assert.equal(back.state, "in-force");
  assert.equal(back.nextRetryAt, null);
  assert.notEqual(r.world.killSwitch, null);
  assert.equal(r.world.firewallTable, JSON.stringify(r.world.killSwitch));
  assert.equal(r.events.at(-1)?.change, "in-force");
});

test("connect-answers-in-force-only-after-the-apply-succeeded", async () => {
  const r = await rig();
  const answer = await r.control.connect();
  assert.equal(answer.killSwitch.state, "in-force");
  assert.equal(answer.killSwitch.mode, "tunnel-only");
  assert.equal(r.world.killSwitch?.state, "resolving", "the rules for connecting were in the kernel before the answer");
  assert.equal(r.events.length, 0, "nothing to report");
});

test("apply-and-fallback-both-failing-is-reported-as-failed-and-retried-with-growing-backoff", async () => {
  const r = await rig();
  r.world.failing.add("firewall.killSwitch");
  r.world.failing.add("firewall.fallback");
  const answer = await r.control.connect();
  assert.equal(answer.killSwitch.state, "failed");
  assert.match(answer.killSwitch.lastError ?? "", /fallback table failed too/);
  const waits: number[] = [];
  let last = r.control.status().killSwitch;
  for (let i = 0; i < 4; i++) {
    const before = r.clock.wall();
    const retryAt = last.nextRetryAt;
    assert.notEqual(retryAt, null);
    waits.push((retryAt ?? 0) - before);
    await r.clock.advance((retryAt ?? 0) - before + 1);
    last = r.control.status().killSwitch;
  }
  for (let i = 1; i < waits.length; i++)
    assert.ok((waits[i] ?? 0) >= (waits[i - 1] ?? 0), `backoff grows: ${waits.join(", ")}`);
  assert.ok(last.applyFailures >= 5);
  assert.deepEqual(
    r.events.filter((e) => e.change === "failed").length,
    1,
    "the change into failed is one event; each retry's failure is one apply-failed",
  );
  r.world.failing.clear();
  await r.clock.advance(KILL_SWITCH_RETRY.maxMs + 10);
  assert.equal(r.control.status().killSwitch.state, "in-force");
  assert.equal(r.world.killSwitch?.mode, "tunnel-only");
});

test("a-table-deleted-or-altered-by-other-software-is-restored-counted-and-reported", async () => {
  const r = await rig();
  await r.control.connect();
  await r.clock.advance(2000);
  assert.equal(r.control.status().state, "connected");
  const wanted = r.world.firewallTable;
  assert.notEqual(wanted, null);
  // `nft delete table inet detour_killswitch`, and nft monitor tells.
  r.world.firewallTable = null;
  r.world.firewallWatch?.changed();
  r.world.firewallWatch?.changed();
  await r.clock.advance(5);
  assert.equal(r.world.firewallTable, wanted, "restored");
  // A rule removed or changed.
  r.world.firewallTable = (wanted ?? "").replace("198.19.0.0/24", "198.19.0.0/25");
  r.world.firewallWatch?.changed();
  await r.clock.advance(5);
  assert.equal(r.world.firewallTable, wanted, "restored");
  // Another table changing is no restoration.
  r.world.firewallWatch?.changed();
  await r.clock.advance(5);
  const s = r.control.status().killSwitch;
  assert.deepEqual([s.state, s.restorations], ["in-force", 2]);
  assert.deepEqual(
    r.events.map((e) => [e.change, e.status.restorations]),
    [
      ["restored", 1],
      ["restored", 2],
    ],
  );
  assert.match(r.events[0]?.detail ?? "", /table missing/);
  assert.match(r.events[1]?.detail ?? "", /table altered/);
});

test("a-deletion-the-watcher-missed-is-caught-by-the-periodic-check", async () => {
  const r = await rig(config({ lockdown: true }));
  await r.clock.advance(100);
  assert.equal(r.world.killSwitch?.mode, "blocking");
  r.world.firewallTable = null;
  await r.clock.advance(KILL_SWITCH_VERIFY_INTERVAL_MS + 10);
  assert.equal(r.world.firewallTable, JSON.stringify(r.world.killSwitch));
  assert.equal(r.control.status().killSwitch.restorations, 1);
});

test("a-flushed-fallback-table-is-put-back-as-the-fallback", async () => {
  const r = await rig(config({ lockdown: true }));
  r.world.failing.add("firewall.killSwitch");
  await r.control.connect();
  r.world.firewallTable = null;
  r.world.firewallWatch?.changed();
  await r.clock.advance(5);
  assert.equal(r.world.firewallTable, "fallback");
  assert.deepEqual([r.control.status().killSwitch.state, r.control.status().killSwitch.restorations], ["fallback", 1]);
});

test("the-firewall-watcher-dying-is-counted-and-reported", async () => {
  const r = await rig();
  r.world.firewallWatch?.watcherDied("nft monitor exited (SIGKILL)");
  assert.equal(r.control.status().killSwitch.watcherRestarts, 1);
  await r.clock.advance(1);
  assert.equal(r.events.at(-1)?.change, "watcher-restarted");
});

test("allowances-are-bound-to-detourds-group-and-its-own-resolvers-are-allowed-while-blocking", async () => {
  const r = await rig(
    config({ lockdown: true }),
    "# the network's\nnameserver 198.18.0.53\nnameserver 127.0.0.53\nnameserver fe80::1%eth0\nnameserver 2001:db8::53\n",
  );
  await r.clock.advance(100);
  const ks = r.world.killSwitch;
  assert.equal(ks?.mode, "blocking");
  assert.equal(ks.ownGroup, OWN_GID);
  assert.deepEqual(ks.ownResolvers, ["198.18.0.53", "2001:db8::53"]);
  assert.equal(r.control.status().killSwitch.ownGroup, OWN_GID);
});

test("nameservers-are-read-from-resolv-conf-as-the-resolver-library-does", () => {
  assert.deepEqual(
    parseNameservers(
      "search corp\nnameserver 10.0.0.1\n  nameserver   10.0.0.2  \nnameserver bogus\nnameserver 10.0.0.1\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
    ),
    ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
  );
});

test("the-routing-backstop-holds-the-protected-networks-back-with-the-kill-switch-and-goes-with-it", async () => {
  const r = await rig();
  assert.equal(r.world.backstop, null, "disconnected without lockdown: nothing held back");
  await r.control.connect();
  assert.deepEqual(r.world.backstop, { prefixes: ["198.19.0.0/24"], bypass: [] });
  await r.clock.advance(2000);
  await r.control.shutdown();
  assert.equal(r.world.backstop, null);
  assert.equal(r.world.firewallWatch, null, "the watcher stopped at exit");
});

test("a-failed-routing-backstop-is-reported-and-retried-while-the-firewall-rules-stay-in-force", async () => {
  const r = await rig();
  r.world.failing.add("firewall.backstop");
  const answer = await r.control.connect();
  assert.equal(answer.killSwitch.state, "in-force", "the nft layer is in");
  await r.clock.advance(1);
  const s = r.control.status().killSwitch;
  assert.equal(s.state, "in-force");
  assert.match(s.lastError ?? "", /routing backstop/);
  assert.notEqual(s.nextRetryAt, null);
  assert.equal(r.events.at(-1)?.change, "apply-failed");
  r.world.failing.delete("firewall.backstop");
  await r.clock.advance(KILL_SWITCH_RETRY.initialMs + 10);
  assert.notEqual(r.world.backstop, null);
  assert.equal(r.control.status().killSwitch.nextRetryAt, null);
});

test("backstop-excepts-gateways-inside-protected-networks-and-skips-full-tunnels", () => {
  const base = {
    mode: "tunnel-only" as const,
    state: "connected" as const,
    fullTunnel: false,
    protectedNetworks: ["198.19.0.0/24"],
    tunnelDevices: [],
    gatewayEndpoints: [
      { address: "198.19.0.7", protocol: "udp" as const, port: 51820 },
      { address: "198.19.0.7", protocol: "udp" as const, port: 500 },
      { address: "198.18.1.2", protocol: "udp" as const, port: 51820 },
      { address: "2001:db8::7", protocol: "udp" as const, port: 51820 },
    ],
    dnsServers: [],
    ownResolvers: [],
    trustedHosts: [],
    ownGroup: null,
    blockUnderlay: false,
    underlayUpkeep: false,
  };
  assert.deepEqual(backstopFor(base), { prefixes: ["198.19.0.0/24"], bypass: ["198.19.0.7/32"] });
  assert.equal(backstopFor({ ...base, fullTunnel: true, protectedNetworks: ["0.0.0.0/0"] }), null);
  assert.equal(backstopFor(null), null);
});

test("backstop-throws-allowed-local-networks-so-the-prohibit-does-not-undo-the-allowance", () => {
  const rules = {
    mode: "tunnel-only" as const,
    state: "connected" as const,
    fullTunnel: false,
    protectedNetworks: ["172.16.0.0/12"],
    tunnelDevices: [],
    gatewayEndpoints: [],
    dnsServers: [],
    ownResolvers: [],
    trustedHosts: [],
    ownGroup: null,
    blockUnderlay: false,
    underlayUpkeep: false,
    localNetworks: [{ prefix: "172.17.0.0/16", dev: "docker0" }],
  };
  assert.deepEqual(backstopFor(rules), { prefixes: ["172.16.0.0/12"], bypass: ["172.17.0.0/16"] });
});

test("kill-switch-changes-reach-telemetry-as-events-and-counted-changes", async () => {
  const r = await rig(config({ telemetry: { endpoint: "http://127.0.0.1:9/", intervalMs: 3_600_000 } }));
  try {
    r.world.failing.add("firewall.killSwitch");
    await r.control.connect();
    await r.clock.advance(1);
    await r.control.flushTelemetry();
    const spool = join(r.dir, "state", "telemetry-spool");
    const bytes = (kind: string): string =>
      readdirSync(spool)
        .filter((f) => f.endsWith(`.${kind}`))
        .map((f) => readFileSync(join(spool, f)).toString("latin1"))
        .join("");
    const logs = bytes("logs");
    assert.match(logs, /detour\.killswitch/, "an event per change");
    assert.match(logs, /apply-failed/);
    assert.match(logs, /"change":"fallback"/);
    assert.match(bytes("metrics"), /detour\.killswitch\.changes/, "and a counter");
  } finally {
    await r.control.shutdown();
  }
});

test("a-restoration-that-nft-refuses-falls-back-and-says-so", async () => {
  const r = await rig(config({ lockdown: true }));
  await r.clock.advance(100);
  assert.equal(r.control.status().killSwitch.state, "in-force");
  // Someone flushes the ruleset, and nft fails exactly when detourd puts its table back.
  r.world.firewallTable = null;
  r.world.failing.add("firewall.killSwitch");
  r.world.firewallWatch?.changed();
  await r.clock.advance(5);
  assert.equal(r.world.firewallTable, "fallback", "never left without a table");
  const s = r.control.status().killSwitch;
  assert.deepEqual([s.state, s.restorations, s.fallbacks], ["fallback", 1, 1]);
  assert.deepEqual(
    r.events.map((e) => e.change),
    ["apply-failed", "fallback", "restored"],
  );
  r.world.failing.delete("firewall.killSwitch");
  await r.clock.advance(KILL_SWITCH_RETRY.initialMs + 10);
  assert.equal(r.control.status().killSwitch.state, "in-force");
  assert.equal(r.world.firewallTable, JSON.stringify(r.world.killSwitch));
});
