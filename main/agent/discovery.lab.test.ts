/**
 * Discovery and candidate probes from inside the lab's client namespace, as detourd runs them: the real dnsmasq
 * (SRV + A) and the real gateways, then with gw1's TLS port blocked, a gateway engine gone, and DNS unreachable.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { parseConfig, type DetourConfig } from "../core/config/schema.ts";
import type { Candidate, CandidateProbe } from "../core/connection/types.ts";
import * as lab from "../../test/lab/lab.ts";
import { USER_DISTANCES } from "../../test/lab/topology.ts";
import type { DiscoveryResult } from "./discovery.ts";
import { runInNetns } from "../../test/lab/tools/agent-io-child.ts";

const ID = "disc";
/** detourd's own bound is 2 s; 1.5 s keeps this file short and is still hundreds of lab round trips. */
const TIMEOUT_MS = 1500;
/**
 * Probing all three healthy gateways at once takes, for the farthest, a TCP round trip, a TLS handshake (one more)
 * and the UDP refusal window after the TCP answer (one more): three of its round trips, plus 500 ms for the
 * work itself on a busy machine. Still short of the 1.5 s bound a silent gateway would make it wait for.
 */
const HEALTHY_PROBE_MS = 500 + 3 * Math.max(...Object.values(USER_DISTANCES).map((d) => d.rttMs + 2 * d.jitterMs));

type Outcome = DiscoveryResult & { probes: CandidateProbe[]; discoverMs: number; probeMs: number };

const topo = lab.topologyOf(ID);
let config: DetourConfig;

before(async () => {
  await lab.down(ID);
  const state = await lab.up(ID);
  const parsed = parseConfig(JSON.parse(readFileSync(state.clientConfig, "utf8")));
  if (!parsed.ok) throw new Error(`lab config invalid: ${JSON.stringify(parsed.issues)}`);
  // gw2 and gw3 lose their configured address, so only the lab's DNS can tell where they are.
  config = {
    ...parsed.config,
    gateways: parsed.config.gateways.map((g) => (g.name === "gw1" ? g : { ...g, address: undefined })),
  };
});
after(async () => {
  await lab.down(ID);
});

async function discoverInClient(): Promise<Outcome> {
  const r = await runInNetns<Outcome>(topo.client.ns, { op: "discover", config, timeoutMs: TIMEOUT_MS, probe: true });
  const line = r.candidates
    .map((c, i) => `${c.name}=${String(c.address)} [${c.sources.join("+")}] ${JSON.stringify(r.probes[i])}`)
    .join("\n  ");
  console.log(
    `discovery ${r.discoverMs.toFixed(1)} ms, probes ${r.probeMs.toFixed(1)} ms, problems ${JSON.stringify(r.problems.map((p) => p.message))}\n  ${line}`,
  );
  return r;
}

function probeOf(r: Outcome, name: string): { c: Candidate; p: CandidateProbe } {
  const i = r.candidates.findIndex((c) => c.name === name);
  const c = r.candidates[i];
  const p = r.probes[i];
  if (c === undefined || p === undefined) throw new Error(`${name} missing`);
  return { c, p };
}

test("dns-and-probes-find-all-three-gateways-from-inside-the-client-namespace", { timeout: 60_000 }, async () => {
  const r = await discoverInClient();
  assert.deepEqual(r.problems, []);
  assert.deepEqual(r.unpinned, []);
  for (const g of topo.gateways) {
    const { c, p } = probeOf(r, g.name);
    assert.equal(c.address, g.address, `${g.name}: address (configured for gw1, from DNS for the others)`);
    assert.ok(c.sources.includes("dns"), `${g.name}: named by the lab's SRV records`);
    assert.deepEqual(c.kinds, ["wireguard", "ikev2", "anyconnect-tls", "anyconnect-dtls"]);
    assert.ok(p.latencyMs !== null && p.latencyMs < HEALTHY_PROBE_MS, `${g.name}: latency ${String(p.latencyMs)}`);
    assert.deepEqual(p.reachable, {
      wireguard: "unknown",
      ikev2: "unknown",
      "anyconnect-tls": "yes",
      "anyconnect-dtls": "unknown",
    });
    if (g.name !== "gw1") {
      // Resolved by name: A and AAAA both answered, and both families were probed; IPv6 works, so it is chosen.
      assert.deepEqual(c.addresses, { ipv4: g.address, ipv6: g.address6 }, `${g.name}: both families from DNS`);
      assert.equal(p.families?.ipv6?.works, true);
      assert.equal(p.families.ipv4?.works, true);
      assert.equal(p.address, g.address6, `${g.name}: the probe chose IPv6`);
    }
  }
  assert.ok(r.discoverMs < TIMEOUT_MS, `DNS answered before the bound (${r.discoverMs.toFixed(1)} ms)`);
  assert.ok(
    r.probeMs < HEALTHY_PROBE_MS,
    `all gateways answered: probing did not wait for the bound (${r.probeMs.toFixed(1)} ms)`,
  );
});

