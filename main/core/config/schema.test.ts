import assert from "node:assert/strict";
import { test } from "node:test";
import { parseConfig, parseConfigText, type DetourConfigInput } from "./schema.ts";

const KEY = "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=";
const PIN = "pin-sha256:+WMVidRdo/hvUbNdYLsh+ejEWuNqQnlLJDyq2V1bbF4=";

function valid(): DetourConfigInput {
  return {
    version: 1,
    organisation: "Example",
    identity: {
      wireguard: { privateKey: { file: "/etc/detour/wg.key" } },
      ikev2: { localId: "alice@example.com", psk: { env: "DETOUR_PSK" } },
      anyconnect: { username: "alice", password: { file: "/etc/detour/pw" } },
    },
    gateways: [
      {
        name: "fra-1",
        hostname: "fra-1.vpn.example.com",
        address: "198.18.1.2",
        priority: 10,
        region: "eu-central",
        protocols: {
          wireguard: { publicKey: KEY, tunnelAddress: "198.19.11.2/32" },
          ikev2: { remoteId: "fra-1.vpn.example.com" },
          anyconnect: { pin: PIN },
        },
      },
    ],
    protectedRoutes: ["198.19.0.0/24"],
    probe: { address: "198.19.0.1" },
  };
}

test("a-complete-config-parses-and-gets-defaults", () => {
  const r = parseConfig(valid());
  assert.ok(r.ok, JSON.stringify(r));
  assert.deepEqual(JSON.parse(JSON.stringify(r.config.gateways[0]?.protocols)), {
    wireguard: { port: 51820, publicKey: KEY, tunnelAddress: "198.19.11.2/32", persistentKeepaliveSec: 25 },
    ikev2: {
      port: 500,
      natTraversalPort: 4500,
      remoteId: "fra-1.vpn.example.com",
      proposals: ["aes256-sha256-x25519"],
      espProposals: ["aes128-sha256"],
    },
    anyconnect: { port: 443, pin: PIN, dtls: true },
  });
  assert.equal(r.config.probe.port, 7);
});

test("each-bad-field-is-named-by-its-path", () => {
  const c = valid() as unknown as {
    gateways: { protocols: { wireguard: { publicKey: string } }; address: string }[];
    protectedRoutes: string[];
  };
  const gw = c.gateways[0];
  assert.ok(gw);
  gw.protocols.wireguard.publicKey = "not-a-key";
  gw.address = "300.1.1.1";
  c.protectedRoutes = ["198.19.0.0/33"];
  const r = parseConfig(c);
  assert.ok(!r.ok);
  const paths = r.issues.map((i) => i.path).sort();
  assert.deepEqual(paths, ["gateways[0].address", "gateways[0].protocols.wireguard.publicKey", "protectedRoutes[0]"]);
  assert.match(r.issues.find((i) => i.path.endsWith("publicKey"))?.message ?? "", /WireGuard key/);
});

test("unknown-keys-and-inline-secrets-are-refused", () => {
  const c = valid() as unknown as Record<string, unknown> & { identity: { anyconnect: { password: unknown } } };
  c.identity.anyconnect.password = "hunter2";
  c.gatewayz = [];
  const r = parseConfig(c);
  assert.ok(!r.ok);
  assert.ok(r.issues.some((i) => i.path === "identity.anyconnect.password"));
  assert.ok(r.issues.some((i) => i.path === "(root)" && /gatewayz/.test(i.message)));
});

test("duplicate-gateway-names-and-protocol-less-gateways-are-refused", () => {
  const c = valid();
  const gw = c.gateways[0];
  assert.ok(gw);
  c.gateways.push({ ...gw, protocols: {} });
  const r = parseConfig(c);
  assert.ok(!r.ok);
  assert.ok(r.issues.some((i) => i.path === "gateways" && /unique/.test(i.message)));
  assert.ok(r.issues.some((i) => i.path === "gateways[1].protocols" && /at least one protocol/.test(i.message)));
});

test("text-that-is-not-json-is-an-issue-not-a-crash", () => {
  const r = parseConfigText("{ version: 1");
  assert.ok(!r.ok);
  assert.match(r.issues[0]?.message ?? "", /not valid JSON/);
});

test("a-gateway-address-may-be-ipv6-and-a-bad-one-is-named-by-its-path", () => {
  const v6 = valid() as unknown as { gateways: { address: string }[] };
  const gw = v6.gateways[0];
  if (gw === undefined) throw new Error("no gateway");
  gw.address = "2001:db8:18:1::2";
  const ok = parseConfig(v6);
  assert.ok(ok.ok, JSON.stringify(ok));
  assert.equal(ok.config.gateways[0]?.address, "2001:db8:18:1::2");
  for (const bad of ["2001:db8::1::2", "fe80::1%eth0", "[2001:db8::1]", "2001:db8::/64"]) {
    gw.address = bad;
    const r = parseConfig(v6);
    assert.ok(!r.ok, bad);
    assert.deepEqual(
      r.issues,
      [
        {
          path: "gateways[0].address",
          message: "expected an IPv4 or IPv6 address such as 198.18.1.2 or 2001:db8:18:1::2",
        },
      ],
      bad,
    );
  }
});

test("tunnel-dns-takes-ipv6-servers-and-a-split-mode-that-names-its-domains", () => {
  const c = { ...valid(), tunnelDns: { servers: ["fd00:19::53", "198.19.0.53"], routingDomains: ["corp.example"] } };
  const r = parseConfig(c);
  assert.ok(r.ok, JSON.stringify(r));
  const td = r.config.tunnelDns;
  assert.ok(td);
  assert.deepEqual(td.servers, ["fd00:19::53", "198.19.0.53"]);
  assert.equal(td.mode, "all", "the default sends every lookup to the tunnel, as before");
  const zoned = parseConfig({ ...valid(), tunnelDns: { servers: ["fe80::1%eth0"] } });
  assert.ok(!zoned.ok);
  assert.ok(
    zoned.issues.some((i) => i.path === "tunnelDns.servers[0]"),
    JSON.stringify(zoned.issues),
  );
  const split = parseConfig({ ...valid(), tunnelDns: { servers: ["198.19.0.53"], mode: "split" } });
  assert.ok(!split.ok);
  assert.ok(
    split.issues.some((i) => /needs routingDomains/.test(i.message)),
    JSON.stringify(split.issues),
  );
});
