/** The lab's full-tunnel mode as configuration: what the client protects and what each gateway offers and NATs. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseConfig } from "../../main/core/config/schema.ts";
import { buildClientConfig } from "./client-config.ts";
import { gatewayPaths, gatewaySwanctlConf, ocservConf, type GatewaySecrets } from "./gateway-engines.ts";
import { gatewayNatRuleset } from "./netns.ts";
import { CORP_NETWORK, gatewayByName, labTopology } from "./topology.ts";

const topo = labTopology("full1");
const gw1 = gatewayByName(topo, "gw1");
const secrets: GatewaySecrets = {
  wgPrivateKeyFile: "/x/wg.key",
  clientWgPublicKey: "k",
  pskFile: "/x/psk",
  psk: "p",
  certFile: "/x/cert.pem",
  keyFile: "/x/key.pem",
  ocpasswdFile: "/x/ocpasswd",
};
const clientSecrets = {
  wgPrivateKeyFile: "/x/client-wg.key",
  pskFile: "/x/psk",
  passwordFile: "/x/password",
  gateways: Object.fromEntries(
    topo.gateways.map((g) => [
      g.name,
      { wgPublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", tlsPin: `pin-sha256:${"A".repeat(43)}=` },
    ]),
  ),
};

test("a-full-tunnel-client-protects-everything-and-a-split-one-only-corp", () => {
  assert.deepEqual(buildClientConfig(topo, clientSecrets, "full").protectedRoutes, ["0.0.0.0/0"]);
  assert.deepEqual(buildClientConfig(topo, clientSecrets).protectedRoutes, [CORP_NETWORK]);
  const r = parseConfig(buildClientConfig(topo, clientSecrets, "full"));
  assert.ok(r.ok, "the full-tunnel configuration is one detourd accepts");
});

test("full-tunnel-gateways-offer-everything-over-ikev2-and-anyconnect", () => {
  assert.match(gatewaySwanctlConf(topo, gw1, "p", { tunnel: "full" }), /^\s*local_ts = 0\.0\.0\.0\/0$/m);
  assert.match(gatewaySwanctlConf(topo, gw1, "p"), /^\s*local_ts = 198\.19\.0\.0\/24$/m);
  const paths = gatewayPaths("/run/detour-lab/full1", gw1);
  assert.match(ocservConf(gw1, paths, secrets, "full"), /^route = default$/m);
  assert.doesNotMatch(ocservConf(gw1, paths, secrets, "full"), /^route = 198/m);
  assert.match(ocservConf(gw1, paths, secrets), /^route = 198\.19\.0\.0\/255\.255\.255\.0$/m);
});

test("a-full-tunnel-gateway-masquerades-only-its-own-tunnel-clients-towards-the-underlay", () => {
  const nat = gatewayNatRuleset(gw1);
  assert.match(nat, /type nat hook postrouting priority srcnat/);
  assert.match(
    nat,
    /oifname "ul0" ip saddr \{ 198\.19\.11\.0\/24, 198\.19\.12\.0\/24, 198\.19\.13\.0\/24 \} counter masquerade/,
  );
  assert.doesNotMatch(nat, /corp0/, "corp sees the clients' own addresses");
});
