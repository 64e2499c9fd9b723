/** Unit tests for the corp config validation and the source-address map: pure, no sockets. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  formatIpv4,
  identifySource,
  parseIpv4,
  parseIpv4Prefix,
  peerIpv4,
  validateCorpConfig,
  type SourceRule,
} from "./corp-map.ts";

const goodConfig = {
  httpAddress: "198.19.0.1",
  httpPort: 80,
  echoAddress: "198.19.0.1",
  echoPort: 7,
  sources: [
    { cidr: "198.19.11.0/24", gateway: "gw1", protocol: "wireguard" },
    { cidr: "198.19.12.0/24", gateway: "gw1", protocol: "ikev2" },
    { cidr: "198.19.21.0/24", gateway: "gw2", protocol: "wireguard" },
  ],
};

function rules(): readonly SourceRule[] {
  const checked = validateCorpConfig(goodConfig);
  assert.ok(checked.ok);
  return checked.value.sources;
}

function errorOf(config: unknown): string {
  const checked = validateCorpConfig(config);
  if (checked.ok) assert.fail("the config should have been refused");
  return checked.error;
}

void describe("IPv4 parsing", () => {
  void it("reads dotted quads and refuses anything else", () => {
    assert.equal(parseIpv4("198.19.11.2"), 0xc6130b02);
    assert.equal(parseIpv4("0.0.0.0"), 0);
    assert.equal(parseIpv4("255.255.255.255"), 0xffffffff);
    for (const bad of ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-4", "a.b.c.d", " 1.2.3.4", "::1"]) {
      assert.equal(parseIpv4(bad), null, bad);
    }
    assert.equal(formatIpv4(0xc6130b02), "198.19.11.2");
  });

  void it("reads prefixes and names the fix when host bits are set", () => {
    const p = parseIpv4Prefix("198.19.11.0/24");
    assert.ok(p.ok);
    assert.deepEqual(p.value, { text: "198.19.11.0/24", network: 0xc6130b00, length: 24 });
    assert.ok(parseIpv4Prefix("0.0.0.0/0").ok);
    assert.ok(parseIpv4Prefix("198.19.11.2/32").ok);
    const hostBits = parseIpv4Prefix("198.19.11.5/24");
    assert.ok(!hostBits.ok && hostBits.error.includes("did you mean 198.19.11.0/24"));
    for (const bad of ["198.19.11.0", "198.19.11.0/33", "198.19.11.0/", "198.19.11.0/24/1", "198.19.11.0/x", "x/24"]) {
      assert.equal(parseIpv4Prefix(bad).ok, false, bad);
    }
  });

  void it("unwraps IPv4-mapped peers of dual-stack sockets and refuses IPv6", () => {
    assert.equal(peerIpv4("::ffff:198.19.11.2"), "198.19.11.2");
    assert.equal(peerIpv4("198.19.11.2"), "198.19.11.2");
    assert.equal(peerIpv4("2001:db8::1"), null);
    assert.equal(peerIpv4(undefined), null);
  });
});

void describe("identifySource", () => {
  void it("names the gateway and protocol of a tunnel address", () => {
    assert.deepEqual(identifySource(rules(), "198.19.11.2"), { gateway: "gw1", protocol: "wireguard" });
    assert.deepEqual(identifySource(rules(), "198.19.12.77"), { gateway: "gw1", protocol: "ikev2" });
    assert.deepEqual(identifySource(rules(), "198.19.21.2"), { gateway: "gw2", protocol: "wireguard" });
  });

  void it("answers nulls for an address from no pool", () => {
    assert.deepEqual(identifySource(rules(), "198.19.13.2"), { gateway: null, protocol: null });
    assert.deepEqual(identifySource(rules(), null), { gateway: null, protocol: null });
    assert.deepEqual(identifySource(rules(), "not an address"), { gateway: null, protocol: null });
  });

  void it("prefers the longest prefix whatever the order", () => {
    const checked = validateCorpConfig({
      ...goodConfig,
      sources: [
        { cidr: "127.0.0.0/8", gateway: "gw9", protocol: "wireguard" },
        { cidr: "127.0.0.5/32", gateway: "gw8", protocol: "anyconnect" },
        { cidr: "127.0.0.0/24", gateway: "gw7", protocol: "ikev2" },
      ],
    });
    assert.ok(checked.ok);
    assert.deepEqual(identifySource(checked.value.sources, "127.0.0.5"), { gateway: "gw8", protocol: "anyconnect" });
    assert.deepEqual(identifySource(checked.value.sources, "127.0.0.6"), { gateway: "gw7", protocol: "ikev2" });
    assert.deepEqual(identifySource(checked.value.sources, "127.1.0.1"), { gateway: "gw9", protocol: "wireguard" });
  });
});

void describe("validateCorpConfig", () => {
  void it("accepts the lab's config and port 0 (any free port)", () => {
    assert.ok(validateCorpConfig(goodConfig).ok);
    assert.ok(validateCorpConfig({ ...goodConfig, httpPort: 0, echoPort: 0, sources: [] }).ok);
  });

  void it("names the bad top-level field", () => {
    assert.match(errorOf(null), /^config: expected a JSON object/);
    assert.match(errorOf([]), /^config: /);
    assert.match(
      errorOf({ ...goodConfig, httpAddress: "198.19.0" }),
      /^httpAddress: expected an IPv4 address.*"198\.19\.0"/,
    );
    assert.match(errorOf({ ...goodConfig, echoAddress: undefined }), /^echoAddress: .*got nothing/);
    assert.match(errorOf({ ...goodConfig, httpPort: 65536 }), /^httpPort: expected a port number/);
    assert.match(errorOf({ ...goodConfig, echoPort: "7" }), /^echoPort: /);
    assert.match(errorOf({ ...goodConfig, echoPort: 7.5 }), /^echoPort: /);
    assert.match(errorOf({ ...goodConfig, sources: {} }), /^sources: expected an array/);
    assert.match(errorOf({ ...goodConfig, httpPrt: 80 }), /^httpPrt: unknown field/);
  });

  void it("names the bad source entry and field", () => {
    const withSource = (s: unknown): unknown => ({ ...goodConfig, sources: [goodConfig.sources[0], s] });
    assert.match(errorOf(withSource("198.19.11.0/24")), /^sources\[1\]: expected an object/);
    assert.match(
      errorOf(withSource({ cidr: "198.19.300.0/24", gateway: "gw1", protocol: "wireguard" })),
      /^sources\[1\]\.cidr: /,
    );
    assert.match(
      errorOf(withSource({ cidr: 5, gateway: "gw1", protocol: "wireguard" })),
      /^sources\[1\]\.cidr: .*got 5/,
    );
    assert.match(
      errorOf(withSource({ cidr: "198.19.31.0/24", gateway: "", protocol: "wireguard" })),
      /^sources\[1\]\.gateway: /,
    );
    assert.match(
      errorOf(withSource({ cidr: "198.19.31.0/24", gateway: "gw3", protocol: "ipsec" })),
      /^sources\[1\]\.protocol: expected one of wireguard, ikev2, anyconnect, got "ipsec"/,
    );
    assert.match(
      errorOf(withSource({ cidr: "198.19.31.0/24", gateway: "gw3", protocol: "wireguard", note: 1 })),
      /^sources\[1\]\.note: unknown field/,
    );
  });

  void it("refuses a prefix mapped twice", () => {
    const dup = {
      ...goodConfig,
      sources: [...goodConfig.sources, { cidr: "198.19.11.0/24", gateway: "gw3", protocol: "wireguard" }],
    };
    assert.match(errorOf(dup), /^sources\[3\]\.cidr: 198\.19\.11\.0\/24 is already mapped by sources\[0\]/);
  });
});
