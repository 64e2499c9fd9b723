/** How an IPv6 gateway address reaches each engine: WireGuard's UAPI endpoint, charon's remote_addrs, openconnect's URL. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { Secret } from "../../main/core/secret.ts";
import type { Ikev2Spec } from "./engine.ts";
import { CONN_NAME, connMessage, specProblems } from "./ipsec/charon-config.ts";
import { gatewayUrl } from "./openconnect/openconnect-engine.ts";
import { encodeSet } from "./wireguard/uapi-codec.ts";
import { wireguardEndpoint } from "./wireguard/wireguard-engine.ts";

const V6 = "2001:db8:18:1::2";

test("wireguard-endpoints-bracket-ipv6-and-the-uapi-codec-takes-them", () => {
  assert.equal(wireguardEndpoint("198.18.1.2", 51820), "198.18.1.2:51820");
  assert.equal(wireguardEndpoint(V6, 51820), `[${V6}]:51820`);
  const tx = encodeSet({
    privateKey: new Secret(randomBytes(32).toString("base64")),
    peer: {
      publicKey: randomBytes(32).toString("base64"),
      endpoint: wireguardEndpoint(V6, 51820),
      persistentKeepaliveSec: 25,
      allowedIps: ["198.19.0.0/24"],
    },
  }).reveal();
  assert.match(tx, /\nendpoint=\[2001:db8:18:1::2\]:51820\n/);
});

test("charon-takes-an-ipv6-remote-address-as-it-is", () => {
  const spec: Ikev2Spec = {
    protocol: "ikev2",
    gateway: { name: "gw1", address: V6 },
    runtime: { netns: "detour-t-client", workDir: "/run/detour-test/ikev2-gw1-x", ifname: "dike-gw1" },
    probe: { address: "198.19.0.1" },
    params: {
      port: 500,
      natTraversalPort: 4500,
      remoteId: "gw1.lab.detour.test",
      proposals: ["aes256-sha256-x25519"],
      espProposals: ["aes128-sha256"],
      remoteTs: ["198.19.0.0/24"],
    },
    credentials: { localId: "client@lab.detour.test", psk: new Secret("not-a-real-psk") },
  };
  assert.deepEqual(specProblems(spec), []);
  const conn = connMessage(spec).get(CONN_NAME);
  assert.ok(conn instanceof Map);
  assert.deepEqual(conn.get("remote_addrs"), [V6]);
  assert.deepEqual(conn.get("vips"), ["0.0.0.0"], "the inner address stays IPv4 over an IPv6 outer path");
});

test("openconnect-gets-an-ipv6-literal-in-brackets", () => {
  assert.equal(
    gatewayUrl({ gateway: { name: "gw1", address: "198.18.1.2" }, params: { port: 443, pin: "", dtls: true } }),
    "https://198.18.1.2:443/",
  );
  assert.equal(
    gatewayUrl({ gateway: { name: "gw1", address: V6 }, params: { port: 443, pin: "", dtls: true } }),
    `https://[${V6}]:443/`,
  );
});
