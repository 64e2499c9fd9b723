/**
 * The kill switch under attack and bound to detourd, seen from the network: other software flushing the ruleset,
 * deleting detourd's table or altering a rule while an application streams to corp (restored within a second,
 * and the router counts no protected packet); a local process that is not detourd cannot use the underlay
 * allowances (discovery resolver, gateway endpoints) while detourd and its engines still connect; and detourd's
 * own name lookups work while the kill switch blocks. The router's witness counts what leaves the client.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { after, afterEach, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop, LAB_OWN_GID } from "./agent.ts";
import { nsRun } from "./exec.ts";
import * as lab from "./lab.ts";
import { ProbeClient } from "./probe-client.ts";
import { waitForStatus } from "./wait-status.ts";

const ID = "kfault";
const WITNESS_TABLE = "detour_ks_witness";
const KS_TABLE = ["inet", "detour_killswitch"] as const;
const CONNECT_WITHIN_MS = 15_000;
/** The threat model's bound: detourd notices and restores within a second. */
const RESTORE_WITHIN_MS = 1000;
/** Source ports of the test's own "other process" traffic, so the router tells it from detourd's. */
const SPORT = { dns: 40053, gwUdp: 40820, gwTcp: 40443 } as const;

let probe: ProbeClient | undefined;
let client: ControlClient | null = null;
let original: string | null = null;

function topo(): ReturnType<typeof lab.topologyOf> {
  return lab.topologyOf(ID);
}

/** Packets the router's witness counted under `comment` (from the client's underlay). */
async function witnessed(comment: string): Promise<number> {
  const out = await nsRun(topo().router.ns, ["nft", "-j", "list", "table", "inet", WITNESS_TABLE]);
  const doc = JSON.parse(out) as {
    nftables: { rule?: { comment?: string; expr: { counter?: { packets: number } }[] } }[];
  };
  for (const item of doc.nftables) {
    if (item.rule?.comment !== comment) continue;
    for (const e of item.rule.expr) if (e.counter !== undefined) return e.counter.packets;
  }
  return NaN;
}

function writeConfig(change: (cfg: Record<string, unknown>) => Record<string, unknown>): void {
  const state = lab.loadState(ID);
  original ??= readFileSync(state.clientConfig, "utf8");
  writeFileSync(state.clientConfig, JSON.stringify(change(JSON.parse(original) as Record<string, unknown>), null, 2), {
    mode: 0o600,
  });
}

function mustProbe(): ProbeClient {
  if (probe === undefined) throw new Error("the probe agent did not start");
  return probe;
}

/** The kill switch's table as nft shows it without counters, or null when it is missing. */
async function table(): Promise<string | null> {
  try {
    return await nsRun(topo().client.ns, ["nft", "-s", "list", "table", ...KS_TABLE]);
  } catch {
    return null;
  }
}

/** Polls (every 10 ms, bounded) until the table equals `want`; the time it took, or null if it never did. */
async function restoredWithin(want: string, boundMs: number): Promise<number | null> {
  const t0 = performance.now();
  for (let i = 0; i < boundMs / 10 + 1 && performance.now() - t0 < boundMs; i++) {
    if ((await table()) === want) return Math.round(performance.now() - t0);
    await sleep(10);
  }
  return null;
}

/**
 * `count` datagrams (UDP) or connection attempts (TCP) from the client namespace by a process that is not
 * detourd, or (gid) one running as detourd's group; errors (the kill switch refusing the send) are expected.
 */
