/**
 * The real daemon (loop, modules, control facade) on a fake platform, fake engines and a fake clock: what a user
 * would notice of connecting, racing, failing over, losing every gateway, disconnecting, shutting down and a policy
 * change, with the wall clock stepped both ways underneath. No root, no sockets, no real time.
 */
import assert from "node:assert/strict";
import type { LinkDns } from "../core/dns-link.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DetourConfig } from "../core/config/schema.ts";
import { testConfig, writeTestKey, type TestConfigOptions } from "../../test/fakes/config.ts";
import { startDaemon, type DaemonRig } from "../../test/fakes/daemon-harness.ts";
import { fakeFinder, type FakeWorld, type GatewayScript } from "../../test/fakes/fake-platform.ts";
import { DaemonInfoSchema } from "../core/protocol/messages.ts";
import type { CandidateFinder } from "./candidate-refresh.ts";
import { discoverCandidates, type DnsResolver } from "./discovery.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-daemon-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});
const keyFile = writeTestKey(root);

const HOUR_MS = 3_600_000;

/** Three WireGuard gateways (gw1-gw3) unless a test names others. */
function config(over: TestConfigOptions = {}): DetourConfig {
  return testConfig({ keyFile, gateways: [1, 2, 3], ...over });
}

type Rig = DaemonRig;

function rig(
  gateways: Record<string, Partial<GatewayScript>>,
  cfg: DetourConfig = config(),
  finder?: (world: FakeWorld) => CandidateFinder,
): Promise<Rig> {
  return startDaemon({ root, config: cfg, gateways, finder });
}

/** Connects (gw1 wins) and waits for the warm standby, on gw2. */
async function connectedWithStandby(r: Rig): Promise<void> {
  void r.control.connect();
  await r.connected("gw1");
  assert.ok(await r.clock.until(() => r.control.status().standby !== null, 10_000), "a warm standby comes up");
  assert.equal(r.control.status().standby?.gateway, "gw2");
}

const deviceOf = (r: Rig, gw: string): string | undefined => r.world.running(gw)[0]?.spec.runtime.ifname;
const stepsOf = (r: Rig): string[] => r.world.calls.map((c) => `${c.step} ${c.detail}`.trim());

test("connect-races-and-routes-the-protected-networks-through-the-fastest-gateway", async () => {
  const r = await rig({ gw1: { connectMs: 120 }, gw2: { connectMs: 150 }, gw3: { connectMs: 200 } });
  let answered = false;
  void r.control.connect().then(() => {
    answered = true;
    assert.equal(
      r.world.killSwitch?.mode,
      "tunnel-only",
      "connect answers once the kill switch holds the protected networks",
    );
  });
  await r.connected("gw1");
  assert.ok(answered);
  const dev = deviceOf(r, "gw1");
  assert.equal(r.world.routedVia(), dev, "the protected networks go through gw1's tunnel");
  assert.deepEqual(r.world.dnsServers, ["198.19.0.53"], "the tunnel's resolvers are in force");
  const connected = r.heard.find((h) => h.event.type === "state" && h.event.state === "connected");
  assert.equal(connected?.routedVia, dev, "subscribers hear 'connected' once traffic already goes through the new leg");
  assert.equal(r.control.lastRace()?.winner?.gateway, "gw1");
  await r.control.shutdown();
});

test("a-failing-leg-starts-the-next-at-once-and-the-race-reports-why", async () => {
  const r = await rig({
    gw1: { connectMs: 40, refuse: "unreachable" },
    gw2: { connectMs: 100 },
    gw3: { connectMs: 100 },
  });
  const t0 = r.clock.monotonic();
  void r.control.connect();
  await r.connected("gw2");
  const gw2Start = r.world.calls.find((c) => c.step === "engine.start" && c.detail.startsWith("gw2"));
  assert.ok(
    gw2Start !== undefined && gw2Start.at - t0 < 100,
    `gw2 started when gw1 failed, not after the 250 ms stagger (at ${String(gw2Start?.at)})`,
  );
  const race = r.control.lastRace();
  assert.deepEqual(
    race?.legs.map((l) => [l.leg.gateway, l.outcome, l.error?.code ?? null]),
    [
      ["gw1", "failed", "unreachable"],
      ["gw2", "won", null],
      ["gw3", "cancelled", null],
    ],
  );
  await r.control.shutdown();
});

