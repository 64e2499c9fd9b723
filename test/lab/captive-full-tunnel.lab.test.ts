/**
 * A hotel network under a full tunnel: detourd's captive check must leave on the underlay even while the full
 * tunnel's routes (0.0.0.0/0 into a tunnel device) are in place and the tunnel is half dead. Connected on the
 * mobile network, the laptop moves onto a wifi that is a hotel's: detourd must say "Sign in to this network" at
 * the move (not seconds later, once the tunnel gave up), and the router must see the check arrive from the
 * client's own underlay address on the client's link, never from a gateway.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { CAPTIVE_RULE_PREF } from "../../native/platform/captive-path.linux.ts";
import { agentLogs, agentStart, agentStop, keepAgentLog } from "./agent.ts";
import { captiveCounts, CHECK_ADDRESS, CHECK_URL, PORTAL_SIGN_IN_URL, portalOff, portalOn } from "./captive.ts";
import { nsRun } from "./exec.ts";
import * as lab from "./lab.ts";
import { waitForStatus } from "./wait-status.ts";

const ID = "capft";
const ARTIFACTS = join(new URL("../..", import.meta.url).pathname, "test-artifacts", "captive-full-tunnel");
/** A full-tunnel lab connects in a second or two at 0 ms; 20 s bounds a loaded machine. */
const CONNECT_WITHIN_MS = 20_000;
/** Bounds the wait only: a detourd that checks after the tunnel gave up takes its race's 5 s deadlines and more. */
const DETECT_WITHIN_MS = 45_000;
/**
 * The check runs at the network change (the monitor's settle time, then one round trip to the portal): well under
 * the 5 s a failing race takes before a detourd that only checks after giving up would say anything.
 */
const SAID_WITHIN_MS = 4_000;
const POLL_MS = 200;
/** A check's GET gives up after CAPTIVE_CHECK_TIMEOUT_MS (3 s); 10 s of polls bound a loaded machine. */
const RULES_GONE_TRIES = 50;
/** In the router: the sources the check host's HTTP arrives from, by the link it came in on. */
const SOURCES_TABLE = "capft_check_sources";

let client: ControlClient | null = null;

before(async () => {
  await lab.down(ID);
  const state = await lab.up(ID, { tunnel: "full", distance: "none" });
  const cfg = JSON.parse(readFileSync(state.clientConfig, "utf8")) as Record<string, unknown>;
  // Gateways by address, no telemetry: what detourd sends on its own goes to a gateway or the check host.
  delete cfg.discovery;
  delete cfg.telemetry;
  cfg.captive = { checkUrl: CHECK_URL };
  writeFileSync(state.clientConfig, JSON.stringify(cfg, null, 2) + "\n", { mode: 0o600 });
  const topo = lab.topologyOf(ID);
  const gatewayLinks = topo.gateways.map((g) => `"${g.routerSide.ifname}"`).join(", ");
  await nsRun(topo.router.ns, ["nft", "-f", "-"], {
    input: `table inet ${SOURCES_TABLE} {
 set from_client { type ipv4_addr; flags dynamic; }
 set from_gateways { type ipv4_addr; flags dynamic; }
 chain witness {
  type filter hook prerouting priority -300; policy accept;
  iifname "to-client" ip daddr ${CHECK_ADDRESS} tcp dport 80 add @from_client { ip saddr }
  iifname { ${gatewayLinks} } ip daddr ${CHECK_ADDRESS} tcp dport 80 add @from_gateways { ip saddr }
 }
}
`,
  });
});

after(async () => {
  client?.close();
  await agentStop(ID);
  // When each check ran, and why, is in detourd's log.
  keepAgentLog(ID, ARTIFACTS);
  await portalOff(ID).catch(() => undefined);
  await lab.down(ID);
});

/** The addresses a set of the router's witness holds. */
async function sources(set: "from_client" | "from_gateways"): Promise<string[]> {
  const out = await nsRun(lab.topologyOf(ID).router.ns, ["nft", "list", "set", "inet", SOURCES_TABLE, set]);
  const els = /elements = \{([^}]*)\}/.exec(out)?.[1] ?? "";
  return els
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "");
}

test(
  "full-tunnel-moved-into-a-hotel-network-the-check-leaves-on-the-underlay-and-detourd-says-sign-in-at-once",
  { timeout: 150_000 },
  async () => {
    const a = await agentStart(ID);
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const c = client;
    await c.connect();
    await waitForStatus(c, "connected (full tunnel)", (s) => s.state === "connected", CONNECT_WITHIN_MS, {
      context: () => agentLogs(ID, 40),
    });
    // On the mobile network first; meanwhile the wifi becomes a hotel's.
    await lab.move("mobile", {}, ID);
    const onMobile = await waitForStatus(
      c,
      "connected on mobile",
      (s) => s.state === "connected" && s.captive?.state !== "sign-in-required",
      CONNECT_WITHIN_MS,
      { context: () => agentLogs(ID, 40) },
    );
    await portalOn(ID);
    const topo = lab.topologyOf(ID);
    const routes = await nsRun(topo.client.ns, ["ip", "-4", "route", "show", "table", "all"]);
    assert.match(routes, /^default dev \S+ table 5000/m, "the full tunnel routes everything into its device");

    // Into the hotel with the tunnel up: its routes still send everything into it while it tries the new network.
    const moved = await lab.move("wifi", {}, ID);
    const s = await waitForStatus(
      c,
      "Sign in to this network",
      (x) => x.captive?.state === "sign-in-required",
      DETECT_WITHIN_MS,
      { context: () => agentLogs(ID, 60), pollMs: 50 },
    );
    const ms = Date.now() - moved.onlineAt;
    console.log(
      `detected ${String(ms)} ms after the move (was on ${String(onMobile.gateway)}): state ${s.state}; ${String(s.captive?.reason)}`,
    );
    assert.equal(s.captive?.portalUrl, PORTAL_SIGN_IN_URL, "the sign-in page is the redirect's target");

    const counts = await captiveCounts(ID);
    const fromClient = await sources("from_client");
    const fromGateways = await sources("from_gateways");
    console.log(
      `router: check from the client's link ${JSON.stringify(fromClient)}, through a gateway ${JSON.stringify(fromGateways)}; counts ${JSON.stringify(counts)}`,
    );
    assert.ok(counts.check > 0, "the check reached the router on the client's link");
    assert.deepEqual(fromClient, [topo.networks.wifi.address], "from the client's own underlay address");
    assert.deepEqual(fromGateways, [], "never through a gateway");
    // A check begun on the mobile network may still wait for its answer (its verdict is dropped); its rule goes
    // when it gives up (CAPTIVE_CHECK_TIMEOUT_MS).
    let left = "?";
    for (let i = 0; i < RULES_GONE_TRIES && left !== ""; i++) {
      if (i > 0) await sleep(POLL_MS);
      left = (await nsRun(topo.client.ns, ["ip", "rule", "show", "pref", String(CAPTIVE_RULE_PREF)])).trim();
    }
    assert.equal(left, "", "the check's underlay rules went with the checks");
    assert.ok(
      ms <= SAID_WITHIN_MS,
      `"Sign in" ${String(ms)} ms after the move: the check ran at the network change, not after the tunnel gave up`,
    );
  },
);
