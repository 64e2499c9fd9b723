import assert from "node:assert/strict";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { linkDnsFor, sameLinkDns } from "../../main/core/dns-link.ts";
import { canonicalIp } from "../../main/core/ip-address.ts";
import { isUnknownLinkError, parseLinkProperties, resolvConfIsResolveds, setLinkCalls } from "./resolved.linux.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-resolved-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

test("all-mode-routes-every-name-to-the-tunnel-and-split-mode-only-its-domains", () => {
  const base = { servers: ["198.19.0.53"], searchDomains: ["corp.example"], routingDomains: ["lab.example."] };
  assert.deepEqual(linkDnsFor({ ...base, mode: "all" }), {
    servers: ["198.19.0.53"],
    domains: [
      { name: "corp.example", routeOnly: false },
      { name: "lab.example", routeOnly: true },
      { name: ".", routeOnly: true },
    ],
    defaultRoute: true,
  });
  const split = linkDnsFor({ ...base, mode: "split" });
  assert.equal(split.defaultRoute, false);
  assert.ok(!split.domains.some((d) => d.name === "."), "split never routes every name");
});

test("the-busctl-calls-carry-both-families-and-domains-as-resolved-types-them", () => {
  const l = linkDnsFor({
    servers: ["198.19.0.53", "fd00:19::53"],
    searchDomains: [],
    routingDomains: ["corp.example"],
    mode: "split",
  });
  const calls = setLinkCalls(7, l);
  assert.deepEqual(
    calls.map((c) => c.method),
    ["SetLinkDNS", "SetLinkDomains", "SetLinkDefaultRoute"],
  );
  assert.deepEqual(calls[0]?.args, [
    "ia(iay)",
    "7",
    "2",
    ...["2", "4", "198", "19", "0", "53"],
    ...["10", "16", "253", "0", "0", "25", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "83"],
  ]);
  assert.deepEqual(calls[1]?.args, ["ia(sb)", "7", "1", "corp.example", "true"]);
  assert.deepEqual(calls[2]?.args, ["ib", "7", "false"]);
  assert.throws(() => setLinkCalls(7, { ...l, domains: [{ name: "--help", routeOnly: true }] }), /not a domain name/);
  assert.throws(() => setLinkCalls(7, { ...l, servers: ["fe80::1%eth0"] }), /not an IP address/);
  assert.throws(() => setLinkCalls(0, l), /not an interface index/);
});

test("resolved-link-properties-read-back-equal-what-was-set", () => {
  const out = [
    '{"type":"a(iay)","data":[[2,[10,0,0,53]],[10,[253,0,0,0,0,0,0,0,0,0,0,0,0,0,0,83]]]}',
    '{"type":"a(sb)","data":[["corp.example",true]]}',
    '{"type":"b","data":false}',
  ].join("\n");
  const got = parseLinkProperties(out);
  assert.deepEqual(got.servers, ["10.0.0.53", "fd00:0:0:0:0:0:0:53"]);
  const want = {
    servers: ["10.0.0.53", "fd00::53"],
    domains: [{ name: "corp.example", routeOnly: true }],
    defaultRoute: false,
  };
  assert.ok(sameLinkDns(got, want, canonicalIp));
  assert.ok(!sameLinkDns({ ...got, defaultRoute: true }, want, canonicalIp));
  assert.throws(() => parseLinkProperties('{"type":"b","data":false}'), /three properties/);
});

test("only-a-resolv-conf-linked-into-resolveds-folder-is-resolveds", () => {
  const plain = join(dir, "plain.conf");
  writeFileSync(plain, "nameserver 192.0.2.1\n");
  assert.equal(resolvConfIsResolveds(plain), false);
  const stub = join(dir, "stub.conf");
  symlinkSync("/run/systemd/resolve/stub-resolv.conf", stub);
  assert.equal(resolvConfIsResolveds(stub), true, "a dangling link still names resolved");
  const other = join(dir, "resolvconf.conf");
  symlinkSync("/run/resolvconf/resolv.conf", other);
  assert.equal(resolvConfIsResolveds(other), false, "resolvconf's link is not resolved's");
});

test("a-link-resolved-no-longer-tracks-is-told-apart-from-a-failed-revert", () => {
  // Recorded in the lab: a disconnect's RevertLink raced wireguard-go removing its device.
  assert.ok(
    isUnknownLinkError(
      "command failed (exit 1): busctl --system --timeout=3 call org.freedesktop.resolve1 /org/freedesktop/resolve1 " +
        "org.freedesktop.resolve1.Manager RevertLink i 5\nCall failed: Link 5 not known",
    ),
  );
  assert.equal(isUnknownLinkError("Call failed: Connection timed out"), false);
  assert.equal(isUnknownLinkError("Call failed: Access denied"), false);
});
