/** The kill switch's nftables text: the exact table per mode, the replace-in-one-transaction framing, refused input, counters. */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  killSwitchPolicy,
  legEndpoints,
  type KillSwitchInput,
  type KillSwitchRules,
} from "../../main/core/killswitch.ts";
import {
  countedPackets,
  parseCounters,
  renderApplyTransaction,
  renderFallbackTransaction,
  renderKillSwitch,
  renderRemoveTransaction,
} from "./firewall.linux.ts";

const ports = { wireguard: { port: 51820 }, anyconnect: { port: 443 } };

/** Racing under lockdown by default: the blocking table, the one with every kind of rule in it. */
function rulesFor(over: Partial<KillSwitchInput>): KillSwitchRules {
  const r = killSwitchPolicy({
    state: "racing",
    lockdown: true,
    protectedNetworks: ["198.19.0.0/24"],
    gatewayEndpoints: [
      ...legEndpoints("wireguard", "198.18.1.2", ports),
      ...legEndpoints("anyconnect-tls", "198.18.2.2", ports),
    ],
    tunnelDevices: ["dt-L1", "ipsec*"],
    dnsServers: ["198.18.53.2"],
    ...over,
  });
  assert.ok(r !== null);
  return r;
}

test("racing-renders-allowances-then-counted-drops-and-a-witness-that-mirrors-them", () => {
  assert.equal(
    renderKillSwitch(rulesFor({})),
    `table inet detour_killswitch {
	comment "detour kill switch: blocking (racing)"
	set protected4 {
		type ipv4_addr
		flags interval
		elements = { 198.19.0.0/24 }
	}
	chain output {
		type filter hook output priority filter; policy accept;
		oifname "lo" counter accept comment "loopback"
		oifname "dt-L1" counter accept comment "tunnel-device dt-L1"
		oifname "ipsec*" counter accept comment "tunnel-device ipsec*"
		ip daddr 198.18.1.2 udp dport 51820 counter accept comment "gateway-endpoint udp 198.18.1.2:51820"
		ip daddr 198.18.2.2 tcp dport 443 counter accept comment "gateway-endpoint tcp 198.18.2.2:443"
		ip daddr 198.18.53.2 meta l4proto { tcp, udp } th dport 53 counter accept comment "discovery-dns 198.18.53.2"
		meta nfproto ipv4 udp sport 68 udp dport 67 counter accept comment "underlay-upkeep dhcpv4"
		ip6 daddr ff02::1:2 udp sport 546 udp dport 547 counter accept comment "underlay-upkeep dhcpv6"
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment "underlay-upkeep ipv6-nd"
		ip daddr @protected4 counter drop comment "protected-outside-tunnel"
		counter drop comment "underlay-blocked"
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname "dt-L1" counter accept comment "tunnel-device dt-L1"
		oifname "ipsec*" counter accept comment "tunnel-device ipsec*"
		ip daddr @protected4 counter drop comment "protected-outside-tunnel"
		counter drop comment "underlay-blocked"
	}
	chain leak_witness {
		type filter hook postrouting priority 300; policy accept;
		oifname "lo" return
		oifname "dt-L1" return
		oifname "ipsec*" return
		ip daddr 198.18.1.2 udp dport 51820 return
		ip daddr 198.18.2.2 tcp dport 443 return
		ip daddr 198.18.53.2 meta l4proto { tcp, udp } th dport 53 return
		meta nfproto ipv4 udp sport 68 udp dport 67 return
		ip6 daddr ff02::1:2 udp sport 546 udp dport 547 return
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } return
		ip daddr @protected4 counter comment "protected-escaped"
	}
}
`,
  );
});

test("connected-split-tunnel-drops-only-protected-traffic-outside-the-tunnels", () => {
  const text = renderKillSwitch(rulesFor({ state: "connected", tunnelDevices: ["dt-L1", "dt-L3"] }));
  assert.match(text, /comment "detour kill switch: tunnel-only \(connected\)"/);
  assert.doesNotMatch(
    text,
    /underlay-blocked|underlay-upkeep|discovery-dns/,
    "the rest of the underlay is not the kill switch's business",
  );
  assert.match(text, /oifname "dt-L3" counter accept comment "tunnel-device dt-L3"/);
  assert.match(
    text,
    /ip daddr 198\.18\.1\.2 udp dport 51820 counter accept/,
    "endpoints stay allowed in case a gateway lies in a protected network",
  );
  const output = text.split("chain output")[1]?.split("}")[0] ?? "";
  assert.ok(output.trimEnd().endsWith('ip daddr @protected4 counter drop comment "protected-outside-tunnel"'), output);
});

