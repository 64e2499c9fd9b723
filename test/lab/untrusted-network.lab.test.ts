/**
 * Inputs from the network are not trusted, shown with the real lab: the portal is fetched over https with its
 * certificate verified against the lab's throwaway CA (or its key pinned), a wrong pin or an unknown CA is refused,
 * and a gateway address that the portal or the lab's dnsmasq gives inside a protected network or on loopback is
 * refused: detourd reports it in status and the kill switch's rules (read with nft from the client namespace)
 * hold no allowance for it. Last, gw1's ocserv is made hostile (it pushes 0.0.0.0/1 + 128.0.0.0/1, gw2's network,
 * a resolver outside the protected networks and 127.0.0.1): only what the configuration allows is routed, and the
 * outside resolver is reached through the tunnel and protected.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ControlClient } from "../../main/client/control-client.ts";
import { parseConfig, type DetourConfig } from "../../main/core/config/schema.ts";
import type { DiscoveryResult } from "../../main/agent/discovery.ts";
import { agentLogs, agentStart, agentStop } from "./agent.ts";
import { gatewayPaths } from "./gateway-engines.ts";
import { nsRun } from "./exec.ts";
import * as lab from "./lab.ts";
import { startPortal, type LabPortal } from "./portal.ts";
import { HOSTILE_NAMES } from "./services.ts";
import { runInNetns } from "./tools/agent-io-child.ts";
import { waitForStatus } from "./wait-status.ts";

const ID = "nin";
/** detourd's own discovery bound is 2 s; the lab answers in milliseconds. */
const DISCOVERY_TIMEOUT_MS = 2000;
/** gw1 is configured with its address; its race takes well under a second, a loaded machine several. */
const CONNECT_WITHIN_MS = 20_000;

const topo = lab.topologyOf(ID);
let base: DetourConfig;
let clientConfigFile = "";
let portal: LabPortal | null = null;
let client: ControlClient | null = null;

const gw = (name: string): { name: string; hostname: string; address: string } => {
  const g = topo.gateways.find((x) => x.name === name);
  if (g === undefined) throw new Error(`no ${name}`);
  return g;
};

before(async () => {
  await lab.down(ID);
  const state = await lab.up(ID);
  clientConfigFile = state.clientConfig;
  const parsed = parseConfig(JSON.parse(readFileSync(clientConfigFile, "utf8")));
  if (!parsed.ok) throw new Error(`lab config invalid: ${JSON.stringify(parsed.issues)}`);
  base = parsed.config;
  portal = await startPortal(ID, {
    gateways: [
      { name: "gw2", hostname: gw("gw2").hostname, address: gw("gw2").address, priority: 20, region: "lab" },
      // An intranet host named as a gateway: accepted, it would become an allowance to corp outside the tunnel.
      { name: "gw3", hostname: "gw3-portal.lab.detour.test", address: "198.19.0.1", priority: 30, region: "lab" },
    ],
  });
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await portal?.stop();
  await lab.down(ID);
});

/** The lab's configuration with gw2 and gw3 known only by name, no SRV records, and the portal as given. */
function portalConfig(tls: { caFile?: string; pins?: string[] }): DetourConfig {
  if (portal === null) throw new Error("the portal did not start");
  return {
    ...base,
    gateways: base.gateways.map((g) =>
      g.name === "gw1" ? g : { ...g, address: undefined, hostname: `${g.name}-portal.lab.detour.test` },
    ),
    discovery: {
      ...base.discovery,
      dns: { servers: base.discovery.dns?.servers ?? [], srv: [] },
      portalUrl: portal.url,
      portalTls: tls,
    },
  };
}

async function discoverInClient(config: DetourConfig): Promise<DiscoveryResult> {
  const r = await runInNetns<DiscoveryResult>(topo.client.ns, {
    op: "discover",
    config,
    timeoutMs: DISCOVERY_TIMEOUT_MS,
    probe: false,
  });
  console.log(`problems: ${JSON.stringify(r.problems.map((p) => p.message))}`);
  return r;
}

