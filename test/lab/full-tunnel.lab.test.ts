/**
 * Full tunnel (protectedRoutes 0.0.0.0/0, the common enterprise setup) with the real daemon, engines and
 * gateways: each protocol connects and stays up, corp and hosts outside corp (the lab's DNS and collector) answer
 * through the tunnel, the engines keep reaching their gateways (active and standby) outside it, and a dead
 * gateway is left once, for a live one, without flapping afterwards.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import type { DetourConfigInput } from "../../main/core/config/schema.ts";
import type { ConnectionEvent, LegKind } from "../../main/core/connection/types.ts";
import { PROTECTED_RULE_PREF, PROTECTED_TABLE, routesIn, rulesAt } from "../../native/platform/routes.linux.ts";
import { agentLogs, agentStart, agentStop } from "./agent.ts";
import { nsRun } from "./exec.ts";
import * as lab from "./lab.ts";
import { waitForStatus, type Status } from "./wait-status.ts";
import { GATEWAY_NAT_TABLE } from "./netns.ts";
import { ProbeClient } from "./probe-client.ts";
import { COLLECTOR_ADDRESS, CORP_HTTP_PORT, DNS_ADDRESS } from "./topology.ts";

const ID = "fullt";
const POLL_MS = 100;
/** A healthy lab connects and raises its standby within a second or two; 15 s bounds a loaded CI machine. */
const CONNECT_WITHIN_MS = 15_000;
/** Long enough for dozens of dead windows (0.3 s) and several keepalive, DPD and rekey-free engine cycles. */
const STABLE_FOR_MS = 30_000;
/** Discovery rechecks run every 30 s while connected (RECHECK_INTERVAL_MS); one recheck plus its probes. */
const RECHECK_WITHIN_MS = 40_000;
/** After a failover, the time the promoted tunnel must then stay put. */
const SETTLED_FOR_MS = 15_000;
/** The promotion takes the dead window; 8 s only bounds a hung test. */
const FAILOVER_WITHIN_MS = 8_000;
/** Corp, DNS and the collector answer in milliseconds through a tunnel; 2 s means no path. */
const REQUEST_TIMEOUT_MS = 2_000;
/** The daemon applies routes a few milliseconds after it reports the new state. */
const SETTLE_TRIES = 10;
const WITNESS_TABLE = "detour_direct_witness";
/** In the DNS server's namespace: it answers the client only through a tunnel (a split-horizon resolver). */
const DNS_BLOCK_TABLE = "detour_dns_tunnel_only";

const topo = lab.topologyOf(ID);
let probe: ProbeClient | undefined;
let client: ControlClient | null = null;
let unsubscribe: (() => void) | null = null;
let originalConfig = "";

function mustProbe(): ProbeClient {
  if (probe === undefined) throw new Error("the probe agent did not start");
  return probe;
}

before(async () => {
  await lab.down(ID);
  const state = await lab.up(ID, { tunnel: "full" });
  originalConfig = readFileSync(state.clientConfig, "utf8");
  assert.deepEqual((JSON.parse(originalConfig) as DetourConfigInput).protectedRoutes, ["0.0.0.0/0"]);
  // The router counts what the client sends straight to the DNS server or the collector: through the tunnel,
  // those packets arrive from a gateway instead.
  await nsRun(topo.router.ns, ["nft", "-f", "-"], {
    input: `table inet ${WITNESS_TABLE} {\n chain witness {\n  type filter hook prerouting priority -300; policy accept;\n  iifname "to-client" ip daddr { ${DNS_ADDRESS}, ${COLLECTOR_ADDRESS} } counter\n }\n}\n`,
  });
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", topo.client.ns] });
});

afterEach(async () => {
  unsubscribe?.();
  unsubscribe = null;
  client?.close();
  client = null;
  await agentStop(ID);
  writeFileSync(lab.loadState(ID).clientConfig, originalConfig, { mode: 0o600 });
  await nsRun(topo.dns.ns, ["nft", "delete", "table", "inet", DNS_BLOCK_TABLE]).catch(() => undefined);
  // Each scenario starts on a network detourd has never seen: per-network memory would reorder its race.
  rmSync(join(lab.labDirOf(ID), "detourd-state"), { recursive: true, force: true });
  await lab.heal(ID);
});

after(async () => {
  await probe?.close();
  await lab.down(ID);
});

function waitFor(c: ControlClient, what: string, pred: (s: Status) => boolean, timeoutMs: number): Promise<Status> {
  return waitForStatus(c, what, pred, timeoutMs, { context: () => agentLogs(ID, 40) });
}

/**
 * Starts detourd with the lab's full-tunnel config (one leg kind, or the default race; `byName`: gateways known
 * by name only, found through DNS) and records failovers.
 */
