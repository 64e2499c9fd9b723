/**
 * IKEv2 follows a network change with MOBIKE against the real charon and gateways: the client moves between its two
 * networks with only IKEv2 allowed, and the same leg (same leg id, same charon process) carries traffic again from
 * the new address, with no failover recorded and no protected packet reaching either network's router. With an
 * IKEv2 standby on another gateway, each of the two charons in the namespace moves its own SA to the new underlay
 * address, never to a tunnel address of the other.
 */
import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { ControlClient } from "../../main/client/control-client.ts";
import { ViciClient } from "../../native/engines/ipsec/vici-client.ts";
import { viciSection, type ViciSection } from "../../native/engines/ipsec/vici-codec.ts";
import { agentStart, agentStop } from "./agent.ts";
import { runOk } from "./exec.ts";
import * as lab from "./lab.ts";
import { firstReplyAfter, pingStream, type PingStream } from "./roam.ts";
import { namespacePids } from "./netns.ts";
import { CORP_ADDRESS, CORP_NETWORK, type NetworkName } from "./topology.ts";
import { waitForStatus, type Status } from "./wait-status.ts";

const ID = "vmobk";
/** Connecting on the lab's user distances takes well under this; the bound only keeps a broken run from hanging. */
const CONNECT_WITHIN_MS = 20_000;
/** The target is traffic back within 1 s of the new route; the test allows for a busy 2-core machine. */
const BACK_WITHIN_MS = 5_000;
/** After traffic is back, the tunnel is watched this long more: a late fallback to a fresh leg would show here. */
const SETTLE_MS = 3_000;
const WITNESS_TABLE = "vmobike_witness";
/** The client starts on wifi (lab up), moves to mobile and back. */
const THERE_AND_BACK: readonly NetworkName[] = ["mobile", "wifi"];

let client: ControlClient | null = null;
let pinger: ChildProcess | null = null;

before(async () => {
  await lab.down(ID);
  // Both networks NATed, as a laptop's are: MOBIKE moves the SA from one NAT's address to the other's.
  await lab.up(ID, { wifi: "nat" });
  const topo = lab.topologyOf(ID);
  // Protected packets (to corp) that arrive at either network's router came out of the client outside a tunnel.
  for (const net of [topo.networks.wifi, topo.networks.mobile])
    await runOk("ip", ["netns", "exec", net.routerNs, "nft", "-f", "-"], {
      input: witnessRuleset(net.routerIfname),
    });
});

after(async () => {
  if (pinger?.pid !== undefined && pinger.exitCode === null) pinger.kill("SIGTERM");
  client?.close();
  await agentStop(ID);
  await lab.down(ID);
});

/**
 * Witnesses at both routers for what arrives from the client for the lab's inner addresses (198.19.0.0/16):
 * "protected" counts the client's protected network (CORP_NETWORK, what the kill switch holds to tunnels), which
 * must never arrive; "ike" counts IKE to the gateways' inner addresses (MOBIKE path probes to the addresses a
 * gateway announces: the kill switch's ike-off-gateway rule keeps them in, so none may arrive); "other" anything
 * else, which must not arrive either. The flows set names each one.
 */
function witnessRuleset(ifname: string): string {
  const from = `iifname "${ifname}"`;
  return `table inet ${WITNESS_TABLE} {
 set flows { type ipv4_addr . ipv4_addr . inet_proto . inet_service; flags dynamic; }
 chain witness {
  type filter hook prerouting priority -300; policy accept;
  ${from} ip daddr 198.19.0.0/16 meta l4proto { tcp, udp } add @flows { ip saddr . ip daddr . meta l4proto . th dport }
  ${from} ip daddr ${CORP_NETWORK} counter accept comment "protected"
  ${from} ip daddr 198.19.0.0/16 udp dport { 500, 4500 } counter accept comment "ike"
  ${from} ip daddr 198.19.0.0/16 counter accept comment "other"
 }
}
`;
}

type Witnessed = Record<"protected" | "ike" | "other", number> & { flows: string };

async function witnessed(): Promise<Witnessed> {
  const topo = lab.topologyOf(ID);
  const w: Witnessed = { protected: 0, ike: 0, other: 0, flows: "" };
  const flows: string[] = [];
  for (const net of [topo.networks.wifi, topo.networks.mobile]) {
    const t = await runOk("ip", ["netns", "exec", net.routerNs, "nft", "list", "table", "inet", WITNESS_TABLE]);
    for (const m of t.matchAll(/packets (\d+) bytes \d+ (?:accept )?comment "(\w+)"/g)) {
      const k = m[2] as keyof Witnessed;
      if (k === "protected" || k === "ike" || k === "other") w[k] += Number(m[1]);
    }
    const els = /elements = \{([^}]*)\}/.exec(t);
    if (els?.[1] !== undefined) flows.push(...els[1].split(",").map((f) => `${net.name}: ${f.trim()}`));
  }
  w.flows = flows.join("; ");
  return w;
}

