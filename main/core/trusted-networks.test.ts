import assert from "node:assert/strict";
import { test } from "node:test";
import { TrustedNetworks, type TrustedNetworksConfig } from "./config/schema.ts";
import {
  candidateRules,
  dnsFactsOf,
  routedIntoTunnel,
  trustedAction,
  verdictOf,
  type TlsCheckResult,
} from "./trusted-networks.ts";

const PIN = `sha256/${"A".repeat(43)}=`;

function trusted(extra: Partial<TrustedNetworksConfig> = {}): TrustedNetworksConfig {
  return TrustedNetworks.parse({
    rules: [
      { name: "office", dnsDomains: ["office.example.com"], tlsHost: { address: "10.1.0.5", pins: [PIN] } },
      {
        name: "lab",
        dnsDomains: ["lab.example.com"],
        dnsServers: ["10.2.0.53"],
        tlsHost: { address: "10.2.0.5", port: 8443, pins: [PIN] },
      },
    ],
    ...extra,
  });
}

test("resolv-conf-gives-the-networks-domains-and-resolvers", () => {
  const f = dnsFactsOf(
    [
      "# written by the DHCP client",
      "domain Office.Example.com.",
      "search office.example.com corp.example.com ; comment",
      "nameserver 10.1.0.53",
      "nameserver fe80::1%eth0",
      "nameserver not-an-address",
      "options edns0",
    ].join("\n"),
  );
  assert.deepEqual(f.domains, ["office.example.com", "corp.example.com"]);
  assert.deepEqual(f.servers, ["10.1.0.53", "fe80::1"]);
});

test("a-rule-matches-only-when-every-dns-condition-it-names-holds", () => {
  const t = trusted();
  const names = (text: string): string[] => candidateRules(t, dnsFactsOf(text)).map((r) => r.name);
  assert.deepEqual(names("search office.example.com\nnameserver 192.168.1.1\n"), ["office"]);
  assert.deepEqual(names("search lab.example.com\nnameserver 192.168.1.1\n"), [], "lab also needs its resolver");
  assert.deepEqual(names("search lab.example.com\nnameserver 10.2.0.53\n"), ["lab"]);
  assert.deepEqual(names("search hotel.example.net\nnameserver 10.2.0.53\n"), []);
});

test("the-dns-domain-alone-never-makes-a-network-trusted", () => {
  const t = trusted();
  const facts = dnsFactsOf("search office.example.com\n");
  const none = verdictOf(t, facts, new Map());
  assert.equal(none.trusted, false);
  assert.match(none.reason, /"office": its TLS host was not checked/);
  const impostor = verdictOf(
    t,
    facts,
    new Map<string, TlsCheckResult>([["office", { ok: false, reason: "its public key matches no pin" }]]),
  );
  assert.equal(impostor.trusted, false);
  assert.match(impostor.reason, /matches no pin/);
  const real = verdictOf(t, facts, new Map<string, TlsCheckResult>([["office", { ok: true }]]));
  assert.deepEqual([real.trusted, real.rule], [true, "office"]);
  assert.match(real.reason, /trusted network "office".*10\.1\.0\.5:443/);
});

test("a-pinned-host-on-a-network-whose-dns-does-not-match-does-not-count", () => {
  const v = verdictOf(trusted(), dnsFactsOf("search hotel.example.net\n"), new Map([["office", { ok: true }]]));
  assert.equal(v.trusted, false);
  assert.match(v.reason, /no trusted network rule matches.*hotel\.example\.net/);
});

test("a-rule-without-a-pinned-tls-host-or-without-dns-conditions-is-refused", () => {
  const noHost = TrustedNetworks.safeParse({ rules: [{ name: "office", dnsDomains: ["office.example.com"] }] });
  assert.equal(noHost.success, false);
  assert.match(JSON.stringify(noHost.error.issues), /tlsHost/);
  const noPins = TrustedNetworks.safeParse({
    rules: [{ name: "office", dnsDomains: ["office.example.com"], tlsHost: { address: "10.1.0.5", pins: [] } }],
  });
  assert.equal(noPins.success, false);
  const noDns = TrustedNetworks.safeParse({
    rules: [{ name: "office", tlsHost: { address: "10.1.0.5", pins: [PIN] } }],
  });
  assert.equal(noDns.success, false);
  assert.match(JSON.stringify(noDns.error.issues), /needs dnsDomains or dnsServers/);
});

test("a-tls-host-inside-the-tunnels-networks-is-not-checked-through-it", () => {
  assert.equal(routedIntoTunnel("10.1.0.5", ["10.0.0.0/8"]), true);
  assert.equal(routedIntoTunnel("192.168.1.5", ["10.0.0.0/8", "198.19.0.0/24"]), false);
  assert.equal(routedIntoTunnel("192.168.1.5", ["0.0.0.0/0"]), true);
});

test("on-a-trusted-network-detour-stays-down-and-leaving-it-connects", () => {
  const yes = { trusted: true as const, rule: "office", reason: "" };
  const no = { trusted: false as const, rule: null, reason: "" };
  const base = { policy: "disconnect" as const, autoConnect: false, heldDownByTrust: false };
  assert.deepEqual(trustedAction({ ...base, verdict: yes, idle: false }), { type: "disconnect" });
  assert.deepEqual(trustedAction({ ...base, verdict: yes, idle: true, autoConnect: true }), { type: "none" });
  assert.deepEqual(trustedAction({ ...base, verdict: no, idle: true, heldDownByTrust: true }), { type: "connect" });
  assert.deepEqual(trustedAction({ ...base, verdict: no, idle: true }), { type: "none" }, "no always-on, no intent");
  assert.deepEqual(trustedAction({ ...base, verdict: no, idle: true, autoConnect: true }), { type: "connect" });
  assert.deepEqual(trustedAction({ ...base, verdict: no, idle: false, autoConnect: true }), { type: "none" });
  assert.deepEqual(trustedAction({ ...base, policy: "connect", verdict: yes, idle: true, autoConnect: true }), {
    type: "connect",
  });
  assert.deepEqual(trustedAction({ ...base, policy: "connect", verdict: yes, idle: false }), { type: "none" });
});