test("the-active-gateway-going-silent-fails-over-to-the-warm-standby", async () => {
  const r = await rig({ gw1: {}, gw2: {}, gw3: {} });
  await connectedWithStandby(r);
  const standbyDev = deviceOf(r, "gw2");
  const silentAt = r.clock.monotonic();
  r.world.set("gw1", { reachable: false });
  await r.connected("gw2");
  const f = r.control.lastFailover();
  assert.equal(f?.via, "standby", "routes moved to the standby: no race");
  assert.ok(f.detectedAfterMs < 600, `detected after ${String(f.detectedAfterMs)} ms`);
  assert.ok(r.clock.monotonic() - silentAt < 1000);
  assert.equal(r.world.routedVia(), standbyDev);
  // Make-before-break: the failed leg stops only after the routes moved.
  const steps = stepsOf(r);
  const moved = steps.lastIndexOf(`routes.apply ${String(standbyDev)} 198.19.0.0/24`);
  const stopped = steps.findIndex((s) => s.startsWith("engine.stop gw1"));
  assert.ok(moved >= 0 && stopped > moved, "gw1's tunnel is stopped after traffic moved to gw2");
  await r.control.shutdown();
});

test("without-a-fresh-standby-a-failover-race-moves-the-tunnel", async () => {
  const r = await rig(
    { gw1: {}, gw2: { connectMs: 150 }, gw3: { connectMs: 150 } },
    config({ standby: { mode: "off" } }),
  );
  void r.control.connect();
  await r.connected("gw1");
  r.world.set("gw1", { reachable: false });
  assert.ok(await r.clock.until(() => r.state() === "failing-over", 2000), "the silent tunnel is detected");
  assert.equal(r.world.routedVia(), deviceOf(r, "gw1"), "while the race runs, the failed leg keeps the routes");
  await r.connected("gw2");
  const f = r.control.lastFailover();
  assert.equal(f?.via, "race");
  assert.equal(f.to?.gateway, "gw2");
  assert.equal(r.world.routedVia(), deviceOf(r, "gw2"));
  await r.control.shutdown();
});

test("every-gateway-down-is-an-error-that-retries-until-one-comes-back", async () => {
  const r = await rig({ gw1: { reachable: false }, gw2: { reachable: false }, gw3: { reachable: false } });
  void r.control.connect();
  assert.ok(await r.clock.until(() => r.state() === "error", 20_000), "every leg timed out");
  const s = r.control.status();
  assert.match(s.summary, /retrying in \d+ s/);
  assert.ok(
    s.error?.nextRetryAt != null && s.error.nextRetryAt > r.clock.wall(),
    "the next retry is shown in wall time, ahead",
  );
  assert.equal(r.world.routedVia(), null);
  assert.notEqual(r.world.killSwitch, null, "protected networks stay held back in error");
  r.world.set("gw3", { reachable: true });
  await r.connected("gw3");
  assert.equal(r.world.routedVia(), deviceOf(r, "gw3"));
  await r.control.shutdown();
});

test("disconnect-stops-every-tunnel-and-puts-the-host-back", async () => {
  const r = await rig({ gw1: {}, gw2: {}, gw3: {} });
  await connectedWithStandby(r);
  r.control.disconnect();
  assert.ok(
    await r.clock.until(() => r.world.running().length === 0 && r.world.routes.size === 0, 5000),
    "tunnels stopped, routes gone",
  );
  assert.equal(r.state(), "disconnected");
  assert.equal(r.world.dnsServers, null, "the original resolv.conf is back");
  assert.equal(r.world.killSwitch, null, "without lockdown nothing is held back while disconnected");
  assert.ok(r.world.engines.every((e) => e.stopped));
  await r.control.shutdown();
});