test(
  "the-portal-answers-over-https-verified-by-the-lab-ca-and-its-intranet-address-is-refused",
  { timeout: 60_000 },
  async () => {
    if (portal === null) throw new Error("the portal did not start");
    const r = await discoverInClient(portalConfig({ caFile: portal.caFile }));
    const by = new Map(r.candidates.map((c) => [c.name, c]));
    assert.equal(by.get("gw2")?.address, gw("gw2").address, "gw2's address came from the https portal");
    assert.ok(by.get("gw2")?.sources.includes("portal"));
    assert.equal(by.get("gw3")?.address, null, "gw3's intranet address is not used");
    const refused = r.problems.filter((p) => p.refused !== undefined);
    assert.deepEqual(
      refused.map((p) => [p.source, p.refused?.gateway, p.refused?.address]),
      [["portal", "gw3", "198.19.0.1"]],
    );
    assert.match(refused[0]?.message ?? "", /inside the protected network 198\.19\.0\.0\/24/);
    assert.ok(
      !r.problems.some((p) => p.source === "portal" && p.refused === undefined && !/no address/.test(p.message)),
      "the portal itself answered",
    );
  },
);

test(
  "a-wrong-pin-or-a-ca-that-never-signed-the-portal-refuses-it-and-the-right-pin-is-enough",
  { timeout: 60_000 },
  async () => {
    if (portal === null) throw new Error("the portal did not start");
    const wrong = await discoverInClient(portalConfig({ pins: [`sha256/${"A".repeat(43)}=`] }));
    assert.match(wrong.problems.map((p) => p.message).join("\n"), /matches no configured pin/);
    assert.equal(wrong.candidates.find((c) => c.name === "gw2")?.address, null);
    const unknownCa = await discoverInClient(portalConfig({}));
    assert.match(
      unknownCa.problems.find((p) => p.source === "portal")?.message ?? "",
      /certificate|CERT|verify/i,
      "the system's CAs never signed the lab's throwaway CA",
    );
    assert.equal(unknownCa.candidates.find((c) => c.name === "gw2")?.address, null);
    const pinned = await discoverInClient(portalConfig({ pins: [portal.pin] }));
    assert.equal(pinned.candidates.find((c) => c.name === "gw2")?.address, gw("gw2").address);
  },
);

test(
  "a-hostile-dns-answer-for-a-gateway-is-refused-and-no-kill-switch-allowance-appears",
  { timeout: 90_000 },
  async () => {
    const [intranet, loopback] = Object.keys(HOSTILE_NAMES);
    if (intranet === undefined || loopback === undefined) throw new Error("the lab has no hostile names");
    const config: DetourConfig = {
      ...base,
      gateways: base.gateways.map((g) =>
        g.name === "gw2"
          ? { ...g, address: undefined, hostname: intranet }
          : g.name === "gw3"
            ? { ...g, address: undefined, hostname: loopback }
            : g,
      ),
      discovery: { ...base.discovery, dns: { servers: base.discovery.dns?.servers ?? [], srv: [] } },
    };
    writeFileSync(clientConfigFile, JSON.stringify(config, null, 2));
    const a = await agentStart(ID, { connect: true });
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const s = await waitForStatus(
      client,
      "connected to gw1 with both hostile answers refused",
      (x) => x.state === "connected" && x.gateway === "gw1" && (x.refused ?? []).length >= 2,
      CONNECT_WITHIN_MS,
      { context: () => agentLogs(ID) },
    );
    assert.deepEqual((s.refused ?? []).map((x) => [x.kind, x.gateway, x.value, x.source]).sort(), [
      ["gateway-address", "gw2", "198.19.0.1", "dns"],
      ["gateway-address", "gw3", "127.0.0.1", "dns"],
    ]);
    const reasons = (s.refused ?? []).map((x) => x.reason).join("\n");
    assert.match(reasons, /inside the protected network 198\.19\.0\.0\/24/);
    assert.match(reasons, /loopback/);
    const rules = await nsRun(topo.client.ns, ["nft", "list", "ruleset"]);
    assert.ok(rules.includes(`ip daddr ${gw("gw1").address} `), "gw1's endpoints are allowed (the rules are in force)");
    assert.ok(!rules.includes("daddr 198.19.0.1 "), "no allowance to the intranet host");
    assert.ok(!rules.includes("127.0.0.1"), "no allowance to loopback");
    client.close();
    client = null;
    await agentStop(ID);
  },
);

/** A resolver outside every protected network (the lab has no host there: only the routing matters). */
const OUTSIDE_RESOLVER = "192.0.2.53";

