/**
 * Allow local network access against the real kernel and engines: the client has a container bridge (docker0,
 * 172.17.0.1/16, a veth to a small "container" namespace) under the protected prefix 172.16.0.0/12. With the setting
 * on (the default for a split tunnel) the container answers while connected, an address of 172.16.0.0/12 that is not
 * local goes into the tunnel and nothing to it reaches a router (each router counts what arrives from the client);
 * after a move the new network's private subnet is the allowed one and the old one's is gone, while its own subnet,
 * inside a specific (not catch-all) protected network, is refused; with the setting off the
 * container is unreachable and its traffic goes into the tunnel too.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { after, afterEach, before, test } from "node:test";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentStart, agentStop } from "./agent.ts";
import { nsRun, run } from "./exec.ts";
import * as lab from "./lab.ts";
import { CORP_NETWORK } from "./topology.ts";
import { waitForStatus, type Status } from "./wait-status.ts";

const ID = "ylan";
/** The container network (Docker's default bridge) and an address of 172.16.0.0/12 that is nobody's local one. */
const BRIDGE = "docker0";
const BRIDGE_NET = "172.17.0.0/16";
const CONTAINER = "172.17.0.2";
const NOT_LOCAL = "172.20.0.1";
const PROTECTED_LAN = "172.16.0.0/12";
/** A second subnet on the wifi link (as a home router hands out), and the mobile network's own subnet protected. */
const WIFI_EXTRA = "172.30.0.2/24";
const WIFI_EXTRA_NET = "172.30.0.0/24";
const MOBILE_PROTECTED = "198.18.200.0/23";
const MOBILE_NET = "198.18.200.0/24";
/** A private subnet the mobile link also gets once the client is there (inside the 172.16.0.0/12 catch-all). */
const MOBILE_EXTRA = "172.31.0.2/24";
const MOBILE_EXTRA_NET = "172.31.0.0/24";
const WITNESS_TABLE = "detour_lan_witness";
/** Connecting on the lab's distances takes well under this; the bound keeps a broken run from hanging. */
const CONNECT_WITHIN_MS = 20_000;
/** A move is noticed by the network monitor at once; the recheck (10 s) is the slowest path to the new set. */
const FOLLOW_WITHIN_MS = 15_000;

let client: ControlClient | null = null;
let originalConfig: string | null = null;

const topo = (): ReturnType<typeof lab.topologyOf> => lab.topologyOf(ID);
const containerNs = (): string => `${topo().prefix}ctr`;

/** Packets from the client to 172.16.0.0/12 that reached either router: leaks past the tunnel. */
async function leaked(): Promise<number> {
  let n = 0;
  for (const ns of [topo().router.ns, topo().mobileRouter.ns]) {
    const out = await nsRun(ns, ["nft", "-j", "list", "table", "inet", WITNESS_TABLE]);
    const m = /"packets":\s*(\d+)/.exec(out);
    if (m === null) return NaN;
    n += Number(m[1]);
  }
  return n;
}

/** Whether `address` answers a ping from the client namespace (3 tries, bounded). */
async function answers(address: string): Promise<boolean> {
  const r = await run("ip", [
    "netns",
    "exec",
    topo().client.ns,
    "ping",
    "-n",
    "-c",
    "3",
    "-i",
    "0.2",
    "-W",
    "1",
    address,
  ]);
  return r.code === 0;
}

/** Whether `address` answers within `ms` (one ping a second, bounded in count). */
async function answersWithin(address: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  for (let i = 0; i < Math.ceil(ms / 1000) + 1 && Date.now() < until; i++) {
    const r = await run("ip", ["netns", "exec", topo().client.ns, "ping", "-n", "-c", "1", "-W", "1", address]);
    if (r.code === 0) return true;
  }
  return false;
}

/** The device the client's kernel picks for `address`. */
async function routeDev(address: string): Promise<string> {
  const out = await nsRun(topo().client.ns, ["ip", "-j", "route", "get", address]);
  const rows = JSON.parse(out) as { dev?: string }[];
  return rows[0]?.dev ?? "";
}

async function txPackets(dev: string): Promise<number> {
  const out = await nsRun(topo().client.ns, ["cat", `/sys/class/net/${dev}/statistics/tx_packets`]);
  return Number(out.trim());
}