async function sendAsOther(
  proto: "udp" | "tcp",
  host: string,
  port: number,
  sport: number,
  opts: { count: number; gid?: number },
): Promise<void> {
  const script =
    proto === "udp"
      ? `const s=require("dgram").createSocket("udp4");let n=0;s.on("error",()=>{});s.bind(${sport},()=>{const go=()=>{if(n++>=${opts.count}){s.close();return;}s.send(Buffer.from("x"),${port},"${host}",()=>{});setTimeout(go,20);};go();});`
      : `const net=require("net");let n=0;const go=()=>{if(n++>=${opts.count})return;const c=net.connect({host:"${host}",port:${port},localPort:${sport}});c.on("error",()=>{});c.on("connect",()=>c.destroy());setTimeout(()=>{c.destroy();go();},300);};go();`;
  const prefix = opts.gid === undefined ? [] : ["setpriv", `--regid=${String(opts.gid)}`, "--clear-groups"];
  await nsRun(topo().client.ns, [...prefix, process.execPath, "-e", script]);
}

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  const t = topo();
  // The leak path: without a kill switch, corp traffic with no tunnel route goes to the router.
  await nsRun(t.client.ns, ["ip", "route", "add", "198.19.0.0/16", "via", t.client.routerAddress, "metric", "500"]);
  const gw1 = t.gateways[0]?.address ?? "";
  await nsRun(t.router.ns, ["nft", "-f", "-"], {
    input: [
      `table inet ${WITNESS_TABLE} {`,
      " chain witness {",
      "  type filter hook prerouting priority -300; policy accept;",
      '  iifname "to-client" ip daddr 198.19.0.0/16 counter comment "protected"',
      `  iifname "to-client" ip daddr ${t.dns.address} udp sport ${String(SPORT.dns)} counter comment "other-dns"`,
      `  iifname "to-client" ip daddr ${gw1} udp sport ${String(SPORT.gwUdp)} counter comment "other-gw-udp"`,
      `  iifname "to-client" ip daddr ${gw1} tcp sport ${String(SPORT.gwTcp)} counter comment "other-gw-tcp"`,
      " }",
      "}",
      "",
    ].join("\n"),
  });
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", t.client.ns] });
  await mustProbe().udp({ host: "198.19.0.1", port: 7, count: 5, intervalMs: 10, timeoutMs: 200 });
  assert.ok((await witnessed("protected")) >= 5, "control: without a kill switch the leak path carries corp traffic");
});

afterEach(async () => {
  client?.close();
  client = null;
  await agentStop(ID);
  if (original !== null) writeFileSync(lab.loadState(ID).clientConfig, original, { mode: 0o600 });
  // Under lockdown the kill switch (and its routing backstop) outlive detourd: the next test starts clean.
  await nsRun(topo().client.ns, ["nft", "delete", "table", ...KS_TABLE]).catch(() => undefined);
  await nsRun(topo().client.ns, ["ip", "rule", "del", "pref", "230"]).catch(() => undefined);
  await nsRun(topo().client.ns, ["ip", "route", "flush", "table", "5001"]).catch(() => undefined);
  await lab.heal(ID);
});

after(async () => {
  await probe?.close();
  await lab.down(ID);
});

test(
  "the-ruleset-flushed-the-table-deleted-or-a-rule-altered-is-restored-within-a-second-and-nothing-leaks",
  {
    timeout: 120_000,
  },
  async () => {
    writeConfig((c) => ({ ...c, lockdown: true }));
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await waitForStatus(c, "the kill switch in force", (s) => s.killSwitch?.state === "in-force", 10_000);
    await sleep(300);
    const want = await table();
    assert.notEqual(want, null);
    // The second layer is in: protected networks are unroutable outside a tunnel whatever happens to nft.
    const backstop = await nsRun(topo().client.ns, ["ip", "route", "show", "table", "5001"]);
    assert.match(backstop, /prohibit 198\.19\.0\.0\/24/, backstop);
    assert.match(await nsRun(topo().client.ns, ["ip", "rule", "show", "pref", "230"]), /lookup 5001/);
    const base = await witnessed("protected");
    // An application keeps sending to corp through every gap (100 packets a second).
    const traffic = mustProbe().stream({ host: "198.19.0.1", port: 7, ratePerSec: 100, durationMs: 9000 });
    await sleep(500);
    const tampers: [string, string[]][] = [
      ["nft flush ruleset", ["nft", "flush", "ruleset"]],
      ["nft delete table", ["nft", "delete", "table", ...KS_TABLE]],
    ];
    const took: Record<string, number | null> = {};
    const leakedBy: Record<string, number> = {};
    for (const [what, argv] of tampers) {
      const before = await witnessed("protected");
      await nsRun(topo().client.ns, argv);
      took[what] = await restoredWithin(want ?? "", 3000);
      await sleep(500);
      leakedBy[what] = (await witnessed("protected")) - before;
    }
    // A rule altered: the final catch-all drop removed by its handle.
    const listing = await nsRun(topo().client.ns, ["nft", "-a", "list", "chain", ...KS_TABLE, "output"]);
    const handle = /comment "underlay-blocked" # handle (\d+)/.exec(listing)?.[1];
    assert.ok(handle !== undefined, listing);
    const beforeRule = await witnessed("protected");
    await nsRun(topo().client.ns, ["nft", "delete", "rule", ...KS_TABLE, "output", "handle", handle]);
    took["rule deleted"] = await restoredWithin(want ?? "", 3000);
    await sleep(500);
    leakedBy["rule deleted"] = (await witnessed("protected")) - beforeRule;
    await traffic;
    const leaked = (await witnessed("protected")) - base;
    const s = await c.status();
    console.log(
      `restored after: ${JSON.stringify(took)} ms; restorations counted: ${String(s.killSwitch?.restorations)}; protected packets leaked: ${String(leaked)} ${JSON.stringify(leakedBy)}`,
    );
    for (const [what, ms] of Object.entries(took))
      assert.ok(
        ms !== null && ms < RESTORE_WITHIN_MS,
        `${what}: restored within ${String(RESTORE_WITHIN_MS)} ms (${String(ms)})`,
      );
    assert.equal(leaked, 0, "no protected packet left the client while its table was gone or altered");
    assert.ok((s.killSwitch?.restorations ?? 0) >= 3, "each restoration is counted");
    assert.equal(s.killSwitch?.state, "in-force");
    assert.equal(s.killSwitch.applyFailures, 0, `no failure: ${String(s.killSwitch.lastError)}`);
  },
);