/** A ping through the tunnel to corp every 50 ms; the times (epoch ms) of its replies. */
function startTraffic(): PingStream {
  const t = pingStream(lab.topologyOf(ID), CORP_ADDRESS);
  pinger = t.child;
  return t;
}

interface Charon {
  pid: number;
  vici: string;
}

/** The charon processes of the client namespace and each one's VICI socket (next to its STRONGSWAN_CONF). */
async function charons(): Promise<Charon[]> {
  const out: Charon[] = [];
  for (const pid of await namespacePids(lab.topologyOf(ID).client.ns)) {
    let comm: string;
    let env: string;
    try {
      comm = readFileSync(`/proc/${String(pid)}/comm`, "utf8").trim();
      env = readFileSync(`/proc/${String(pid)}/environ`, "utf8");
    } catch {
      continue;
    }
    if (comm !== "charon-systemd") continue;
    const conf = env.split("\0").find((e) => e.startsWith("STRONGSWAN_CONF="));
    if (conf === undefined) continue;
    out.push({ pid, vici: join(dirname(conf.slice("STRONGSWAN_CONF=".length)), "charon.vici") });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/** The local and remote underlay addresses of every IKE_SA a charon holds. */
async function ikeHosts(c: Charon): Promise<{ local: string; remote: string }[]> {
  const vici = await ViciClient.connect(c.vici, 2000);
  try {
    const { events } = await vici.stream("list-sas", viciSection({ noblock: "yes" }), "list-sa", { timeoutMs: 3000 });
    const hosts: { local: string; remote: string }[] = [];
    for (const e of events)
      for (const [, sa] of e) {
        if (!(sa instanceof Map)) continue;
        const s = sa as ViciSection;
        const text = (k: string): string => {
          const v = s.get(k);
          return typeof v === "string" ? v : "";
        };
        hosts.push({ local: text("local-host"), remote: text("remote-host") });
      }
    return hosts;
  } finally {
    vici.close();
  }
}

/** How many times the charons of this lab's detourd asked their gateway to move with MOBIKE (their logs). */
function mobikeUpdates(): number {
  let n = 0;
  const walk = (dir: string, depth: number): void => {
    if (depth > 6 || !existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else if (e.name === "charon.log")
        n += readFileSync(p, "utf8")
          .split("\n")
          .filter((l) => /requesting address change using MOBIKE/.test(l)).length;
    }
  };
  walk(lab.labDirOf(ID), 0);
  return n;
}

async function ikev2Only(c: ControlClient, standby: "on" | "off"): Promise<Status> {
  await c.setPref("race.order", "ikev2");
  await c.setPref("standby.mode", standby);
  await c.disconnect();
  await c.connect();
  return waitForStatus(
    c,
    `connected over IKEv2 (standby ${standby})`,
    (s) => s.state === "connected" && s.protocol === "ikev2" && (standby === "off" || s.standby?.protocol === "ikev2"),
    CONNECT_WITHIN_MS,
  );
}

interface MoveSeen {
  backMs: number | null;
  status: Status;
  /** What the routers' witnesses counted during the move (see witnessRuleset). */
  during: Witnessed;
}

async function moveUnderTraffic(c: ControlClient, to: NetworkName): Promise<MoveSeen> {
  const before = await witnessed();
  const traffic = startTraffic();
  try {
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(traffic.replies.length > 0, "traffic flows through the IKEv2 tunnel before the move");
    const moved = await lab.move(to, {}, ID);
    const back = await firstReplyAfter(traffic.replies, moved.onlineAt, BACK_WITHIN_MS * 2);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const status = await c.status();
    const after = await witnessed();
    return {
      backMs: back === null ? null : back - moved.onlineAt,
      status,
      during: {
        protected: after.protected - before.protected,
        ike: after.ike - before.ike,
        other: after.other - before.other,
        flows: after.flows,
      },
    };
  } finally {
    traffic.stop();
  }
}

/** The witnesses' word on one move, for the log. */
function witnessLine(w: Witnessed): string {
  return `protected ${String(w.protected)}, other ${String(w.other)}, IKE path probes to gateway inner addresses ${String(w.ike)} (flows so far: ${w.flows === "" ? "none" : w.flows})`;
}

/** The client's address on a network, either family: MOBIKE may move the SA to a gateway's other family. */
function onNetwork(local: string, net: { address: string; address6: string }): boolean {
  const canon = (a: string): string => (a.includes(":") ? new URL(`http://[${a}]/`).hostname : a);
  return canon(local) === canon(net.address) || canon(local) === canon(net.address6);
}

/** The charons once the stopped legs' ones have exited (a disconnect stops them in the background). */
async function charonsSettled(count: number): Promise<Charon[]> {
  const until = Date.now() + 10_000;
  let now = await charons();
  while (now.length !== count && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 200));
    now = await charons();
  }
  return now;
}