function setClientConfig(extra: Record<string, unknown>): void {
  const state = lab.loadState(ID);
  originalConfig ??= readFileSync(state.clientConfig, "utf8");
  const base = JSON.parse(originalConfig) as Record<string, unknown>;
  writeFileSync(
    state.clientConfig,
    JSON.stringify({ ...base, protectedRoutes: [CORP_NETWORK, PROTECTED_LAN, MOBILE_PROTECTED], ...extra }, null, 2),
    { mode: 0o600 },
  );
}

async function startConnected(): Promise<{ c: ControlClient; s: Status }> {
  const a = await agentStart(ID);
  const c = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  client = c;
  await c.connect();
  const s = await waitForStatus(c, "connected", (x) => x.state === "connected", CONNECT_WITHIN_MS);
  return { c, s };
}

/**
 * The leak path: without detourd, 172.16.0.0/12 goes to the current network's router (a route via it, which is not
 * a local network). A move takes the old link's routes away, so it is put back on the new one.
 */
async function leakPath(network: "wifi" | "mobile"): Promise<void> {
  const net = topo().networks[network];
  await nsRun(topo().client.ns, [
    "ip",
    "route",
    "replace",
    PROTECTED_LAN,
    "via",
    net.routerAddress,
    "dev",
    net.ifname,
    "metric",
    "500",
  ]);
}

/** A tunnel device of detourd's (its own prefix, or kernel-libipsec's ipsec<N>). */
const TUNNEL_DEV = new RegExp(`^(d${ID}-|ipsec\\d)`);

const allowedOf = (s: Status): string[] => (s.localNetworks?.allowed ?? []).map((n) => `${n.prefix} ${n.dev}`).sort();

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  const t = topo();
  const cli = t.client.ns;
  const ctr = containerNs();
  // The "container": its own namespace behind a bridge of the client's, as Docker sets one up.
  await run("ip", ["netns", "add", ctr]);
  await nsRun(ctr, ["ip", "link", "set", "lo", "up"]);
  await nsRun(cli, ["ip", "link", "add", BRIDGE, "type", "bridge"]);
  await nsRun(cli, ["ip", "addr", "add", "172.17.0.1/16", "dev", BRIDGE]);
  await nsRun(cli, ["ip", "link", "add", "vctr0", "type", "veth", "peer", "name", "eth0", "netns", ctr]);
  await nsRun(cli, ["ip", "link", "set", "vctr0", "master", BRIDGE, "up"]);
  await nsRun(cli, ["ip", "link", "set", BRIDGE, "up"]);
  await nsRun(ctr, ["ip", "addr", "add", `${CONTAINER}/16`, "dev", "eth0"]);
  await nsRun(ctr, ["ip", "link", "set", "eth0", "up"]);
  await nsRun(ctr, ["ip", "route", "add", "default", "via", "172.17.0.1"]);
  await nsRun(cli, ["ip", "addr", "add", WIFI_EXTRA, "dev", t.networks.wifi.ifname]);
  await leakPath("wifi");
  for (const net of [t.networks.wifi, t.networks.mobile]) {
    await nsRun(net.routerNs, ["nft", "-f", "-"], {
      input: `table inet ${WITNESS_TABLE} {\n chain witness {\n  type filter hook prerouting priority -300; policy accept;\n  iifname "${net.routerIfname}" ip daddr ${PROTECTED_LAN} counter\n }\n}\n`,
    });
  }
  assert.ok(await answers(CONTAINER), "control: the container answers before detourd starts");
  const base = await leaked();
  await answers(NOT_LOCAL);
  assert.ok((await leaked()) - base >= 3, "control: without detourd the leak path carries 172.16.0.0/12");
});

afterEach(async () => {
  client?.close();
  client = null;
  await agentStop(ID);
});

after(async () => {
  client?.close();
  await agentStop(ID);
  if (originalConfig !== null) writeFileSync(lab.loadState(ID).clientConfig, originalConfig, { mode: 0o600 });
  await run("ip", ["netns", "del", containerNs()]);
  await lab.down(ID);
});