test("shutdown-removes-the-kill-switch-last-even-when-restoring-dns-and-routes-fails", async () => {
  const r = await rig({ gw1: {}, gw2: {}, gw3: {} });
  void r.control.connect();
  await r.connected("gw1");
  r.world.failing.add("dns.restore");
  r.world.failing.add("routes.clear");
  await r.control.shutdown();
  const last = r.world.calls.at(-1);
  // The kill switch's removal is its table, then its routing backstop.
  assert.deepEqual(
    r.world.calls.slice(-2).map((c) => [c.step, c.detail]),
    [
      ["firewall.killSwitch", "off"],
      ["firewall.backstop", "off"],
    ],
    `the last change is the kill switch's removal: ${stepsOf(r).slice(-5).join("; ")}`,
  );
  assert.equal(r.world.killSwitch, null);
  assert.ok(
    r.world.engines.every((e) => e.stopped),
    "every engine stopped",
  );
  assert.ok(
    r.logs.some((l) => l.level === "error"),
    "the failed steps are reported",
  );
  // Nothing puts it back afterwards.
  await r.clock.advance(10_000);
  assert.deepEqual(r.world.calls.at(-1), last);
});

test("a-policy-that-forbids-the-active-gateway-moves-the-tunnel-make-before-break", async () => {
  const r = await rig({ gw1: {}, gw2: {}, gw3: {} });
  await connectedWithStandby(r);
  const moved = r.control.reconfigure(config({ gateways: [2, 3] }));
  assert.equal(moved, true, "the active leg is moved off");
  await r.connected("gw2");
  assert.equal(r.world.routedVia(), deviceOf(r, "gw2"));
  assert.equal(r.world.running("gw1").length, 0, "gw1's tunnel is gone");
  assert.deepEqual(
    r.control.candidates().map((c) => c.name),
    ["gw2", "gw3"],
    "gw1 is no longer a candidate",
  );
  await r.control.shutdown();
});

test("the-wall-clock-stepping-back-or-forward-neither-hides-a-dead-tunnel-nor-fakes-one", async () => {
  const r = await rig({ gw1: {}, gw2: {}, gw3: {} });
  await connectedWithStandby(r);
  // Forward two hours (a laptop's clock corrected after sleep): no silence is inferred, nothing moves.
  r.clock.stepWall(2 * HOUR_MS);
  await r.clock.advance(5000);
  assert.equal(r.gateway(), "gw1");
  assert.equal(r.control.lastFailover(), null, "a jump forward is not a dead tunnel");
  // Back one hour, then gw1 goes silent: detected as fast as ever, and the standby is still fresh.
  r.clock.stepWall(-HOUR_MS);
  r.world.set("gw1", { reachable: false });
  await r.connected("gw2");
  const f = r.control.lastFailover();
  assert.equal(f?.via, "standby");
  assert.ok(f.detectedAfterMs < 600, `detected after ${String(f.detectedAfterMs)} ms`);
  assert.ok(Math.abs(f.detectedAt - r.clock.wall()) < 2000, "the record reads in today's wall time");
  await r.control.shutdown();
});

test("the-error-state-keeps-retrying-when-the-wall-clock-steps-back", async () => {
  const r = await rig(
    { gw1: { reachable: false }, gw2: { reachable: false }, gw3: { reachable: false } },
    config({ retry: { initialMs: 1000, maxMs: 2000 } }),
  );
  void r.control.connect();
  assert.ok(await r.clock.until(() => r.state() === "error", 20_000));
  r.clock.stepWall(-HOUR_MS);
  r.world.set("gw1", { reachable: true });
  await r.connected("gw1");
  await r.control.shutdown();
});