test("a-hostile-ocserv-push-cannot-widen-the-split-tunnel-nor-put-dns-in-clear", { timeout: 120_000 }, async () => {
  const g1 = topo.gateways.find((x) => x.name === "gw1");
  if (g1 === undefined) throw new Error("no gw1");
  const confFile = gatewayPaths(join(lab.labDirOf(ID)), g1).ocservConf;
  const honest = readFileSync(confFile, "utf8");
  const hostile = honest.replace(
    /^route = .*\ndns = .*$/m,
    [
      "route = 0.0.0.0/128.0.0.0",
      "route = 128.0.0.0/128.0.0.0",
      "route = 198.19.0.0/255.255.255.128",
      `route = ${gw("gw2").address.replace(/\.\d+$/, ".0")}/255.255.255.0`,
      `dns = ${OUTSIDE_RESOLVER}`,
      "dns = 127.0.0.1",
    ].join("\n"),
  );
  assert.notEqual(hostile, honest, "the lab's ocserv.conf has the route and dns lines this test replaces");
  await lab.kill("gw1", "anyconnect", ID);
  writeFileSync(confFile, hostile, { mode: 0o600 });
  await lab.restore("gw1", "anyconnect", ID);
  const resolvConf = join(lab.labDirOf(ID), "untrusted-resolv.conf");
  writeFileSync(resolvConf, "nameserver 198.18.53.2\n");
  try {
    // gw1 over AnyConnect only, no configured tunnel resolvers: what the gateway pushes is all there is.
    const config: DetourConfig = {
      ...base,
      tunnelDns: undefined,
      gateways: base.gateways.filter((g) => g.name === "gw1"),
      race: { ...base.race, order: ["anyconnect-tls"] },
      standby: { ...base.standby, mode: "off" },
    };
    writeFileSync(clientConfigFile, JSON.stringify(config, null, 2));
    const a = await agentStart(ID, { connect: true, extraArgs: ["--resolv-conf", resolvConf] });
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const s = await waitForStatus(
      client,
      "connected to gw1 over AnyConnect with the hostile push refused",
      (x) => x.state === "connected" && x.gateway === "gw1" && (x.refused ?? []).length >= 4,
      CONNECT_WITHIN_MS,
      { context: () => agentLogs(ID) },
    );
    const refused = (s.refused ?? []).map((x) => [x.kind, x.value]).sort();
    assert.deepEqual(refused, [
      ["pushed-dns", "127.0.0.1"],
      ["pushed-route", "0.0.0.0/1"],
      ["pushed-route", "128.0.0.0/1"],
      ["pushed-route", `${gw("gw2").address.replace(/\.\d+$/, ".0")}/24`],
    ]);
    // The refusals are reported as the plan is made; the table follows once the kill switch protects the pushes.
    let table = "";
    for (let i = 0; i < 30; i++) {
      table = await nsRun(topo.client.ns, ["ip", "-4", "route", "show", "table", "5000"]);
      if (table.includes(`${OUTSIDE_RESOLVER} dev `)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    console.log(`protected table:\n${table}`);
    assert.doesNotMatch(table, /^(0\.0\.0\.0|128\.0\.0\.0)\/1 /m, "no near-full tunnel");
    assert.match(table, /^198\.19\.0\.0\/24 dev /m, "the protected network goes through the tunnel");
    assert.match(table, /^198\.19\.0\.0\/25 dev /m, "a push inside the protected network is taken");
    assert.match(
      table,
      new RegExp(`^${OUTSIDE_RESOLVER.replace(/\./g, "\\.")} dev `, "m"),
      "the resolver goes through the tunnel",
    );
    // resolv.conf is written right behind the routes, on the data plane's chain: wait for it, bounded.
    const pushed = new RegExp(`^nameserver ${OUTSIDE_RESOLVER.replace(/\./g, "\\.")}$`, "m");
    let dns = readFileSync(resolvConf, "utf8");
    for (let i = 0; i < 30 && !pushed.test(dns); i++) {
      await new Promise((r) => setTimeout(r, 100));
      dns = readFileSync(resolvConf, "utf8");
    }
    assert.match(dns, pushed, `the pushed resolver is in resolv.conf; detourd's log:\n${agentLogs(ID)}`);
    assert.doesNotMatch(dns, /^nameserver 127\.0\.0\.1$/m, "the loopback resolver is dropped");
    const rules = await nsRun(topo.client.ns, ["nft", "list", "ruleset"]);
    assert.ok(rules.includes(OUTSIDE_RESOLVER), "the pushed resolver is in the kill switch's protected set");
  } finally {
    client?.close();
    client = null;
    await agentStop(ID);
    await lab.kill("gw1", "anyconnect", ID);
    writeFileSync(confFile, honest, { mode: 0o600 });
    await lab.restore("gw1", "anyconnect", ID);
  }
});