test("full-tunnel-protects-everything-and-counts-escaping-ipv6-too", () => {
  const text = renderKillSwitch(rulesFor({ state: "connected", protectedNetworks: ["198.19.0.0/24", "0.0.0.0/0"] }));
  assert.match(text, /elements = \{ 0\.0\.0\.0\/0 \}/);
  assert.match(text, /counter drop comment "underlay-blocked"/);
  assert.match(text, /meta nfproto ipv6 counter comment "protected-escaped"/);
  assert.doesNotMatch(text, /discovery-dns/, "connected: DNS goes through the tunnel");
});

test("an-empty-protected-set-is-declared-without-elements", () => {
  const rules: KillSwitchRules = { ...rulesFor({}), protectedNetworks: [] };
  const text = renderKillSwitch(rules);
  assert.match(text, /flags interval\n\t\}/);
  assert.doesNotMatch(text, /elements/);
});

test("apply-replaces-the-table-in-one-transaction-and-remove-tolerates-absence", () => {
  const rules = rulesFor({});
  const tx = renderApplyTransaction(rules);
  assert.ok(
    tx.startsWith(
      "add table inet detour_killswitch\ndelete table inet detour_killswitch\ntable inet detour_killswitch {\n",
    ),
    tx.slice(0, 120),
  );
  assert.equal(tx.match(/^table /gm)?.length, 1, "one table definition");
  assert.equal(renderApplyTransaction(rules), tx, "same rules, same text: the daemon can skip a no-op apply");
  assert.equal(renderRemoveTransaction(), "add table inet detour_killswitch\ndelete table inet detour_killswitch\n");
});

test("hand-built-rules-cannot-inject-nft-syntax", () => {
  const base = rulesFor({});
  assert.throws(
    () => renderKillSwitch({ ...base, tunnelDevices: ['x" accept; flush ruleset; "'] }),
    /invalid tunnel device/,
  );
  assert.throws(() => renderKillSwitch({ ...base, tunnelDevices: ["lo"] }), /invalid tunnel device/);
  assert.throws(
    () => renderKillSwitch({ ...base, protectedNetworks: ["198.19.0.0/24 }"] }),
    /invalid protected network/,
  );
  assert.throws(() => renderKillSwitch({ ...base, dnsServers: ["198.18.53.2 accept"] }), /invalid DNS server/);
  assert.throws(
    () => renderKillSwitch({ ...base, gatewayEndpoints: [{ address: "198.18.1.2", protocol: "udp", port: 70000 }] }),
    /invalid endpoint port/,
  );
});

/** Trimmed from `nft -j list table inet detour_killswitch` (nftables 1.0.6). */
const LISTING = JSON.stringify({
  nftables: [
    { metainfo: { version: "1.0.6", json_schema_version: 1 } },
    { table: { family: "inet", name: "detour_killswitch", handle: 3 } },
    {
      rule: {
        family: "inet",
        table: "detour_killswitch",
        chain: "output",
        handle: 5,
        comment: "loopback",
        expr: [{ match: {} }, { counter: { packets: 4, bytes: 336 } }, { accept: null }],
      },
    },
    {
      rule: {
        family: "inet",
        table: "detour_killswitch",
        chain: "output",
        handle: 8,
        comment: "gateway-endpoint udp 198.18.1.2:51820",
        expr: [{ match: {} }, { counter: { packets: 3, bytes: 412 } }, { accept: null }],
      },
    },
    {
      rule: {
        family: "inet",
        table: "detour_killswitch",
        chain: "output",
        handle: 14,
        comment: "protected-outside-tunnel",
        expr: [{ match: {} }, { counter: { packets: 20, bytes: 1120 } }, { drop: null }],
      },
    },
    {
      rule: {
        family: "inet",
        table: "detour_killswitch",
        chain: "forward",
        handle: 20,
        comment: "protected-outside-tunnel",
        expr: [{ match: {} }, { counter: { packets: 2, bytes: 112 } }, { drop: null }],
      },
    },
    {
      rule: {
        family: "inet",
        table: "detour_killswitch",
        chain: "leak_witness",
        handle: 30,
        expr: [{ match: {} }, { return: null }],
      },
    },
    {
      rule: {
        family: "inet",
        table: "detour_killswitch",
        chain: "leak_witness",
        handle: 31,
        comment: "protected-escaped",
        expr: [{ match: {} }, { counter: { packets: 0, bytes: 0 } }],
      },
    },
    {
      rule: {
        family: "inet",
        table: "detour_killswitch",
        chain: "output",
        handle: 40,
        comment: "someone else's",
        expr: [{ counter: { packets: 9, bytes: 9 } }],
      },
    },
  ],
});