test(
  "an-ikev2-leg-follows-a-move-with-mobike-the-same-leg-and-charon-carry-traffic-again",
  { timeout: 180_000 },
  async () => {
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    const before = await ikev2Only(c, "off");
    const topo = lab.topologyOf(ID);
    const charonsBefore = await charonsSettled(1);
    assert.equal(charonsBefore.length, 1, "one charon: the active IKEv2 leg");
    const updatesBefore = mobikeUpdates();
    for (const to of THERE_AND_BACK) {
      const net = topo.networks[to];
      const seen = await moveUnderTraffic(c, to);
      const s = seen.status;
      const now = await charons();
      const hosts = now[0] === undefined ? [] : await ikeHosts(now[0]);
      console.log(
        `IKEv2 move to ${to}: traffic back ${seen.backMs === null ? "never" : `${String(seen.backMs)} ms`} after the new route; leg ${String(before.activeLegId)} -> ${String(s.activeLegId)}; charon ${charonsBefore.map((x) => x.pid).join(",")} -> ${now.map((x) => x.pid).join(",")}; IKE_SA ${JSON.stringify(hosts)}; ${s.summary}; witnesses: ${witnessLine(seen.during)}`,
      );
      assert.ok(seen.backMs !== null && seen.backMs <= BACK_WITHIN_MS, `traffic flows again after the move to ${to}`);
      assert.equal(s.state, "connected");
      assert.equal(s.protocol, "ikev2");
      assert.equal(s.activeLegId, before.activeLegId, "the same leg carries traffic");
      assert.deepEqual(
        now.map((x) => x.pid),
        charonsBefore.map((x) => x.pid),
        "the same charon process: the leg was not restarted",
      );
      assert.deepEqual(s.lastFailover, before.lastFailover, "no failover recorded");
      assert.equal(s.lastRace?.id, before.lastRace?.id, "no race: the IKE_SA moved, no fresh leg was raced");
      assert.equal(seen.during.protected, 0, "no protected packet reached a router outside the tunnel");
      assert.equal(seen.during.other, 0, "nothing reached a router for an inner address");
      assert.equal(seen.during.ike, 0, "no IKE to a gateway's announced inner address left on the underlay");
      assert.equal(hosts.length, 1, "one IKE_SA");
      assert.ok(
        hosts.every((h) => onNetwork(h.local, net)),
        `the IKE_SA moved to the ${to} address`,
      );
    }
    assert.ok(mobikeUpdates() >= updatesBefore + 2, "charon moved its SA with MOBIKE, once per move");
  },
);

test(
  "two-ikev2-charons-side-by-side-each-move-to-the-new-underlay-address-not-to-the-other's-tunnel",
  { timeout: 180_000 },
  async () => {
    const c = client;
    assert.ok(c !== null, "runs after the first test");
    const before = await ikev2Only(c, "on");
    const topo = lab.topologyOf(ID);
    const charonsBefore = await charonsSettled(2);
    assert.equal(charonsBefore.length, 2, "two charons: the active IKEv2 leg and the IKEv2 standby");
    for (const to of THERE_AND_BACK) {
      const net = topo.networks[to];
      const seen = await moveUnderTraffic(c, to);
      const s = seen.status;
      const now = await charons();
      const hosts = await Promise.all(now.map(ikeHosts));
      console.log(
        `IKEv2 + IKEv2 standby, move to ${to}: traffic back ${seen.backMs === null ? "never" : `${String(seen.backMs)} ms`} after the new route; active ${String(s.activeLegId)} on ${String(s.gateway)}, standby ${String(s.standby?.legId)} on ${String(s.standby?.gateway)}; IKE_SAs ${JSON.stringify(hosts)}; witnesses: ${witnessLine(seen.during)}`,
      );
      assert.ok(seen.backMs !== null && seen.backMs <= BACK_WITHIN_MS, `traffic flows again after the move to ${to}`);
      assert.equal(s.activeLegId, before.activeLegId, "the same active leg");
      assert.equal(s.standby?.legId, before.standby?.legId, "the same standby leg");
      assert.deepEqual(
        now.map((x) => x.pid),
        charonsBefore.map((x) => x.pid),
        "the same two charon processes",
      );
      assert.deepEqual(s.lastFailover, before.lastFailover, "no failover recorded");
      assert.equal(seen.during.protected, 0, "no protected packet reached a router outside the tunnel");
      assert.equal(seen.during.other, 0, "nothing reached a router for an inner address");
      assert.equal(seen.during.ike, 0, "no IKE to a gateway's announced inner address left on the underlay");
      for (const h of hosts)
        assert.ok(
          h.length === 1 && h.every((x) => onNetwork(x.local, net)),
          "each charon's IKE_SA uses the new network's address, never another tunnel's",
        );
    }
  },
);