test("a-hostile-gateway-push-cannot-widen-the-tunnel-nor-put-dns-in-clear", async () => {
  const hostile = {
    pushedRoutes: ["0.0.0.0/1", "128.0.0.0/1", "198.19.0.0/25", "198.18.2.0/24"],
    pushedDns: ["192.168.1.1", "127.0.0.1"],
  };
  const r = await rig({ gw1: { connectMs: 50, ...hostile }, gw2: { connectMs: 150 }, gw3: { connectMs: 200 } });
  void r.control.connect();
  await r.connected("gw1");
  await r.clock.advance(100);
  assert.deepEqual(
    [...r.world.routes.keys()].sort(),
    ["192.168.1.1/32", "198.19.0.0/24", "198.19.0.0/25"],
    "only the push inside the protected network, and a host route for the pushed resolver",
  );
  assert.deepEqual(r.world.dnsServers, ["192.168.1.1"], "the loopback resolver is dropped");
  assert.ok(
    r.world.killSwitch?.protectedNetworks.includes("192.168.1.1/32"),
    `the resolver is protected: ${JSON.stringify(r.world.killSwitch?.protectedNetworks)}`,
  );
  assert.deepEqual(
    [...r.world.routedUnprotected],
    [],
    "the kill switch protects a pushed prefix before the table sends it into the tunnel",
  );
  const refused = r.control.status().refused.map((x) => [x.kind, x.value, x.gateway]);
  assert.deepEqual(refused, [
    ["pushed-route", "0.0.0.0/1", "gw1"],
    ["pushed-route", "128.0.0.0/1", "gw1"],
    ["pushed-route", "198.18.2.0/24", "gw1"],
    ["pushed-dns", "127.0.0.1", "gw1"],
  ]);
  assert.match(r.control.status().refused[2]?.reason ?? "", /gateway's own address/);
  assert.match(r.control.status().refused[3]?.reason ?? "", /loopback/);
  assert.ok(r.logs.some((l) => l.level === "warn" && l.msg === "refused input from the network"));
  await r.control.shutdown();
});

/** The real discovery over a resolver that answers these A and AAAA records (a hostile network's DNS). */
function hostileDns(answers: Record<string, { a?: string[]; aaaa?: string[] }>): (world: FakeWorld) => CandidateFinder {
  const resolver: DnsResolver = {
    resolveSrv: () => Promise.resolve([]),
    resolve4: (name) => Promise.resolve(answers[name]?.a ?? []),
    resolve6: (name) => Promise.resolve(answers[name]?.aaaa ?? []),
    cancel: () => undefined,
  };
  return (world) => {
    const fake = fakeFinder(world);
    return {
      discover: (cfg, opts) => discoverCandidates(cfg, { ...opts, resolver }),
      probe: (candidates, opts) => fake.probe(candidates, opts),
    };
  };
}

/** gw2 and gw3 without a configured address: only DNS can say where they are. */
function unaddressedConfig(): DetourConfig {
  const c = config();
  return { ...c, gateways: c.gateways.map((g) => (g.name === "gw1" ? g : { ...g, address: undefined })) };
}

test("a-hostile-dns-answer-for-a-gateway-is-refused-and-never-becomes-a-kill-switch-allowance", async () => {
  const finder = hostileDns({
    "gw2.vpn.example.com": { a: ["198.19.0.7", "127.0.0.1"], aaaa: ["::ffff:198.19.0.8", "fe80::1"] },
    "gw3.vpn.example.com": { a: ["192.168.1.20", "198.18.3.2"] },
  });
  const r = await rig({ gw1: { connectMs: 50 }, gw2: {}, gw3: {} }, unaddressedConfig(), finder);
  void r.control.connect();
  await r.connected("gw1");
  await r.clock.advance(3000);
  const allowed = new Set(r.world.killSwitch?.gatewayEndpoints.map((e) => e.address));
  for (const bad of ["198.19.0.7", "127.0.0.1", "::ffff:c613:8", "fe80::1", "192.168.1.20"])
    assert.ok(!allowed.has(bad), `${bad} is no allowance: ${JSON.stringify([...allowed])}`);
  assert.ok(allowed.has("198.18.3.2"), "gw3's acceptable address is used");
  const refused = r.control.status().refused.filter((x) => x.kind === "gateway-address");
  assert.deepEqual(
    refused.map((x) => [x.gateway, x.value, x.source]),
    [
      ["gw2", "198.19.0.7", "dns"],
      ["gw2", "127.0.0.1", "dns"],
      ["gw2", "::ffff:c613:8", "dns"],
      ["gw2", "fe80::1", "dns"],
      ["gw3", "192.168.1.20", "dns"],
    ],
  );
  const reasons = Object.fromEntries(refused.map((x) => [x.value, x.reason]));
  assert.match(reasons["198.19.0.7"] ?? "", /inside the protected network 198\.19\.0\.0\/24/);
  assert.match(reasons["127.0.0.1"] ?? "", /loopback/);
  assert.match(reasons["::ffff:c613:8"] ?? "", /protected network/);
  assert.match(reasons["fe80::1"] ?? "", /link-local/);
  assert.match(reasons["192.168.1.20"] ?? "", /inside the local network 192\.168\.1\.7\/24/);
  assert.equal(r.control.status().candidates.find((c) => c.name === "gw2")?.address, null, "gw2 has no address");
  await r.control.shutdown();
});

test("without-the-local-networks-an-address-from-dns-is-refused-not-trusted", async () => {
  const finder = hostileDns({
    "gw2.vpn.example.com": { a: ["198.18.2.2"] },
    "gw3.vpn.example.com": { a: ["198.18.3.2"] },
  });
  const r = await rig({ gw1: { connectMs: 50 }, gw2: {}, gw3: {} }, unaddressedConfig(), (w) => {
    w.localNetworks = null;
    return finder(w);
  });
  void r.control.connect();
  await r.connected("gw1");
  await r.clock.advance(3000);
  const allowed = new Set(r.world.killSwitch?.gatewayEndpoints.map((e) => e.address));
  assert.ok(!allowed.has("198.18.2.2") && !allowed.has("198.18.3.2"), JSON.stringify([...allowed]));
  assert.match(r.control.status().refused[0]?.reason ?? "", /own networks could not be read/);
  assert.ok(r.logs.some((l) => l.level === "error" && /local networks could not be read/.test(l.msg)));
  await r.control.shutdown();
});

test("a-refresh-while-a-connect-waits-for-the-network-keeps-the-kill-switch-the-connect-put-in-force", async () => {
  const r = await rig({ gw1: { connectMs: 120 }, gw2: { connectMs: 150 } });
  const before = r.world.calls.length;
  const answer = r.control.connect();
  // A discovery round ends while the connect waits for the network's identity (the machine still "disconnected").
  r.control.refreshKillSwitch();
  await answer;
  await r.connected("gw1");
  const modes = r.world.calls
    .slice(before)
    .filter((c) => c.step === "firewall.killSwitch")
    .map((c) => c.detail);
  assert.ok(modes.length > 0 && !modes.includes("off"), `never lifted once connect put it in: ${modes.join(", ")}`);
  await r.control.shutdown();
});

test("a-resolv-conf-rewritten-by-other-software-while-connected-is-put-back-and-counted", async () => {
  const r = await rig({ gw1: { connectMs: 120 }, gw2: { connectMs: 150 } });
  void r.control.connect();
  await r.connected("gw1");
  assert.ok(r.world.dnsWatch !== null, "the tunnel's resolv.conf is watched while connected");
  // A network manager renews its lease and writes the network's resolver.
  r.world.dnsServers = ["192.168.1.1"];
  const watch = r.world.dnsWatch;
  watch();
  await r.clock.until(() => r.control.status().dns.reassertions === 1, 1_000);
  assert.deepEqual(r.world.dnsServers, ["198.19.0.53"], "the tunnel's resolvers are back at once");
  // A rewrite the watch misses is caught by the periodic check.
  r.world.dnsServers = ["192.168.1.1"];
  await r.clock.until(() => r.control.status().dns.reassertions === 2, 20_000);
  assert.deepEqual(r.world.dnsServers, ["198.19.0.53"]);
  r.control.disconnect();
  await r.clock.until(() => r.state() === "disconnected", 10_000);
  await r.clock.until(() => r.world.dnsWatch === null, 5_000);
  assert.equal(r.world.dnsWatch, null, "nothing is watched once the network's resolvers are back");
  assert.equal(r.control.status().dns.managed, false);
  await r.control.shutdown();
});

test("with-systemd-resolved-the-tunnel-link-gets-split-dns-that-follows-a-failover-and-is-reverted", async () => {
  const r = await rig(
    { gw1: {}, gw2: { connectMs: 150 }, gw3: { connectMs: 150 } },
    config({
      standby: { mode: "off" },
      tunnelDns: { servers: ["198.19.0.53", "fd00:19::53"], mode: "split", routingDomains: ["corp.example"] },
    }),
  );
  const links = new Map<string, LinkDns>();
  r.world.resolvedLinks = links;
  void r.control.connect();
  await r.connected("gw1");
  const dev1 = deviceOf(r, "gw1") ?? "?";
  assert.ok(await r.clock.until(() => links.has(dev1), 5_000), "the tunnel's link gets the DNS");
  assert.deepEqual(links.get(dev1), {
    // The tunnels carry IPv4 only: an IPv6 resolver would be asked in clear, so it is left out and reported.
    servers: ["198.19.0.53"],
    domains: [{ name: "corp.example", routeOnly: true }],
    defaultRoute: false,
  });
  assert.equal(r.world.dnsServers, null, "resolv.conf (resolved's stub) is left alone");
  const s = r.control.status().dns;
  assert.equal(s.backend, "resolved");
  assert.equal(s.link, dev1);
  assert.deepEqual(s.domains, ["~corp.example"]);
  assert.equal(s.managed, true);
  assert.match(s.lastError ?? "", /does not carry .*fd00:19::53/);
  // resolved restarts (or a network manager reverts the link): the periodic check puts the settings back.
  links.delete(dev1);
  await r.clock.until(() => r.control.status().dns.reassertions === 1, 20_000);
  assert.ok(links.has(dev1), "the link's settings are back");
  // A failover moves the link: the new device holds the DNS, the old one holds nothing.
  r.world.set("gw1", { reachable: false });
  await r.connected("gw2");
  const dev2 = deviceOf(r, "gw2") ?? "?";
  assert.ok(await r.clock.until(() => links.has(dev2) && !links.has(dev1), 5_000), [...links.keys()].join());
  assert.equal(r.control.status().dns.link, dev2);
  r.control.disconnect();
  await r.clock.until(() => r.state() === "disconnected", 10_000);
  assert.ok(await r.clock.until(() => links.size === 0, 5_000), "disconnect reverts the link");
  assert.equal(r.control.status().dns.backend, null);
  await r.control.shutdown();
});

test("a-resolved-link-that-cannot-take-the-dns-is-reported-not-only-logged", async () => {
  const r = await rig({ gw1: {}, gw2: { connectMs: 150 } });
  r.world.resolvedLinks = new Map();
  r.world.failing.add("dns.linkApply");
  void r.control.connect();
  await r.connected("gw1");
  assert.ok(await r.clock.until(() => r.control.status().dns.lastError !== null, 5_000));
  assert.match(r.control.status().dns.lastError ?? "", /dns\.linkApply failed/);
  await r.control.shutdown();
});

const path = (source: string): { dev: string; gateway: string; source: string } => ({
  dev: "eth0",
  gateway: "192.168.1.1",
  source,
});

test("offline-from-the-network-monitor-waits-for-a-network-with-the-kill-switch-held-and-a-route-back-connects", async () => {
  const r = await rig({ gw1: { connectMs: 80 }, gw2: { connectMs: 120 }, gw3: { connectMs: 150 } });
  const mon = r.world.netmon;
  assert.ok(mon !== null, "detourd subscribed to the network monitor at start");
  await connectedWithStandby(r);
  const wall = r.clock.wall();
  mon.change({
    at: wall,
    kind: "offline",
    initial: false,
    path: null,
    previous: path("192.168.1.7"),
    reason: "no route toward the gateways",
  });
  await r.clock.advance(50);
  assert.equal(r.state(), "waiting-for-network");
  assert.equal(r.control.status().summary, "Waiting for a network: no route to any gateway");
  assert.equal(r.world.running().length, 0, "no tunnel runs while offline");
  assert.notEqual(r.world.killSwitch, null, "protected networks stay held back");
  assert.equal(r.control.status().lastFailover, null, "losing the network is no gateway's failure");
  await r.clock.advance(30_000);
  assert.equal(r.state(), "waiting-for-network", "no retry churn while offline");
  const idsBefore = r.world.calls.filter((c) => c.step === "network.id").length;
  mon.change({
    at: r.clock.wall(),
    kind: "online",
    initial: false,
    path: path("10.0.0.7"),
    previous: null,
    reason: "a route toward the gateways",
  });
  const t0 = r.clock.monotonic();
  await r.connected("gw1");
  assert.ok(r.clock.monotonic() - t0 < 1000, `connected ${String(r.clock.monotonic() - t0)} ms after the route`);
  assert.ok(
    r.world.calls.filter((c) => c.step === "network.id").length > idsBefore,
    "the new network is identified for its memory",
  );
  assert.equal(r.control.status().network.monitor?.online, true);
  await r.control.shutdown();
  assert.equal(r.world.netmon, null, "the monitor is unsubscribed at shutdown");
});

test("a-wall-clock-jump-of-a-suspend-is-a-wake-the-tunnel-is-checked-at-once-and-kept", async () => {
  const r = await rig({ gw1: { connectMs: 80 }, gw2: { connectMs: 120 }, gw3: { connectMs: 150 } });
  await connectedWithStandby(r);
  // Suspended for five minutes: the monotonic clock stood still, the wall clock did not.
  r.clock.stepWall(300_000);
  await r.clock.advance(1_100);
  assert.ok(
    r.logs.some((l) => l.msg === "woke up"),
    "the sleep is noticed",
  );
  assert.equal(r.control.status().network.monitor?.wakes, 1);
  await r.clock.advance(500);
  assert.equal(r.state(), "connected");
  assert.equal(r.gateway(), "gw1", "a session that survived keeps its gateway");
  assert.equal(r.control.status().lastFailover, null);
  assert.doesNotMatch(r.control.status().summary, /checking/, "the first reply ended the check");
  await r.control.shutdown();
});

test("logind's-resume-checks-the-tunnel-at-once-and-the-clock-jump-after-it-is-the-same-wake", async () => {
  const r = await rig({ gw1: { connectMs: 80 }, gw2: { connectMs: 120 }, gw3: { connectMs: 150 } });
  await connectedWithStandby(r);
  const logind = r.world.sleepWatch;
  assert.ok(logind !== null, "the daemon listens to the platform's sleep monitor");
  logind.state("listening", "org.freedesktop.login1 is :1.2");
  logind.prepareForSleep({ at: r.clock.wall(), sleeping: true });
  assert.equal(r.state(), "connected", "about to sleep takes nothing down");
  assert.notEqual(r.world.killSwitch, null, "the kill switch stays in force");
  r.clock.stepWall(300_000);
  logind.prepareForSleep({ at: r.clock.wall(), sleeping: false });
  // Before any tick could see the clocks' jump: the check is running already.
  assert.match(r.control.status().summary, /checking the tunnel after waking up/);
  await r.clock.advance(1_100);
  const s = r.control.status().network.monitor;
  assert.equal(s?.wakes, 1, "one resume, one wake");
  assert.equal(s.sleep.absorbed, 0, "the clocks' baseline moved past the sleep");
  assert.equal(s.sleep.lastWake?.source, "logind");
  assert.deepEqual(s.sleep.sources, ["clock", "logind"]);
  assert.equal(r.state(), "connected");
  assert.equal(r.gateway(), "gw1", "a session that survived keeps its gateway");
  assert.equal(r.control.status().lastFailover, null);
  await r.control.shutdown();
  assert.equal(r.world.sleepWatch, null, "the sleep monitor is unsubscribed at shutdown");
});

test("a-network-change-from-the-monitor-reaches-subscribers-such-as-trusted-network-detection", async () => {
  const r = await rig({ gw1: { connectMs: 80 }, gw2: { connectMs: 120 } });
  const mon = r.world.netmon;
  assert.ok(mon !== null);
  let heard = 0;
  const stop = r.control.onNetworkChange(() => {
    heard += 1;
  });
  mon.change({
    at: r.clock.wall(),
    kind: "path-changed",
    initial: false,
    path: path("10.0.0.7"),
    previous: path("192.168.1.7"),
    reason: "the default route moved",
  });
  await r.clock.advance(50);
  assert.equal(heard, 1, "a subscriber hears the change");
  stop();
  mon.change({
    at: r.clock.wall(),
    kind: "path-changed",
    initial: false,
    path: path("10.0.0.8"),
    previous: path("10.0.0.7"),
    reason: "the default route moved again",
  });
  await r.clock.advance(50);
  assert.equal(heard, 1, "an unsubscribed listener hears nothing");
  await r.control.shutdown();
});

test("status-reports-the-daemons-memory-so-a-soak-tells-a-leak-from-warm-up", async () => {
  const r = await rig({ gw1: { connectMs: 120 } });
  const m = r.control.status().daemon.memory;
  assert.ok(m.rss > 0 && m.heapUsed > 0, `rss and heap used are the process's own: ${JSON.stringify(m)}`);
  assert.ok(m.external >= 0 && m.arrayBuffers >= 0);
  assert.equal(DaemonInfoSchema.safeParse(r.control.status().daemon).success, true, "the wire schema accepts it");
  await r.control.shutdown();
});

test("an-idle-tunnel-probes-every-two-seconds-and-user-traffic-seen-by-the-kill-switch-brings-the-fast-pace-back", async () => {
  // With detourd's own group the kill switch traces user traffic into the tunnel (firewall.linux.ts).
  const r = await startDaemon({
    root,
    config: config(),
    gateways: { gw1: { connectMs: 120 }, gw2: { connectMs: 150 }, gw3: { connectMs: 200 } },
    ownGroup: 64950,
  });
  await connectedWithStandby(r);
  const active = r.control.status().activeLegId ?? "";
  const standby = r.control.status().standby?.legId ?? "";
  assert.equal(r.world.probeIntervals.get(active), 25, "fast while the tunnel is new");
  await r.clock.advance(10_000);
  assert.equal(r.world.probeIntervals.get(active), 2000, "one probe every two seconds once idle");
  assert.equal(r.world.probeIntervals.get(standby), 4000, "the standby every four seconds");
  const before = r.world.probesSent;
  await r.clock.advance(10_000);
  assert.ok(r.world.probesSent - before <= 8, `idle: ${String(r.world.probesSent - before)} probes in 10 s`);
  r.world.firewallWatch?.activity?.();
  await r.clock.advance(0);
  assert.equal(r.world.probeIntervals.get(active), 25, "user traffic: fast at once");
  assert.equal(r.world.probeIntervals.get(standby), 250);
  assert.equal(r.control.status().state, "connected");
  await r.control.shutdown();
});

test("without-its-own-group-detourd-cannot-see-user-traffic-and-keeps-the-fast-pace", async () => {
  const r = await rig({ gw1: { connectMs: 120 }, gw2: { connectMs: 150 }, gw3: { connectMs: 200 } });
  void r.control.connect();
  await r.connected("gw1");
  await r.clock.advance(10_000);
  assert.equal(r.world.probeIntervals.get(r.control.status().activeLegId ?? ""), 25);
  await r.control.shutdown();
});