test("counters-are-read-per-rule-with-their-purpose", () => {
  const counters = parseCounters(LISTING);
  assert.deepEqual(
    counters.map((c) => `${c.chain}/${c.purpose}/${c.detail}=${String(c.packets)}`),
    [
      "output/loopback/=4",
      "output/gateway-endpoint/udp 198.18.1.2:51820=3",
      "output/protected-outside-tunnel/=20",
      "forward/protected-outside-tunnel/=2",
      "leak_witness/protected-escaped/=0",
    ],
  );
  assert.equal(countedPackets(counters, "protected-outside-tunnel"), 22);
  assert.equal(countedPackets(counters, "protected-outside-tunnel", "forward"), 2);
  assert.equal(countedPackets(counters, "protected-escaped"), 0);
  assert.equal(countedPackets(counters, "underlay-blocked"), 0, "absent purposes count zero");
  assert.throws(() => parseCounters("{}"), /without an nftables array/);
  assert.throws(() => parseCounters("not json"), SyntaxError);
});

test("ipv6-gateway-endpoints-and-resolvers-are-matched-as-ip6-in-the-same-inet-table", () => {
  const text = renderKillSwitch(
    rulesFor({
      gatewayEndpoints: [
        ...legEndpoints("wireguard", "198.18.1.2", ports),
        ...legEndpoints("anyconnect-tls", "2001:db8:18:2::2", ports),
      ],
      dnsServers: ["198.18.53.2", "2001:db8:18:53::2"],
    }),
  );
  assert.match(text, /^table inet detour_killswitch \{/);
  assert.match(
    text,
    /\t\tip daddr 198\.18\.1\.2 udp dport 51820 counter accept comment "gateway-endpoint udp 198\.18\.1\.2:51820"\n/,
  );
  assert.match(
    text,
    /\t\tip6 daddr 2001:db8:18:2::2 tcp dport 443 counter accept comment "gateway-endpoint tcp \[2001:db8:18:2::2\]:443"\n/,
  );
  assert.match(
    text,
    /\t\tip6 daddr 2001:db8:18:53::2 meta l4proto \{ tcp, udp \} th dport 53 counter accept comment "discovery-dns 2001:db8:18:53::2"\n/,
  );
  assert.match(text, /\t\tip6 daddr 2001:db8:18:2::2 tcp dport 443 return\n/, "the witness skips the allowance too");
  // Blocking ends with a drop that has no family match: every other IPv6 packet is dropped like IPv4.
  assert.match(text, /\t\tcounter drop comment "underlay-blocked"\n\t\}\n\tchain forward/);
});