async function startAgent(
  kind: LegKind | null,
  byName: readonly string[] = [],
): Promise<{ c: ControlClient; failovers: ConnectionEvent[] }> {
  const cfg = JSON.parse(originalConfig) as DetourConfigInput;
  const gateways = cfg.gateways.map((g) => (byName.includes(g.name) ? { ...g, address: undefined } : g));
  writeFileSync(
    lab.loadState(ID).clientConfig,
    JSON.stringify({ ...cfg, gateways, ...(kind === null ? {} : { race: { order: [kind] } }) }, null, 2),
    { mode: 0o600 },
  );
  const a = await agentStart(ID);
  const c = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  client = c;
  const failovers: ConnectionEvent[] = [];
  const sub = await c.subscribe((e) => {
    if (e.type === "failover") failovers.push(e);
  });
  unsubscribe = () => {
    sub.close();
  };
  return { c, failovers };
}

/** Which gateway and protocol corp sees a request come through (retried while a route change settles). */
async function corpSees(
  expectedGateway: string,
): Promise<{ gateway: string | null; protocol: string | null } | string> {
  let last: { gateway: string | null; protocol: string | null } | string = "no answer";
  for (let i = 0; i < SETTLE_TRIES; i++) {
    const r = await mustProbe().http({
      url: `http://${topo.corp.address}:${String(CORP_HTTP_PORT)}/whoami`,
      timeoutMs: REQUEST_TIMEOUT_MS,
    });
    if (r.ok && r.status === 200) {
      const seen = JSON.parse(r.body) as { gateway: string | null; protocol: string | null };
      last = { gateway: seen.gateway, protocol: seen.protocol };
      if (last.gateway === expectedGateway) return last;
    } else {
      last = JSON.stringify(r);
    }
    await sleep(POLL_MS);
  }
  return last;
}

/** The lab's DNS server asked directly (not through the resolv.conf detourd manages) for a gateway's name. */
function resolveViaLabDns(name: string): string {
  const script = `const r = new (require("node:dns").promises.Resolver)({ timeout: 1000, tries: 2 }); r.setServers([${JSON.stringify(DNS_ADDRESS)}]);
r.resolve4(${JSON.stringify(name)}).then((a) => console.log(a.join(",")), (e) => { console.log("error " + e.code); });`;
  const r = spawnSync("ip", ["netns", "exec", topo.client.ns, process.execPath, "-e", script], {
    encoding: "utf8",
    timeout: 10_000,
  });
  return r.stdout.trim();
}

/** New connections a gateway masqueraded to the underlay: the client's traffic it carried beyond corp. */
async function natPackets(gateway: string): Promise<number> {
  const ns = topo.gateways.find((g) => g.name === gateway)?.ns;
  assert.ok(ns !== undefined, `no gateway ${gateway}`);
  const m = /"packets":\s*(\d+)/.exec(await nsRun(ns, ["nft", "-j", "list", "table", "ip", GATEWAY_NAT_TABLE]));
  return m === null ? NaN : Number(m[1]);
}

async function sentStraightToRouter(): Promise<number> {
  const m = /"packets":\s*(\d+)/.exec(
    await nsRun(topo.router.ns, ["nft", "-j", "list", "table", "inet", WITNESS_TABLE]),
  );
  return m === null ? NaN : Number(m[1]);
}

/** Corp, then the lab's DNS server and collector (outside corp), all through the tunnel of `gateway`. */
async function everythingGoesThrough(gateway: string, protocol: string): Promise<void> {
  assert.deepEqual(
    await corpSees(gateway),
    { gateway, protocol },
    `corp sees the request come through ${gateway} over ${protocol}`,
  );
  const [nat0, direct0] = [await natPackets(gateway), await sentStraightToRouter()];
  const gw1 = topo.gateways[0];
  assert.ok(gw1 !== undefined);
  assert.equal(resolveViaLabDns(gw1.hostname), gw1.address, "the lab's DNS server (outside corp) answers");
  const health = await mustProbe().http({
    url: `http://${COLLECTOR_ADDRESS}:4318/healthz`,
    timeoutMs: REQUEST_TIMEOUT_MS,
  });
  assert.ok(health.ok && health.status === 200, `the collector (outside corp) answers: ${JSON.stringify(health)}`);
  const [nat1, direct1] = [await natPackets(gateway), await sentStraightToRouter()];
  assert.ok(
    nat1 - nat0 >= 2,
    `${gateway} carried both to the underlay (${String(nat1 - nat0)} new connections masqueraded)`,
  );
  assert.equal(direct1 - direct0, 0, "nothing went to them outside the tunnel");
}

