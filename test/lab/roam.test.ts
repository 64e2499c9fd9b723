import assert from "node:assert/strict";
import { test } from "node:test";
import { gatewaySwanctlConf, ocservConf, gatewayPaths, type GatewaySecrets } from "./gateway-engines.ts";
import { accessNatRuleset } from "./netns.ts";
import {
  cgroup2Root,
  clientCgroup,
  joinLines,
  leaveLines,
  resolvConf,
  validateGapMs,
  validateSleepSeconds,
} from "./roam.ts";
import { labNamespaces, labTopology, ROLES } from "./topology.ts";

const topo = labTopology("rt");

test("joining-a-network-brings-its-link-up-with-addresses-and-default-routes-via-its-router", () => {
  const m = topo.networks.mobile;
  assert.deepEqual(joinLines(m), [
    "link set ul1 up",
    "addr replace 198.18.200.2/24 dev ul1",
    "addr replace 2001:db8:18:200::2/64 dev ul1 nodad",
    "route replace 0.0.0.0/0 via 198.18.200.1 dev ul1",
    "route replace ::/0 via 2001:db8:18:200::1 dev ul1",
  ]);
  assert.deepEqual(leaveLines(topo.networks.wifi), ["link set ul0 down", "addr flush dev ul0"]);
  assert.equal(resolvConf(m), "nameserver 198.18.200.1\nsearch lab.detour.test\n");
});

test("the-mobile-router-masquerades-its-client-subnet-in-both-families-on-its-uplink-only", () => {
  const r = accessNatRuleset(topo.mobileRouter);
  assert.match(r, /oifname "up0" ip saddr 198\.18\.200\.0\/24 counter masquerade/);
  assert.match(r, /oifname "up0" ip6 saddr 2001:db8:18:200::\/64 counter masquerade/);
  assert.match(r, /type nat hook postrouting priority srcnat/);
});

test("a-nat-wifi-puts-the-client-behind-a-home-router-that-masquerades-it-toward-the-labs-router", () => {
  const nat = labTopology("rt", { wifi: "nat" });
  const home = nat.homeRouter ?? assert.fail("no home router");
  const wifi = nat.networks.wifi;
  assert.equal(home.ns, "detour-rt-home");
  assert.equal(wifi.routerNs, home.ns, "the wifi's first hop is the home router");
  // The router's side of the wifi link is what it was: its impairments and counters stay on to-client.
  assert.deepEqual(
    [home.uplink.routerIfname, home.uplink.routerAddress, home.uplink.address],
    ["to-client", "198.18.0.1", "198.18.0.2"],
  );
  assert.deepEqual(
    [wifi.address, wifi.routerAddress, wifi.publicAddress],
    ["198.18.202.2", "198.18.202.1", "198.18.0.2"],
  );
  assert.ok(wifi.nat && nat.networks.mobile.nat, "both networks are NATed");
  assert.deepEqual([nat.client.address, nat.client.routerAddress], [wifi.address, wifi.routerAddress]);
  const r = accessNatRuleset(home);
  assert.match(r, /oifname "up0" ip saddr 198\.18\.202\.0\/24 counter masquerade/);
  assert.match(r, /oifname "up0" ip6 saddr 2001:db8:18:202::\/64 counter masquerade/);
  assert.doesNotMatch(r, /to-client/, "the client-side link is not rewritten: a witness there sees the client's own");
  assert.deepEqual(joinLines(wifi), [
    "link set ul0 up",
    "addr replace 198.18.202.2/24 dev ul0",
    "addr replace 2001:db8:18:202::2/64 dev ul0 nodad",
    "route replace 0.0.0.0/0 via 198.18.202.1 dev ul0",
    "route replace ::/0 via 2001:db8:18:202::1 dev ul0",
  ]);
  // The lab's other tests keep the direct wifi: no home router, the client on the router itself.
  assert.equal(topo.homeRouter, null);
  assert.deepEqual([topo.networks.wifi.address, topo.networks.wifi.routerNs], ["198.18.0.2", topo.router.ns]);
  assert.deepEqual(
    labNamespaces(topo).map(([r]) => r),
    ROLES.filter((r) => r !== "home"),
  );
  assert.ok(labNamespaces(nat).some(([r]) => r === "home"));
});

test("bad-gaps-and-sleeps-are-refused-with-a-reason", () => {
  assert.equal(validateGapMs(0), 0);
  assert.throws(() => validateGapMs(-1), /gap must be whole milliseconds 0-600000, got -1/);
  assert.throws(() => validateGapMs(1.5), /got 1\.5/);
  assert.throws(() => validateGapMs(600_001), /got 600001/);
  assert.equal(validateSleepSeconds(0.5), 0.5);
  assert.throws(() => validateSleepSeconds(0), /more than 0 and at most 3600 seconds, got 0/);
  assert.throws(() => validateSleepSeconds(Number.NaN), /got NaN/);
});

test("the-lab-cgroup-sits-under-the-cgroup2-mount-named-after-the-client-namespace", () => {
  const mountinfo = [
    "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory",
    "35 25 0:31 / /sys/fs/cgroup/unified rw,relatime shared:14 - cgroup2 cgroup2 rw",
  ].join("\n");
  assert.equal(cgroup2Root(mountinfo), "/sys/fs/cgroup/unified");
  assert.equal(cgroup2Root("30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory"), null);
  assert.equal(clientCgroup(topo, "/sys/fs/cgroup"), "/sys/fs/cgroup/detour-rt-client");
  assert.equal(clientCgroup(topo, null), null);
});

test("gateways-keep-a-silent-client-for-a-short-sleep-and-drop-it-after-a-long-one", () => {
  const gw = topo.gateways[0] ?? assert.fail("no gw1");
  // IKEv2: DPD after 30 s of silence, ~7 s of retransmits: a 30 s sleep keeps the IKE_SA, 5 minutes lose it.
  assert.match(gatewaySwanctlConf(topo, gw, "p"), /^\s*dpd_delay = 30s$/m);
  assert.match(gatewaySwanctlConf(topo, gw, "p"), /^\s*dpd_action = clear$/m);
  const secrets: GatewaySecrets = {
    wgPrivateKeyFile: "/k",
    clientWgPublicKey: "x",
    pskFile: "/p",
    psk: "p",
    certFile: "/c",
    keyFile: "/k",
    ocpasswdFile: "/o",
  };
  // AnyConnect: the session outlives a dropped connection by 2 minutes, so a 5 minute sleep needs a new login.
  const oc = ocservConf(gw, gatewayPaths("/lab", gw), secrets);
  assert.match(oc, /^cookie-timeout = 120$/m);
  assert.match(oc, /^dpd = 5$/m, "the DPD openconnect is told stays as every earlier test expects");
});