test("underlay-allowances-are-bound-to-detourds-own-group-and-dhcp-and-nd-are-not", () => {
  const text = renderKillSwitch(rulesFor({ ownGroup: 64950, ownResolvers: ["198.18.0.53"] }));
  const accepts = text
    .split("\n")
    .filter((l) => / accept comment "(gateway-endpoint|discovery-dns|own-resolver)/.test(l));
  assert.equal(accepts.length, 4, text);
  for (const l of accepts) assert.match(l, /^\t\tmeta skgid 64950 ip6? daddr /, l);
  assert.match(
    text,
    /meta skgid 64950 ip daddr 198\.18\.0\.53 meta l4proto \{ tcp, udp \} th dport 53 counter accept comment "own-resolver 198\.18\.0\.53"/,
  );
  // The witness exempts exactly what the filter accepts: another process's DNS to the resolver is counted as a leak.
  assert.match(text, /meta skgid 64950 ip daddr 198\.18\.53\.2 meta l4proto \{ tcp, udp \} th dport 53 return/);
  assert.match(text, /\t\tmeta nfproto ipv4 udp sport 68 udp dport 67 counter accept comment "underlay-upkeep dhcpv4"/);
  assert.match(text, /\t\tip6 daddr ff02::1:2 udp sport 546 udp dport 547 counter accept/);
  // IKE from detourd's engines to anything but a gateway endpoint (MOBIKE's announced addresses) never leaves.
  const output = text.slice(text.indexOf("chain output"), text.indexOf("chain forward"));
  const ikeDrop = output.indexOf('meta skgid 64950 udp dport { 500, 4500 } counter drop comment "ike-off-gateway"');
  assert.ok(ikeDrop > output.lastIndexOf(" accept comment "), `after every allowance:\n${output}`);
  assert.ok(!text.slice(text.indexOf("chain forward")).includes("ike-off-gateway"), "not in forward or the witness");
  assert.ok(!renderKillSwitch(rulesFor({})).includes("ike-off-gateway"), "unbound rules have nothing to bind it to");
  assert.throws(() => renderKillSwitch({ ...rulesFor({}), ownGroup: 0 }), /invalid own group id 0/);
  assert.throws(
    () => renderKillSwitch({ ...rulesFor({}), ownResolvers: ["1.2.3.4; flush ruleset"] }),
    /invalid DNS server/,
  );
});

test("the-fallback-table-blocks-everything-but-loopback-tunnels-upkeep-and-detourd-and-ignores-bad-names", () => {
  assert.equal(
    renderFallbackTransaction({ tunnelDevices: ["dt-*", "ipsec*", 'x" accept', "lo"], ownGroup: 64950 }),
    `add table inet detour_killswitch
delete table inet detour_killswitch
table inet detour_killswitch {
	comment "detour kill switch: fallback (blocking)"
	chain output {
		type filter hook output priority filter; policy drop;
		oifname "lo" counter accept comment "loopback"
		oifname "dt-*" counter accept comment "tunnel-device dt-*"
		oifname "ipsec*" counter accept comment "tunnel-device ipsec*"
		meta skgid 64950 counter accept comment "own-traffic"
		meta nfproto ipv4 udp sport 68 udp dport 67 counter accept comment "underlay-upkeep dhcpv4"
		ip6 daddr ff02::1:2 udp sport 546 udp dport 547 counter accept comment "underlay-upkeep dhcpv6"
		icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment "underlay-upkeep ipv6-nd"
		counter drop comment "underlay-blocked"
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		oifname "dt-*" counter accept comment "tunnel-device dt-*"
		oifname "ipsec*" counter accept comment "tunnel-device ipsec*"
		counter drop comment "underlay-blocked"
	}
}
`,
  );
  assert.doesNotMatch(renderFallbackTransaction({ tunnelDevices: [], ownGroup: 0 }), /skgid/);
});

test("a-trusted-networks-tls-host-is-allowed-for-detourd-only-while-blocking", () => {
  const text = renderKillSwitch(rulesFor({ ownGroup: 64950, trustedHosts: [{ address: "198.18.53.2", port: 8443 }] }));
  assert.match(
    text,
    /\t\tmeta skgid 64950 ip daddr 198\.18\.53\.2 tcp dport 8443 counter accept comment "trusted-host tcp 198\.18\.53\.2:8443"\n/,
  );
  assert.match(
    text,
    /\t\tmeta skgid 64950 ip daddr 198\.18\.53\.2 tcp dport 8443 return\n/,
    "the witness skips it too",
  );
  assert.throws(
    () =>
      renderKillSwitch({ ...rulesFor({}), trustedHosts: [{ address: "1.2.3.4 accept", protocol: "tcp", port: 1 }] }),
    /invalid gateway address/,
  );
});

test("the-captive-check-is-bound-to-detourd-and-the-sign-in-exception-is-for-any-process", () => {
  const r = killSwitchPolicy({
    state: "error",
    lockdown: true,
    protectedNetworks: ["198.19.0.0/24"],
    gatewayEndpoints: [],
    tunnelDevices: ["dt-*"],
    dnsServers: [],
    ownGroup: 64950,
    checkAddresses: ["198.18.204.1"],
    captiveException: { portalAddresses: ["198.18.205.1"], resolvers: ["198.18.53.2"] },
  });
  assert.ok(r !== null);
  const text = renderKillSwitch(r);
  assert.match(
    text,
    /meta skgid 64950 ip daddr 198\.18\.204\.1 tcp dport \{ 80, 443 \} counter accept comment "captive-check/,
  );
  assert.match(text, /\tip daddr 198\.18\.205\.1 tcp dport \{ 80, 443 \} counter accept comment "captive-portal/);
  assert.match(
    text,
    /\tip daddr 198\.18\.53\.2 meta l4proto \{ tcp, udp \} th dport 53 counter accept comment "captive-dns/,
  );
  assert.throws(
    () => renderKillSwitch({ ...r, captiveException: { portalAddresses: ["1.2.3.4 accept"], resolvers: [] } }),
    /invalid captive address/,
  );
});

test("an-allowed-local-network-leaves-by-its-own-device-only-in-every-chain-and-mode", () => {
  const localNetworks = [
    { prefix: "172.17.0.1/16", dev: "docker0" },
    { prefix: "192.168.1.0/24", dev: "wlan0" },
  ];
  for (const state of ["connected", "racing"] as const) {
    const text = renderKillSwitch(
      rulesFor({ state, protectedNetworks: ["172.16.0.0/12", "192.168.0.0/16"], localNetworks }),
    );
    const chain = (name: string): string => text.split(`chain ${name} {`)[1]?.split("\tchain ")[0] ?? "";
    for (const c of ["output", "forward"]) {
      const body = chain(c);
      const allow = body.indexOf(
        'oifname "docker0" ip daddr 172.17.0.0/16 counter accept comment "local-network docker0 172.17.0.0/16"',
      );
      assert.ok(allow > 0, `${state} ${c}: ${body}`);
      assert.ok(allow < body.indexOf("protected-outside-tunnel"), "the allowance comes before the drop");
      assert.match(body, /oifname "wlan0" ip daddr 192\.168\.1\.0\/24 counter accept/);
    }
    assert.match(chain("leak_witness"), /oifname "docker0" ip daddr 172\.17\.0\.0\/16 return/);
  }
});

test("a-local-network-on-a-tunnel-device-loopback-or-wider-than-a-slash-8-never-becomes-a-rule", () => {
  const r = rulesFor({
    state: "connected",
    protectedNetworks: ["0.0.0.0/0"],
    localNetworks: [
      { prefix: "172.20.0.0/24", dev: "dt-L1" },
      { prefix: "172.21.0.0/24", dev: "ipsec3" },
      { prefix: "127.0.0.0/8", dev: "lo" },
      { prefix: "0.0.0.0/0", dev: "eth0" },
      { prefix: "10.0.0.0/7", dev: "eth0" },
      { prefix: "10.1.0.0", dev: "eth0" },
    ],
  });
  assert.equal(r.localNetworks, undefined);
  assert.doesNotMatch(renderKillSwitch(r), /local-network/);
  // Hand-built rules that bypassed the policy are refused by the renderer as well.
  assert.throws(
    () => renderKillSwitch({ ...r, localNetworks: [{ prefix: "0.0.0.0/0", dev: "eth0" }] }),
    /invalid local network/,
  );
  assert.throws(
    () => renderKillSwitch({ ...r, localNetworks: [{ prefix: "10.0.0.0/8", dev: "dt-L1" }] }),
    /local network on a tunnel device/,
  );
  assert.throws(
    () => renderKillSwitch({ ...r, localNetworks: [{ prefix: "10.0.0.0/8", dev: 'eth0" accept' }] }),
    /invalid local network device/,
  );
});

test("rules-without-local-networks-compare-equal-to-rules-from-before-they-existed", () => {
  const r = rulesFor({ state: "connected", localNetworks: [] });
  assert.ok(!("localNetworks" in r));
});
