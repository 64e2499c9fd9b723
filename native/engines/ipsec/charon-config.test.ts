/** What each charon instance is given: its strongswan.conf as text, its VICI messages, and spec checks. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { inspect } from "node:util";
import { Secret } from "../../../main/core/secret.ts";
import type { Ikev2Spec } from "../engine.ts";
import {
  CHARON_PLUGINS,
  CHILD_NAME,
  CONN_NAME,
  ROUTING_TABLE_MIN,
  connMessage,
  retransmitGiveUpMs,
  sharedKeyMessage,
  specProblems,
  strongswanConf,
  REAUTH_MARGIN_S,
} from "./charon-config.ts";
import { encodeMessage, type ViciSection } from "./vici-codec.ts";

const PSK = "not-a-real-psk-0123456789";

function spec(over: Partial<Ikev2Spec["params"]> = {}): Ikev2Spec {
  return {
    protocol: "ikev2",
    gateway: { name: "gw1", address: "198.18.1.2" },
    runtime: { netns: "detour-t-client", workDir: "/run/detour-test/ikev2-gw1-x", ifname: "dike-gw1" },
    probe: { address: "198.19.0.1" },
    params: {
      port: 500,
      natTraversalPort: 4500,
      remoteId: "gw1.lab.detour.test",
      proposals: ["aes256-sha256-x25519"],
      espProposals: ["aes128-sha256"],
      remoteTs: ["198.19.0.0/24"],
      ...over,
    },
    credentials: { localId: "client@lab.detour.test", psk: new Secret(PSK) },
  };
}

const CONF_INPUT = { viciSocket: "/run/detour-test/ikev2-gw1-x/charon.vici", routingTable: ROUTING_TABLE_MIN + 7 };

function section(s: ViciSection | undefined, key: string): ViciSection {
  const v = s?.get(key);
  assert.ok(v instanceof Map, `${key} is a section`);
  return v;
}

test("conf-never-includes-the-system-plugin-folder-and-lists-plugins", () => {
  const conf = strongswanConf(CONF_INPUT);
  assert.doesNotMatch(
    conf,
    /include/,
    "no include: /etc/strongswan.d would load resolve, which rewrites /etc/resolv.conf",
  );
  assert.match(conf, /load_modular = no/);
  assert.match(conf, new RegExp(`load = ${CHARON_PLUGINS.join(" ")}\\n`));
  for (const dangerous of ["resolve", "updown", "dhcp", "farp", "ha", "stroke"]) {
    assert.ok(!(CHARON_PLUGINS as readonly string[]).includes(dangerous), `${dangerous} is not loaded`);
  }
  assert.ok(CHARON_PLUGINS.includes("kernel-libipsec") && CHARON_PLUGINS.includes("vici"));
});

test("conf-has-its-own-socket-private-table-random-ports-and-no-journal", () => {
  const conf = strongswanConf(CONF_INPUT);
  assert.match(conf, /socket = unix:\/\/\/run\/detour-test\/ikev2-gw1-x\/charon\.vici\n/);
  assert.match(conf, new RegExp(`routing_table = ${CONF_INPUT.routingTable}\\n`));
  assert.match(conf, /port = 0\n\s+port_nat_t = 0\n/);
  assert.match(conf, /initiator_only = yes/);
  assert.match(conf, /journal \{\s+default = -1\s+\}\s+\}\s*charon-systemd \{\s+journal \{\s+default = -1/);
  assert.match(conf, /filelog \{\s+stderr \{/);
  assert.match(conf, /retransmit_timeout = 1\.0\n\s+retransmit_base = 1\.4\n\s+retransmit_tries = 3\n/);
});

test("a-gateway-asking-for-reauthentication-gets-it-make-before-break-ahead-of-its-limit", () => {
  // A reauthentication builds the new IKE_SA and CHILD_SA before it deletes the old ones: no gap in the tunnel.
  assert.match(strongswanConf(CONF_INPUT), /make_before_break = yes\n/);
  // over_time is how far ahead of the gateway's AUTH_LIFETIME charon reauthenticates; charon's default (24 min)
  // made it reauthenticate at once, in a loop, whenever a gateway asked for less.
  const conn = section(connMessage(spec()), CONN_NAME);
  assert.equal(conn.get("over_time"), `${String(REAUTH_MARGIN_S)}s`);
  // room for a retry after charon's own 5-15 s delay and a full retransmit give-up, but far below an hour
  assert.ok(REAUTH_MARGIN_S * 1000 > retransmitGiveUpMs() + 15_000 && REAUTH_MARGIN_S < 60);
});

test("an-unreachable-gateway-is-given-up-in-about-seven-seconds", () => {
  assert.equal(retransmitGiveUpMs(), 7104);
  assert.equal(
    Math.round(retransmitGiveUpMs({ timeoutS: 4, base: 1.8, tries: 5 }) / 1000),
    165,
    "charon's default, for comparison",
  );
});

test("conf-refuses-paths-and-tables-that-would-break-it", () => {
  assert.throws(() => strongswanConf({ ...CONF_INPUT, viciSocket: "/tmp/a b/charon.vici" }));
  assert.throws(() => strongswanConf({ ...CONF_INPUT, viciSocket: "/tmp/x}\ninclude /etc/strongswan.d/*.conf\n{" }));
  assert.throws(() => strongswanConf({ ...CONF_INPUT, viciSocket: "relative/charon.vici" }));
  assert.throws(() => strongswanConf({ ...CONF_INPUT, viciSocket: `/${"a".repeat(120)}` }));
  assert.throws(() => strongswanConf({ ...CONF_INPUT, routingTable: 220 }), "220 is charon's shared default table");
});

test("a-network-change-is-followed-with-mobike-from-the-underlay-the-kernel-routes-to", () => {
  const conn = section(connMessage(spec()), CONN_NAME);
  assert.equal(conn.get("mobike"), "yes", "charon moves the IKE_SA to the new address instead of a fresh leg");
  const conf = strongswanConf(CONF_INPUT);
  // No installed routes: kernel-netlink asks the kernel for the source toward the gateway (no table dump), so the
  // namespace's rules and detourd's throw routes decide, never another tunnel's address.
  assert.match(conf, /install_routes = no\n/);
  assert.match(conf, /prefer_best_path = no\n/, "a working path is not moved for another instance's new address");
});

test("load-conn-asks-for-a-vip-pins-the-gateway-and-carries-no-secret", () => {
  const msg = connMessage(spec());
  const conn = section(msg, CONN_NAME);
  assert.deepEqual(conn.get("vips"), ["0.0.0.0"]);
  assert.equal(conn.get("encap"), "yes");
  assert.deepEqual(conn.get("remote_addrs"), ["198.18.1.2"]);
  assert.equal(conn.get("remote_port"), "500");
  assert.deepEqual(conn.get("proposals"), ["aes256-sha256-x25519"]);
  assert.match(conn.get("dpd_delay") as string, /^\d+s$/);
  assert.deepEqual(
    section(conn, "remote"),
    new Map([
      ["auth", "psk"],
      ["id", "gw1.lab.detour.test"],
    ]),
  );
  assert.deepEqual(
    section(conn, "local"),
    new Map([
      ["auth", "psk"],
      ["id", "client@lab.detour.test"],
    ]),
  );
  const child = section(section(conn, "children"), CHILD_NAME);
  assert.deepEqual(child.get("remote_ts"), ["198.19.0.0/24"]);
  assert.deepEqual(child.get("esp_proposals"), ["aes128-sha256"]);
  assert.equal(child.get("start_action"), "none");
  assert.ok(!encodeMessage(msg).includes(PSK), "the PSK is not in load-conn");
});

test("load-shared-is-the-only-place-the-psk-appears", () => {
  const msg = sharedKeyMessage(spec());
  assert.equal(msg.get("type"), "IKE");
  assert.equal(msg.get("data"), PSK);
  assert.deepEqual(msg.get("owners"), ["client@lab.detour.test", "gw1.lab.detour.test"]);
  assert.doesNotMatch(inspect(spec()), new RegExp(PSK), "the spec itself prints the PSK redacted");
});

test("specs-that-cannot-work-are-named", () => {
  assert.deepEqual(specProblems(spec()), []);
  assert.match(specProblems(spec({ natTraversalPort: 4501 })).join(), /NAT-T port 4501/);
  assert.deepEqual(specProblems(spec({ port: 4500, natTraversalPort: 4500 })), [], "a gateway on 4500 stays on 4500");
  assert.match(specProblems(spec({ port: 0 })).join(), /IKE port 0/);
  assert.match(specProblems(spec({ remoteTs: ["corp"] })).join(), /not a prefix/);
  assert.match(specProblems(spec({ proposals: [] })).join(), /no IKE proposals/);
  assert.match(specProblems({ ...spec(), credentials: { localId: "c", psk: new Secret("") } }).join(), /PSK is empty/);
});