test("gw1-with-tls-blocked-is-anyconnect-no-and-has-no-latency", { timeout: 60_000 }, async () => {
  const imp = await lab.impair({ kind: "block", target: "gw1", proto: "tls", dir: "both" }, ID);
  try {
    const r = await discoverInClient();
    const gw1 = probeOf(r, "gw1").p;
    assert.equal(gw1.latencyMs, null, "a silently dropped SYN gives no latency");
    assert.equal(gw1.reachable["anyconnect-tls"], "no");
    assert.equal(gw1.reachable["anyconnect-dtls"], "no", "DTLS needs the TLS session first");
    assert.equal(gw1.reachable.wireguard, "unknown", "UDP to gw1 is untouched and silent");
    for (const name of ["gw2", "gw3"]) {
      const { p } = probeOf(r, name);
      assert.ok(
        p.latencyMs !== null && p.latencyMs < HEALTHY_PROBE_MS,
        `${name} still has a latency: ${String(p.latencyMs)}`,
      );
      assert.equal(p.reachable["anyconnect-tls"], "yes");
    }
    assert.ok(
      r.probeMs >= TIMEOUT_MS - 50 && r.probeMs < TIMEOUT_MS + 500,
      `probing waited for gw1 up to the bound (${r.probeMs.toFixed(1)} ms)`,
    );
  } finally {
    await lab.lift(imp.id, ID);
  }
});

test("a-gateway-whose-wireguard-is-gone-answers-port-unreachable-so-wireguard-is-no", { timeout: 60_000 }, async () => {
  await lab.kill("gw2", "wireguard", ID);
  try {
    const r = await discoverInClient();
    const gw2 = probeOf(r, "gw2").p;
    assert.equal(gw2.reachable.wireguard, "no", "the ICMP port-unreachable reached the client's connected UDP socket");
    assert.equal(gw2.reachable.ikev2, "unknown");
    assert.equal(gw2.reachable["anyconnect-tls"], "yes");
    assert.equal(probeOf(r, "gw1").p.reachable.wireguard, "unknown");
  } finally {
    await lab.restore("gw2", "wireguard", ID);
  }
});

test("unreachable-dns-degrades-to-the-configured-gateways-and-is-reported", { timeout: 60_000 }, async () => {
  // Every UDP datagram of the client is dropped, DNS queries included; TCP still works.
  const imp = await lab.impair({ kind: "block", target: "client", proto: "udp", dir: "both" }, ID);
  try {
    const r = await discoverInClient();
    assert.ok(
      r.discoverMs >= TIMEOUT_MS - 50 && r.discoverMs < TIMEOUT_MS + 500,
      `bounded by the timeout (${r.discoverMs.toFixed(1)} ms)`,
    );
    assert.deepEqual(
      r.candidates.map((c) => [c.name, c.address, c.sources]),
      [
        ["gw1", topo.gateways[0]?.address, ["config"]],
        ["gw2", null, ["config"]],
        ["gw3", null, ["config"]],
      ],
    );
    const msgs = r.problems.map((p) => p.message).join("\n");
    assert.match(msgs, /SRV _detour-wireguard\._udp\.lab\.detour\.test: (timed out|ECANCELLED|ETIMEOUT)/);
    assert.match(msgs, /gw2: no address configured, from DNS or from the portal/);
    assert.equal(probeOf(r, "gw1").p.reachable["anyconnect-tls"], "yes", "the configured gateway is still probed");
  } finally {
    await lab.lift(imp.id, ID);
  }
});