/** The protected table: the default route through the active device, and a throw for each gateway. */
async function protectedTable(): Promise<string[]> {
  return (await routesIn(PROTECTED_TABLE, topo.client.ns))
    .map((r) => (r.type === "throw" ? `throw ${r.dst}` : `${r.dst} dev ${r.dev}`))
    .sort();
}

function gatewayThrows(): string[] {
  return topo.gateways.map((g) => `throw ${g.address}`);
}

/** Watches the tunnel for `ms`: it must stay connected on the same leg, with no failover event or record. */
async function staysPut(c: ControlClient, failovers: ConnectionEvent[], legId: string, ms: number): Promise<void> {
  const before = failovers.length;
  const until = Date.now() + ms;
  for (let i = 0; i < Math.ceil(ms / 1000) + 1 && Date.now() < until; i++) {
    const s = await c.status();
    assert.ok(
      s.state === "connected" && s.activeLegId === legId,
      `still connected on ${legId} ${String(Math.round((ms - (until - Date.now())) / 1000))} s on: ${s.state} ${String(s.activeLegId)} (${s.summary})`,
    );
    await sleep(Math.min(1000, Math.max(0, until - Date.now())));
  }
  assert.deepEqual(failovers.slice(before), [], `no failover in ${String(ms / 1000)} s`);
}

for (const kind of ["wireguard", "ikev2", "anyconnect-dtls"] as const) {
  test(`full-tunnel-over-${kind}-reaches-corp-and-beyond-and-stays-up`, { timeout: 90_000 }, async () => {
    const { c, failovers } = await startAgent(kind);
    await c.connect();
    const s = await waitFor(
      c,
      `connected over ${kind} with a standby`,
      (x) => x.state === "connected" && x.standby !== null,
      CONNECT_WITHIN_MS,
    );
    const gateway = s.gateway ?? assert.fail("connected without a gateway");
    const legId = s.activeLegId ?? assert.fail("connected without an active leg");
    assert.equal(s.protocol, kind);
    console.log(`${kind}: connected to ${gateway}, standby ${s.standby?.gateway ?? "-"}/${s.standby?.protocol ?? "-"}`);
    await everythingGoesThrough(gateway, kind.startsWith("anyconnect") ? "anyconnect" : kind);
    await staysPut(c, failovers, legId, STABLE_FOR_MS);
    const s1 = await c.status();
    assert.equal(s1.lastFailover, null, "no failover recorded");
    assert.ok(
      // Idle, the standby is probed every 4 s (standby.idleProbeIntervalMs).
      s1.standby !== null && s1.standby.lastReplyAt !== null && Date.now() - s1.standby.lastReplyAt < 5000,
      `the standby (another gateway, same protocol) still answers: ${JSON.stringify(s1.standby)}`,
    );
    const table = await protectedTable();
    assert.deepEqual(
      table.filter((r) => r.startsWith("throw")),
      gatewayThrows(),
      "every gateway is thrown out of the protected table",
    );
    assert.equal(
      table.filter((r) => r.startsWith("0.0.0.0/0 dev ")).length,
      1,
      `the default route goes through the tunnel: ${table.join("; ")}`,
    );
    const prefs = (await rulesAt(undefined, topo.client.ns)).map((r) => r.priority);
    assert.deepEqual(
      prefs.filter(
        (p) => ![0, PROTECTED_RULE_PREF, 32766, 32767].includes(p) && !(p >= 100 && p < PROTECTED_RULE_PREF),
      ),
      [],
      `only the legs' source rules (100-199), the protected rule and the kernel's: no kernel-libipsec rule (220, charon's 32765) could route around the table (${prefs.join(", ")})`,
    );
    assert.equal(
      prefs.filter((p) => p >= 100 && p < PROTECTED_RULE_PREF).length,
      2,
      "a source rule for the active leg and one for the standby",
    );

    await everythingGoesThrough(gateway, kind.startsWith("anyconnect") ? "anyconnect" : kind);

    await c.disconnect();
    await waitFor(c, "disconnected", (x) => x.state === "disconnected", CONNECT_WITHIN_MS);
    for (let i = 0; i < SETTLE_TRIES && (await protectedTable()).length > 0; i++) await sleep(POLL_MS);
    assert.deepEqual(await protectedTable(), [], "disconnect leaves no route and no throw behind");
  });
}