test(
  "with-local-network-access-the-container-answers-the-rest-of-the-prefix-goes-through-the-tunnel-and-follows-a-move",
  { timeout: 180_000 },
  async () => {
    setClientConfig({});
    const { c } = await startConnected();
    assert.ok(await answersWithin(CONTAINER, FOLLOW_WITHIN_MS), "the container answers while connected");
    const s = await waitForStatus(
      c,
      "the bridge and the wifi subnet allowed",
      (x) => allowedOf(x).length === 2,
      FOLLOW_WITHIN_MS,
    );
    assert.equal(s.localNetworks?.enabled, true, "on by default for a split tunnel");
    assert.deepEqual(allowedOf(s), [`${BRIDGE_NET} ${BRIDGE}`, `${WIFI_EXTRA_NET} ${topo().networks.wifi.ifname}`]);
    assert.equal(await routeDev(CONTAINER), BRIDGE, "the container is reached through its bridge");
    const tunnel = await routeDev(NOT_LOCAL);
    assert.match(tunnel, TUNNEL_DEV, "the rest of 172.16.0.0/12 goes into the tunnel");
    const base = await leaked();
    const tx = await txPackets(tunnel);
    await answers(NOT_LOCAL);
    assert.ok((await txPackets(tunnel)) - tx >= 3, "the pings to a non-local 172.16/12 address entered the tunnel");
    assert.equal((await leaked()) - base, 0, "nothing to 172.16.0.0/12 reached the router outside the tunnel");

    const move = await lab.move("mobile", {}, ID);
    await nsRun(topo().client.ns, ["ip", "addr", "add", MOBILE_EXTRA, "dev", topo().networks.mobile.ifname]);
    await leakPath("mobile");
    const mobileIf = topo().networks.mobile.ifname;
    const moved = await waitForStatus(
      c,
      "the mobile link's private subnet allowed and the wifi one's gone",
      (x) => x.state === "connected" && allowedOf(x).includes(`${MOBILE_EXTRA_NET} ${mobileIf}`),
      FOLLOW_WITHIN_MS,
    );
    console.log(
      `allowed on wifi: ${allowedOf(s).join(", ")}; after the move to mobile: ${allowedOf(moved).join(", ")} (${String(moved.localNetworks?.changes)} changes), seen in status ${String(Date.now() - move.onlineAt)} ms after the new network's route (100 ms polls)`,
    );
    assert.deepEqual(allowedOf(moved), [`${BRIDGE_NET} ${BRIDGE}`, `${MOBILE_EXTRA_NET} ${mobileIf}`]);
    // The mobile network's own subnet lies inside a specific protected network (the organisation's, as far as
    // detourd can tell): refused, so a network handing out intranet addresses gets none of their traffic.
    const refused = moved.localNetworks?.refused ?? [];
    assert.ok(
      refused.some((r) => r.prefix === MOBILE_NET && /not a catch-all/.test(r.reason)),
      `the mobile subnet inside ${MOBILE_PROTECTED} is refused: ${JSON.stringify(refused)}`,
    );
    assert.match(
      await routeDev(topo().networks.mobile.resolver),
      TUNNEL_DEV,
      "its router is reached through the tunnel",
    );
    assert.ok(await answers(CONTAINER), "the container still answers on the new network");
    const table = await nsRun(topo().client.ns, ["ip", "-4", "route", "show", "table", "5000"]);
    assert.match(table, /throw 172\.31\.0\.0\/24/, "the new network's throw is in the protected table");
    assert.doesNotMatch(table, /throw 198\.18\.200\.0\/24/, "no throw for the refused subnet");
    assert.doesNotMatch(table, /172\.30\.0\.0\/24/, "the old network's throw is gone");
    const base2 = await leaked();
    await answers(NOT_LOCAL);
    assert.equal((await leaked()) - base2, 0, "after the move, nothing leaks either");
    await lab.move("wifi", {}, ID);
    await leakPath("wifi");
  },
);

test(
  "with-local-network-access-off-the-container-is-unreachable-and-its-traffic-goes-into-the-tunnel",
  {
    timeout: 120_000,
  },
  async () => {
    setClientConfig({ localNetworkAccess: "off" });
    const { c } = await startConnected();
    const s = await c.status();
    assert.equal(s.localNetworks?.enabled, false);
    assert.deepEqual(allowedOf(s), []);
    const dev = await routeDev(CONTAINER);
    assert.match(dev, TUNNEL_DEV, "the container's address goes to the tunnel");
    const base = await leaked();
    assert.equal(await answers(CONTAINER), false, "the container does not answer");
    assert.equal((await leaked()) - base, 0);
  },
);