test(
  "only-detourd-and-its-engines-may-use-the-discovery-resolver-and-gateway-endpoints-while-blocking",
  {
    timeout: 120_000,
  },
  async () => {
    writeConfig((c) => ({ ...c, lockdown: true }));
    const t = topo();
    const gw1 = t.gateways[0]?.address ?? "";
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await waitForStatus(c, "the blocking kill switch", (s) => s.killSwitch?.mode === "blocking", 10_000);
    // Another process (root, its own group): a DNS tunnel to the discovery resolver, the gateway's ports.
    await sendAsOther("udp", t.dns.address, 53, SPORT.dns, { count: 5 });
    await sendAsOther("udp", gw1, 51820, SPORT.gwUdp, { count: 5 });
    await sendAsOther("tcp", gw1, 443, SPORT.gwTcp, { count: 2 });
    const other = {
      dns: await witnessed("other-dns"),
      udp: await witnessed("other-gw-udp"),
      tcp: await witnessed("other-gw-tcp"),
    };
    // Control: the same sends as detourd's group pass, so the witness would have seen them.
    await sendAsOther("udp", t.dns.address, 53, SPORT.dns, { count: 5, gid: LAB_OWN_GID });
    await sendAsOther("udp", gw1, 51820, SPORT.gwUdp, { count: 5, gid: LAB_OWN_GID });
    const own = { dns: (await witnessed("other-dns")) - other.dns, udp: (await witnessed("other-gw-udp")) - other.udp };
    console.log(
      `reached the router while blocking: other process ${JSON.stringify(other)}, detourd's group ${JSON.stringify(own)}`,
    );
    assert.deepEqual(other, { dns: 0, udp: 0, tcp: 0 }, "a process that is not detourd gets nothing through");
    assert.ok(own.dns >= 5 && own.udp >= 5, "detourd's group is let through (the witness works)");
    assert.equal((await c.status()).killSwitch?.ownGroup, LAB_OWN_GID);
    // detourd and its engines still connect under lockdown.
    await c.connect();
    await waitForStatus(c, "connected", (s) => s.state === "connected", CONNECT_WITHIN_MS);
  },
);

test(
  "a-gateway-configured-by-hostname-connects-under-lockdown-through-the-networks-own-resolver",
  {
    timeout: 120_000,
  },
  async () => {
    // No discovery resolver and no addresses: detourd must look the gateways up through the network's resolver
    // (the client's resolv.conf) while the kill switch blocks everything else.
    writeConfig((c) => {
      const rest: Record<string, unknown> = { ...c, lockdown: true };
      delete rest.discovery;
      rest.gateways = (c.gateways as Record<string, unknown>[]).map((g) => {
        const copy = { ...g };
        delete copy.address;
        return copy;
      });
      return rest;
    });
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await waitForStatus(c, "the blocking kill switch", (s) => s.killSwitch?.mode === "blocking", 10_000);
    await sleep(300);
    const answer = await c.connect();
    assert.equal(answer?.killSwitch.state, "in-force");
    const s = await waitForStatus(c, "connected", (x) => x.state === "connected", CONNECT_WITHIN_MS);
    console.log(`hostname-only gateways under lockdown: connected to ${String(s.gateway)} over ${String(s.protocol)}`);
  },
);