test("full-tunnel-active-gateway-killed-the-standby-takes-over-and-stays", { timeout: 90_000 }, async () => {
  const { c, failovers } = await startAgent(null);
  await c.connect();
  const s0 = await waitFor(
    c,
    "connected with a standby",
    (x) => x.state === "connected" && x.standby !== null,
    CONNECT_WITHIN_MS,
  );
  const sb = s0.standby ?? assert.fail("no standby");
  const dead = s0.gateway ?? assert.fail("connected without a gateway");
  console.log(`active ${dead}/${String(s0.protocol)}, standby ${sb.gateway}/${sb.protocol}`);
  await lab.kill(dead, "all", ID);
  const s1 = await waitFor(
    c,
    `failover away from ${dead}`,
    (x) => x.state === "connected" && x.gateway !== dead && x.lastFailover?.restoredAt != null,
    FAILOVER_WITHIN_MS,
  );
  const f = s1.lastFailover ?? assert.fail("no failover record");
  console.log(
    `failover ${f.from.gateway}/${f.from.kind} -> ${f.to?.gateway ?? "-"}/${f.to?.kind ?? "-"} via ${f.via}: detected after ${Math.round(f.detectedAfterMs)} ms, restored after ${Math.round(f.restoredAfterMs ?? NaN)} ms (${f.reason})`,
  );
  assert.equal(f.from.gateway, dead);
  assert.equal(f.via, "standby", "the standby was promoted, no race");
  const live = s1.gateway ?? assert.fail("connected without a gateway");
  assert.notEqual(live, dead);
  await everythingGoesThrough(
    live,
    s1.protocol?.startsWith("anyconnect") === true ? "anyconnect" : String(s1.protocol),
  );
  const settledLeg = s1.activeLegId ?? assert.fail("no active leg");
  const failedOver = failovers.length;
  await staysPut(c, failovers, settledLeg, SETTLED_FOR_MS);
  assert.equal(failovers.length, failedOver, "no flapping after the failover");
  assert.deepEqual(
    (await protectedTable()).filter((r) => r.startsWith("throw")),
    gatewayThrows(),
    "every gateway still bypasses the tunnel",
  );
  await everythingGoesThrough(
    live,
    s1.protocol?.startsWith("anyconnect") === true ? "anyconnect" : String(s1.protocol),
  );

  // detourd stopping while connected takes its table and rules with it.
  unsubscribe?.();
  unsubscribe = null;
  c.close();
  client = null;
  await agentStop(ID);
  assert.deepEqual(await protectedTable(), [], "no route or throw is left after detourd stops");
  assert.deepEqual(
    (await rulesAt(undefined, topo.client.ns)).map((r) => r.priority),
    [0, 32766, 32767],
    "only the kernel's own rules are left",
  );
});

test("full-tunnel-a-gateway-learned-while-connected-is-thrown-out-before-it-is-used", { timeout: 90_000 }, async () => {
  // gw3 is known by name only, and the lab's DNS server answers the client only through a tunnel: gw3's address
  // is learned by a discovery recheck while the full tunnel is up.
  await nsRun(topo.dns.ns, ["nft", "-f", "-"], {
    input: `table inet ${DNS_BLOCK_TABLE} {\n chain input {\n  type filter hook input priority -10; policy accept;\n  ip saddr ${topo.client.address} meta l4proto { tcp, udp } th dport 53 drop\n }\n}\n`,
  });
  const gw3 = topo.gateways[2];
  assert.ok(gw3 !== undefined);
  const { c, failovers } = await startAgent(null, [gw3.name]);
  await c.connect();
  const s0 = await waitFor(
    c,
    "connected with a standby",
    (x) => x.state === "connected" && x.standby !== null,
    CONNECT_WITHIN_MS,
  );
  const legId = s0.activeLegId ?? assert.fail("no active leg");
  assert.equal(
    s0.candidates.find((x) => x.name === gw3.name)?.address ?? null,
    null,
    `${gw3.name}'s address is unknown at first`,
  );
  assert.ok(!(await protectedTable()).includes(`throw ${gw3.address}`));

  const until = Date.now() + RECHECK_WITHIN_MS;
  let table = await protectedTable();
  for (let i = 0; i < RECHECK_WITHIN_MS / 250 && Date.now() < until && !table.includes(`throw ${gw3.address}`); i++) {
    await sleep(250);
    table = await protectedTable();
  }
  assert.ok(
    table.includes(`throw ${gw3.address}`),
    `the recheck's new address is thrown out of the table: ${table.join("; ")}`,
  );
  assert.equal((await c.status()).activeLegId, legId, "by a table write of its own: the tunnel did not move");
  // The throw went in before the recheck probed gw3; the candidate list follows once the probes are done.
  const s1 = await waitFor(
    c,
    `${gw3.name} as a candidate`,
    (x) => x.candidates.some((k) => k.name === gw3.name && k.address !== null),
    FAILOVER_WITHIN_MS,
  );
  assert.equal(s1.activeLegId, legId);
  assert.deepEqual(failovers, [], "no failover meanwhile");
  await everythingGoesThrough(
    s1.gateway ?? "",
    s1.protocol?.startsWith("anyconnect") === true ? "anyconnect" : String(s1.protocol),
  );
});
