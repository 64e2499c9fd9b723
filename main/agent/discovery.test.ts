/** Discovery with fake resolvers and a portal on loopback, and the TCP/TLS/UDP probes against loopback servers. */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createServer as createTlsServer, type Server as TlsServer } from "node:tls";
import { parseConfig, type DetourConfig, type DetourConfigInput } from "../core/config/schema.ts";
import { testConfig } from "../../test/fakes/config.ts";
import type { Candidate, CandidateProbe } from "../core/connection/types.ts";
import { makeTestCertificate, type TestCertificate } from "../../test/lab/test-ca.ts";
import {
  MAX_PORTAL_BYTES,
  configuredCandidates,
  createResolver,
  discover,
  gatewayPorts,
  kindsOfSrvName,
  probeCandidates,
  withProbe,
  type DnsResolver,
} from "./discovery.ts";

/** Discovery's bound in these tests: everything here answers in a millisecond or never. */
const TIMEOUT_MS = 400;
/** Slack over a bound for a busy two-core machine. */
const SLACK_MS = 250;

const WG_KEY = `${"A".repeat(43)}=`;
const PIN = `pin-sha256:${"B".repeat(43)}=`;
const SRV = {
  wireguard: "_detour-wireguard._udp.example.test",
  ikev2: "_detour-ikev2._udp.example.test",
  anyconnect: "_detour-anyconnect._tcp.example.test",
};

function config(
  over: {
    portalUrl?: string;
    portalTls?: { caFile?: string; pins?: string[] };
    gateways?: DetourConfigInput["gateways"];
    identity?: DetourConfigInput["identity"];
  } = {},
): DetourConfig {
  return testConfig({
    organisation: "test",
    identity: over.identity ?? {
      wireguard: { privateKey: { file: "/dev/null" } },
      ikev2: { localId: "me", psk: { file: "/dev/null" } },
      anyconnect: { username: "alice", password: { file: "/dev/null" } },
    },
    gateways: over.gateways ?? [
      {
        name: "gw1",
        hostname: "gw1.example.test",
        address: "192.0.2.1",
        priority: 10,
        region: "eu",
        protocols: { wireguard: { publicKey: WG_KEY, tunnelAddress: "198.19.11.2/32" }, anyconnect: { pin: PIN } },
      },
      {
        name: "gw2",
        hostname: "GW2.example.test",
        priority: 20,
        region: "eu",
        protocols: { ikev2: { remoteId: "gw2" }, anyconnect: { pin: PIN, dtls: false } },
      },
      {
        name: "gw3",
        hostname: "gw3.example.test",
        priority: 30,
        region: "us",
        protocols: { wireguard: { publicKey: WG_KEY, tunnelAddress: "198.19.31.2/32" } },
      },
    ],
    discovery: {
      dns: { servers: ["192.0.2.53"], srv: [SRV.wireguard, SRV.ikev2, SRV.anyconnect] },
      ...(over.portalUrl === undefined ? {} : { portalUrl: over.portalUrl }),
      ...(over.portalTls === undefined ? {} : { portalTls: over.portalTls }),
    },
  });
}

/** A resolver from tables; names not in them fail like NXDOMAIN, "hang" never answers. */
function fakeResolver(
  srv: Record<string, { name: string; port: number; priority: number }[] | "hang">,
  a: Record<string, string[] | "hang">,
  aaaa: Record<string, string[] | "hang"> = {},
): DnsResolver & { cancelled: number } {
  const hang = new Promise<never>(() => undefined);
  const nx = (name: string): Promise<never> =>
    Promise.reject(Object.assign(new Error(`queryX ENOTFOUND ${name}`), { code: "ENOTFOUND" }));
  const r = {
    cancelled: 0,
    resolveSrv: (name: string) => {
      const v = srv[name];
      if (v === "hang") return hang;
      return v === undefined ? nx(name) : Promise.resolve(v.map((x) => ({ ...x, weight: 10 })));
    },
    resolve4: (name: string) => {
      const v = a[name];
      if (v === "hang") return hang;
      return v === undefined ? nx(name) : Promise.resolve(v);
    },
    resolve6: (name: string) => {
      const v = aaaa[name];
      if (v === "hang") return hang;
      return v === undefined ? nx(name) : Promise.resolve(v);
    },
    cancel: () => {
      r.cancelled += 1;
    },
  };
  return r;
}

const LAB_DNS = fakeResolver(
  {
    [SRV.wireguard]: [
      { name: "gw1.example.test", port: 51820, priority: 10 },
      { name: "gw9.example.test.", port: 51820, priority: 5 },
    ],
    [SRV.anyconnect]: [{ name: "GW2.example.test.", port: 443, priority: 20 }],
  },
  { "gw2.example.test": ["192.0.2.2"], "gw9.example.test": ["192.0.2.9"] },
);

let portal: HttpsServer;
let portalBase = "";
let portalHits = 0;
let portalDir = "";
let portalCert: TestCertificate;
/** The configuration of a portal at `path` of the test portal, trusted through its CA file unless told otherwise. */
function withPortal(path: string, tls: { caFile?: string; pins?: string[] } = { caFile: portalCert.caFile }) {
  return config({ portalUrl: `${portalBase}${path}`, portalTls: tls });
}
before(async () => {
  portalDir = mkdtempSync(join(tmpdir(), "detour-portal-"));
  portalCert = makeTestCertificate(portalDir, { ips: ["127.0.0.1"] });
  portal = createHttpsServer({ key: portalCert.keyPem, cert: portalCert.certPem }, (req, res) => {
    portalHits += 1;
    switch (req.url ?? "") {
      case "/ok":
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({
            gateways: [
              {
                name: "gw2",
                hostname: "gw2.example.test",
                address: "192.0.2.22",
                priority: 5,
                region: "eu",
                extra: "ignored",
              },
              { name: "gw7", hostname: "gw7.example.test", priority: 1, region: "ap" },
            ],
          }),
        );
        return;
      case "/hostile":
        res.end(
          JSON.stringify({
            gateways: [
              { name: "gw2", hostname: "gw2.example.test", address: "198.19.0.9", priority: 5, region: "eu" },
              { name: "gw3", hostname: "gw3.example.test", address: "::ffff:127.0.0.1", priority: 5, region: "eu" },
              { name: "gw8", hostname: "gw8.example.test", address: "169.254.1.1", priority: 5, region: "eu" },
            ],
          }),
        );
        return;
      case "/bad-schema":
        res.end(
          JSON.stringify({ gateways: [{ name: "gw2", hostname: "not a hostname!", priority: 5, region: "eu" }] }),
        );
        return;
      case "/not-json":
        res.end("<html>login</html>");
        return;
      case "/huge":
        // Chunked, no content-length: the size limit must hold while reading.
        res.write("x".repeat(MAX_PORTAL_BYTES));
        res.end("x".repeat(1024));
        return;
      case "/hang":
        return; // never answers
      default:
        res.statusCode = 404;
        res.end();
    }
  });
  portal.listen(0, "127.0.0.1");
  await once(portal, "listening");
  const addr = portal.address();
  if (addr === null || typeof addr === "string") throw new Error("no port");
  portalBase = `https://127.0.0.1:${addr.port}`;
});
after(async () => {
  rmSync(portalDir, { recursive: true, force: true });
  portal.closeAllConnections();
  await new Promise<void>((r) => {
    portal.close(() => {
      r();
    });
  });
});

test("srv-service-names-map-to-leg-kinds", () => {
  assert.deepEqual(kindsOfSrvName(SRV.wireguard), ["wireguard"]);
  assert.deepEqual(kindsOfSrvName(SRV.ikev2), ["ikev2"]);
  assert.deepEqual(kindsOfSrvName(SRV.anyconnect), ["anyconnect-tls", "anyconnect-dtls"]);
  assert.equal(kindsOfSrvName("_sip._udp.example.test"), null);
});

test("configured-gateways-offer-the-kinds-they-are-configured-and-identified-for", () => {
  const c = configuredCandidates(config());
  assert.deepEqual(
    c.map((x) => [x.name, x.kinds]),
    [
      ["gw1", ["wireguard", "anyconnect-tls", "anyconnect-dtls"]],
      ["gw2", ["ikev2", "anyconnect-tls"]],
      ["gw3", ["wireguard"]],
    ],
  );
  const noWg = configuredCandidates(config({ identity: { anyconnect: { username: "a", password: { env: "P" } } } }));
  assert.deepEqual(
    noWg.map((x) => x.kinds),
    [["anyconnect-tls", "anyconnect-dtls"], ["anyconnect-tls"], []],
    "no identity, no kind",
  );
});

test("dns-fills-missing-addresses-and-srv-only-gateways-are-not-used", async () => {
  const r = await discover(config(), { timeoutMs: TIMEOUT_MS, resolver: LAB_DNS });
  const by = new Map(r.candidates.map((c) => [c.name, c]));
  assert.deepEqual(by.get("gw1"), {
    name: "gw1",
    hostname: "gw1.example.test",
    address: "192.0.2.1",
    priority: 10,
    region: "eu",
    kinds: ["wireguard", "anyconnect-tls", "anyconnect-dtls"],
    sources: ["config", "dns"],
    probe: null,
  });
  assert.equal(by.get("gw2")?.address, "192.0.2.2", "resolved from DNS (hostname matched case-insensitively)");
  assert.deepEqual(by.get("gw2")?.sources, ["config", "dns"]);
  assert.equal(by.get("gw3")?.address, null, "neither configured nor resolvable");
  assert.equal(r.candidates.length, 3, "gw9 (SRV only) is not a candidate");
  assert.deepEqual(r.unpinned, [
    {
      hostname: "gw9.example.test",
      name: null,
      address: "192.0.2.9",
      priority: 5,
      kinds: ["wireguard"],
      sources: ["dns"],
    },
  ]);
  const msgs = r.problems.map((p) => p.message).join("\n");
  assert.match(msgs, /SRV _detour-ikev2\._udp\.example\.test: ENOTFOUND/);
  assert.match(msgs, /gw3: no address/);
  assert.match(msgs, /gw9\.example\.test is not in the configuration/);
});

test("the-portal-fills-addresses-of-known-gateways-only-and-config-wins", async () => {
  const noDns = fakeResolver({}, {});
  const r = await discover(withPortal("/ok"), { timeoutMs: TIMEOUT_MS, resolver: noDns });
  const gw2 = must(r.candidates.find((c) => c.name === "gw2"));
  assert.equal(gw2.priority, 20, "the configured priority stays");
  assert.equal(gw2.address, "192.0.2.22", "with DNS silent, the portal's address is used");
  assert.deepEqual(gw2.sources, ["config", "portal"]);
  const withDns = await discover(withPortal("/ok"), {
    timeoutMs: TIMEOUT_MS,
    resolver: LAB_DNS,
  });
  const gw2d = must(withDns.candidates.find((c) => c.name === "gw2"));
  assert.equal(gw2d.address, "192.0.2.2", "DNS before the portal");
  assert.deepEqual(gw2d.sources, ["config", "dns", "portal"]);
  assert.equal(
    r.candidates.find((c) => c.name === "gw1")?.address,
    "192.0.2.1",
    "a configured address is never replaced",
  );
  assert.ok(r.unpinned.some((u) => u.name === "gw7" && u.sources.includes("portal")));
  assert.ok(!r.candidates.some((c) => c.name === "gw7"));
});

test("a-broken-portal-degrades-to-what-is-known-and-is-reported", async () => {
  for (const [path, why] of [
    ["/bad-schema", /does not match the portal format: gateways\.0\.hostname/],
    ["/not-json", /not JSON/],
    ["/huge", /over the 65536-byte limit/],
    ["/missing", /HTTP 404/],
    ["/hang", /no complete answer within 400 ms/],
  ] as const) {
    const t0 = Date.now();
    const r = await discover(withPortal(path), {
      timeoutMs: TIMEOUT_MS,
      resolver: LAB_DNS,
    });
    const ms = Date.now() - t0;
    assert.ok(ms < TIMEOUT_MS + SLACK_MS, `${path}: bounded (${ms} ms)`);
    assert.equal(r.candidates.length, 3, `${path}: the configured gateways remain`);
    assert.ok(
      r.problems.some((p) => p.source === "portal" && why.test(p.message)),
      `${path}: ${JSON.stringify(r.problems)}`,
    );
  }
  const r = await discover(config({ portalUrl: `https://127.0.0.1:${closedTcpPort}/x` }), {
    timeoutMs: TIMEOUT_MS,
    resolver: LAB_DNS,
  });
  assert.ok(
    r.problems.some((p) => p.source === "portal" && /ECONNREFUSED/.test(p.message)),
    JSON.stringify(r.problems),
  );
});

test("a-silent-dns-server-is-bounded-and-cancelled", async () => {
  const hanging = fakeResolver(
    { [SRV.wireguard]: "hang", [SRV.anyconnect]: "hang", [SRV.ikev2]: "hang" },
    { "gw2.example.test": "hang", "gw3.example.test": "hang" },
  );
  const t0 = Date.now();
  const r = await discover(config(), { timeoutMs: TIMEOUT_MS, resolver: hanging });
  const ms = Date.now() - t0;
  console.log(`silent fake resolver: discovery returned after ${ms} ms`);
  assert.ok(ms >= TIMEOUT_MS - 5 && ms < TIMEOUT_MS + SLACK_MS, `bounded by the timeout (${ms} ms)`);
  assert.equal(hanging.cancelled, 1, "outstanding queries are cancelled at the deadline");
  assert.deepEqual(
    r.candidates.map((c) => c.address),
    ["192.0.2.1", null, null],
  );
  assert.ok(r.problems.filter((p) => /timed out/.test(p.message)).length >= 3, JSON.stringify(r.problems));
});

test("the-real-resolver-against-a-silent-server-is-bounded", async () => {
  // A bound UDP socket that never answers, on loopback: c-ares retries, the deadline cancels.
  const silent: UdpSocket = createSocket("udp4");
  silent.bind(0, "127.0.0.1");
  await once(silent, "listening");
  try {
    const resolver = createResolver([`127.0.0.1:${silent.address().port}`], TIMEOUT_MS);
    const t0 = Date.now();
    const r = await discover(config(), { timeoutMs: TIMEOUT_MS, resolver });
    const ms = Date.now() - t0;
    console.log(`silent real DNS server: discovery returned after ${ms} ms with ${r.problems.length} problems`);
    assert.ok(ms < TIMEOUT_MS + SLACK_MS, `bounded (${ms} ms)`);
    assert.equal(r.candidates.length, 3);
  } finally {
    silent.close();
  }
});

// ---- probes on loopback ----

let tlsServer: TlsServer;
let stallServer: TcpServer;
let openUdp: UdpSocket;
/** A silent UDP socket on the TLS server's port number: what a DTLS-capable gateway looks like from outside. */
let dtlsUdp: UdpSocket;
let closedUdpPort = 0;
let closedTcpPort = 0;
const stalled = new Set<Socket>();
let certDir = "";

function portOf(s: TcpServer | TlsServer): number {
  const a = s.address();
  if (a === null || typeof a === "string") throw new Error("no port");
  return a.port;
}

before(async () => {
  certDir = mkdtempSync(join(tmpdir(), "detour-disc-"));
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-subj",
      "/CN=gw.example.test",
      "-days",
      "1",
      "-keyout",
      join(certDir, "k.pem"),
      "-out",
      join(certDir, "c.pem"),
    ],
    { stdio: "ignore" },
  );
  tlsServer = createTlsServer(
    { key: readFileSync(join(certDir, "k.pem")), cert: readFileSync(join(certDir, "c.pem")) },
    (s) => s.end(),
  );
  tlsServer.listen(0, "127.0.0.1");
  stallServer = createTcpServer((s) => {
    stalled.add(s);
    s.on("error", () => undefined);
  }); // accepts, never speaks TLS
  stallServer.listen(0, "127.0.0.1");
  openUdp = createSocket("udp4");
  openUdp.bind(0, "127.0.0.1");
  // Free ports: bind, note, close; nothing listens there afterwards.
  const tmpUdp = createSocket("udp4");
  tmpUdp.bind(0, "127.0.0.1");
  const tmpTcp = createTcpServer();
  tmpTcp.listen(0, "127.0.0.1");
  await Promise.all([
    once(tlsServer, "listening"),
    once(stallServer, "listening"),
    once(openUdp, "listening"),
    once(tmpUdp, "listening"),
    once(tmpTcp, "listening"),
  ]);
  closedUdpPort = tmpUdp.address().port;
  dtlsUdp = createSocket("udp4");
  dtlsUdp.bind(portOf(tlsServer), "127.0.0.1");
  await once(dtlsUdp, "listening");
  closedTcpPort = portOf(tmpTcp);
  tmpUdp.close();
  await new Promise<void>((r) => {
    tmpTcp.close(() => {
      r();
    });
  });
});
after(async () => {
  for (const s of stalled) s.destroy();
  openUdp.close();
  try {
    dtlsUdp.close();
  } catch {
    // closed by the probe test
  }
  await Promise.all([
    new Promise<void>((r) => {
      tlsServer.close(() => {
        r();
      });
    }),
    new Promise<void>((r) => {
      stallServer.close(() => {
        r();
      });
    }),
  ]);
  rmSync(certDir, { recursive: true, force: true });
});

function must<T>(x: T | undefined): T {
  if (x === undefined) throw new Error("missing");
  return x;
}

function loopbackCandidate(name: string): Candidate {
  return {
    name,
    hostname: `${name}.example.test`,
    address: "127.0.0.1",
    priority: 10,
    region: "eu",
    kinds: ["wireguard", "ikev2", "anyconnect-tls", "anyconnect-dtls"],
    sources: ["config"],
    probe: null,
  };
}

test("probes-tell-tls-yes-refused-and-stalled-apart-and-udp-refusals-say-no", async () => {
  const cands = [
    loopbackCandidate("up"),
    loopbackCandidate("refused"),
    loopbackCandidate("stalled"),
    { ...loopbackCandidate("noaddr"), address: null },
  ];
  const ports = {
    up: { anyconnect: portOf(tlsServer), wireguard: openUdp.address().port, ikev2: closedUdpPort },
    refused: { anyconnect: closedTcpPort, wireguard: closedUdpPort, ikev2: openUdp.address().port },
    stalled: { anyconnect: portOf(stallServer), wireguard: openUdp.address().port, ikev2: openUdp.address().port },
  };
  const t0 = Date.now();
  const probes = await probeCandidates(cands, { timeoutMs: TIMEOUT_MS, ports });
  const ms = Date.now() - t0;
  dtlsUdp.close();
  const noDtls = must((await probeCandidates([loopbackCandidate("up")], { timeoutMs: TIMEOUT_MS, ports }))[0]);
  const [up, refused, stalledP, noaddr] = [0, 1, 2, 3].map((i) => must(probes[i])) as [
    CandidateProbe,
    CandidateProbe,
    CandidateProbe,
    CandidateProbe,
  ];
  console.log(
    `loopback probes in ${ms} ms: up ${JSON.stringify(up)}; refused ${JSON.stringify(refused)}; stalled ${JSON.stringify(stalledP)}`,
  );
  assert.ok(ms < TIMEOUT_MS + SLACK_MS, `bounded (${ms} ms)`);
  assert.ok(up.latencyMs !== null && up.latencyMs < 50, "a handshake gives a latency");
  assert.deepEqual(up.reachable, {
    wireguard: "unknown",
    ikev2: "no",
    "anyconnect-tls": "yes",
    "anyconnect-dtls": "unknown",
  });
  assert.equal(
    noDtls.reachable["anyconnect-dtls"],
    "no",
    "nothing listens on UDP at the TLS port any more: the kernel refuses DTLS",
  );
  assert.equal(refused.latencyMs, null);
  assert.deepEqual(refused.reachable, {
    wireguard: "no",
    ikev2: "unknown",
    "anyconnect-tls": "no",
    "anyconnect-dtls": "no",
  });
  assert.ok(stalledP.latencyMs !== null, "TCP connected: that round trip is a latency");
  assert.equal(stalledP.reachable["anyconnect-tls"], "no", "no handshake within the timeout");
  assert.equal(noaddr.latencyMs, null);
  assert.deepEqual(noaddr.reachable, {
    wireguard: "unknown",
    ikev2: "unknown",
    "anyconnect-tls": "unknown",
    "anyconnect-dtls": "unknown",
  });
});

test("probing-finishes-about-one-round-trip-after-the-answers-when-all-answer", async () => {
  const ports = {
    up: { anyconnect: portOf(tlsServer), wireguard: openUdp.address().port, ikev2: openUdp.address().port },
  };
  const t0 = Date.now();
  await probeCandidates([loopbackCandidate("up")], { timeoutMs: 5000, ports });
  const ms = Date.now() - t0;
  console.log(`all answering: probe took ${ms} ms with a 5000 ms timeout`);
  assert.ok(ms < 500, `silent UDP does not hold the probe to its timeout (${ms} ms)`);
});

test("gateway-ports-come-from-the-configuration", () => {
  assert.deepEqual(gatewayPorts(config()).gw2, { anyconnect: 443, wireguard: 51820, ikev2: 500 });
  assert.ok(portalHits > 0);
});

// ---- IPv6: AAAA records and the address family of dual-stack candidates ----

test("aaaa-records-give-resolved-gateways-both-families-and-a-configured-address-pins", async () => {
  const resolver = fakeResolver(
    {
      [SRV.wireguard]: [
        { name: "gw1.example.test", port: 51820, priority: 10 },
        { name: "gw9.example.test", port: 51820, priority: 5 },
      ],
    },
    { "gw1.example.test": ["192.0.2.111"], "gw2.example.test": ["192.0.2.2"] },
    {
      "gw1.example.test": ["2001:db8::111"],
      "gw2.example.test": ["2001:DB8:0:0::2"],
      "gw3.example.test": ["2001:db8::3"],
      "gw9.example.test": ["2001:db8::9"],
    },
  );
  const r = await discover(config(), { timeoutMs: TIMEOUT_MS, resolver });
  const by = new Map(r.candidates.map((c) => [c.name, c]));
  assert.equal(by.get("gw1")?.address, "192.0.2.1", "configured: neither A nor AAAA replaces it");
  assert.equal(by.get("gw1")?.addresses, undefined);
  assert.equal(by.get("gw2")?.address, "192.0.2.2", "before any probe a dual-stack gateway is addressed over IPv4");
  assert.deepEqual(
    by.get("gw2")?.addresses,
    { ipv4: "192.0.2.2", ipv6: "2001:db8::2" },
    "AAAA kept, in RFC 5952 spelling",
  );
  assert.equal(by.get("gw3")?.address, "2001:db8::3", "an AAAA-only gateway is addressed over IPv6");
  assert.equal(by.get("gw3")?.addresses, undefined);
  assert.deepEqual(
    r.unpinned.map((u) => [u.hostname, u.address]),
    [["gw9.example.test", "2001:db8::9"]],
  );
  assert.ok(
    !r.problems.some((p) => /gw3/.test(p.message)),
    `a missing A record is no problem when AAAA answers: ${JSON.stringify(r.problems)}`,
  );
});

test("a-name-without-a-or-aaaa-is-reported-with-both-answers", async () => {
  const r = await discover(config(), {
    timeoutMs: TIMEOUT_MS,
    resolver: fakeResolver({}, { "gw2.example.test": ["192.0.2.2"] }, { "gw3.example.test": "hang" }),
  });
  assert.match(r.problems.map((p) => p.message).join("\n"), /A gw3\.example\.test: ENOTFOUND; AAAA: timed out/);
});

let dualServer: TlsServer;
/** A silent UDP socket on the same port number, both families: WireGuard, IKE and DTLS of a dual-stack gateway. */
let dualUdp: UdpSocket;
before(async () => {
  // One TLS port on both loopback addresses: a dual-stack gateway.
  dualServer = createTlsServer(
    { key: readFileSync(join(certDir, "k.pem")), cert: readFileSync(join(certDir, "c.pem")) },
    (s) => s.end(),
  );
  dualServer.listen({ port: 0, host: "::", ipv6Only: false });
  await once(dualServer, "listening");
  dualUdp = createSocket({ type: "udp6", ipv6Only: false });
  dualUdp.bind(portOf(dualServer), "::");
  await once(dualUdp, "listening");
});
after(async () => {
  dualUdp.close();
  await new Promise<void>((r) => {
    dualServer.close(() => {
      r();
    });
  });
});

test("a-dual-stack-gateway-is-probed-over-both-families-and-ipv6-is-chosen-when-it-works", async () => {
  const c: Candidate = {
    ...loopbackCandidate("dual"),
    address: "127.0.0.1",
    addresses: { ipv4: "127.0.0.1", ipv6: "::1" },
  };
  const ports = { dual: { anyconnect: portOf(dualServer), wireguard: portOf(dualServer), ikev2: portOf(dualServer) } };
  const t0 = Date.now();
  const [p] = await probeCandidates([c], { timeoutMs: 5000, ports });
  const ms = Date.now() - t0;
  console.log(`dual-stack loopback probe in ${ms} ms: ${JSON.stringify(p)}`);
  assert.equal(p?.address, "::1", "IPv6 works and IPv4 is not clearly faster");
  assert.deepEqual(p.reachable, {
    wireguard: "unknown",
    ikev2: "unknown",
    "anyconnect-tls": "yes",
    "anyconnect-dtls": "unknown",
  });
  assert.equal(p.families?.ipv4?.works, true);
  assert.equal(p.families.ipv6?.works, true);
  assert.ok(ms < 500, `both families answered: no wait for the timeout (${ms} ms)`);
  assert.equal(withProbe(c, p).address, "::1", "the probe's choice becomes the candidate's address");
  const [held] = await probeCandidates([c], { timeoutMs: 5000, ports, incumbents: { dual: "127.0.0.1" } });
  assert.ok(
    held?.address === "127.0.0.1" || (held?.families?.ipv6?.latencyMs ?? 1) <= (held?.families?.ipv4?.latencyMs ?? 0),
    "an IPv4 incumbent moves only when IPv6 is at least as fast",
  );
});

test("a-gateway-whose-anyconnect-answers-on-ipv4-only-is-reached-over-ipv4", async () => {
  // tlsServer listens on 127.0.0.1 only: over ::1 the same port is refused (the path works, AnyConnect does not).
  const c: Candidate = {
    ...loopbackCandidate("v4tls"),
    address: "127.0.0.1",
    addresses: { ipv4: "127.0.0.1", ipv6: "::1" },
  };
  const [p] = await probeCandidates([c], {
    timeoutMs: TIMEOUT_MS,
    ports: {
      v4tls: { anyconnect: portOf(tlsServer), wireguard: openUdp.address().port, ikev2: openUdp.address().port },
    },
  });
  assert.equal(p?.families?.ipv6?.works, true, "a RST proves the IPv6 path");
  assert.equal(p.address, "127.0.0.1");
  assert.equal(p.reachable["anyconnect-tls"], "yes");
});

test("an-http-portal-url-is-a-configuration-error-naming-the-field", () => {
  const r = parseConfig({
    ...JSON.parse(JSON.stringify(config())),
    discovery: { portalUrl: "http://portal.example.test/gw" },
  });
  assert.ok(!r.ok);
  assert.deepEqual(
    r.issues.map((i) => i.path),
    ["discovery.portalUrl"],
  );
  assert.match(r.issues[0]?.message ?? "", /https/);
});

test("a-portal-whose-certificate-no-trusted-ca-signed-is-refused", async () => {
  // No CA file: the system's CAs, which never signed the throwaway test CA.
  const r = await discover(withPortal("/ok", {}), { timeoutMs: TIMEOUT_MS, resolver: fakeResolver({}, {}) });
  const p = r.problems.find((x) => x.source === "portal");
  assert.match(p?.message ?? "", /certificate|CERT|verify/i, JSON.stringify(r.problems));
  assert.equal(r.candidates.find((c) => c.name === "gw2")?.address, null, "nothing from the unverified portal");
});

test("a-portal-whose-key-matches-no-pin-is-refused-and-the-right-pin-is-enough", async () => {
  const wrong = `sha256/${"A".repeat(43)}=`;
  const r = await discover(withPortal("/ok", { pins: [wrong] }), {
    timeoutMs: TIMEOUT_MS,
    resolver: fakeResolver({}, {}),
  });
  const p = r.problems.find((x) => x.source === "portal");
  assert.match(p?.message ?? "", /matches no configured pin/, JSON.stringify(r.problems));
  assert.equal(r.candidates.find((c) => c.name === "gw2")?.address, null);
  // The pin is the trust anchor: no CA needed (as openconnect's pin for a gateway).
  const ok = await discover(withPortal("/ok", { pins: [wrong, portalCert.pin] }), {
    timeoutMs: TIMEOUT_MS,
    resolver: fakeResolver({}, {}),
  });
  assert.deepEqual(
    ok.problems.filter((x) => x.source === "portal" && !/not in the configuration/.test(x.message)),
    [],
  );
  assert.equal(ok.candidates.find((c) => c.name === "gw2")?.address, "192.0.2.22");
});

test("an-unreadable-portal-ca-file-fails-the-portal-closed-naming-the-field", async () => {
  const r = await discover(withPortal("/ok", { caFile: join(portalDir, "missing.pem") }), {
    timeoutMs: TIMEOUT_MS,
    resolver: fakeResolver({}, {}),
  });
  assert.match(
    r.problems.find((x) => x.source === "portal")?.message ?? "",
    /discovery\.portalTls\.caFile .*missing\.pem: ENOENT/,
  );
  assert.equal(r.candidates.find((c) => c.name === "gw2")?.address, null);
});

test("special-use-and-protected-addresses-from-the-portal-or-dns-are-refused-with-a-reason", async () => {
  const hostileDns = fakeResolver(
    {},
    { "gw2.example.test": ["127.0.0.1"], "gw3.example.test": ["198.19.0.77", "192.0.2.3"] },
  );
  const r = await discover(withPortal("/hostile"), { timeoutMs: TIMEOUT_MS, resolver: hostileDns });
  const by = new Map(r.candidates.map((c) => [c.name, c]));
  assert.equal(by.get("gw2")?.address, null, "neither DNS's loopback nor the portal's protected address");
  assert.equal(by.get("gw3")?.address, "192.0.2.3", "the next A record that is acceptable");
  const refused = r.problems.flatMap((p) =>
    p.refused === undefined ? [] : [[p.source, p.refused.gateway, p.refused.address]],
  );
  assert.deepEqual(refused.sort(), [
    ["dns", "gw2", "127.0.0.1"],
    ["dns", "gw3", "198.19.0.77"],
    ["portal", "gw2", "198.19.0.9"],
    ["portal", "gw3", "::ffff:7f00:1"],
    ["portal", "gw8.example.test", "169.254.1.1"],
  ]);
  assert.ok(
    r.problems.some((p) =>
      /gw2: 198\.19\.0\.9 from the portal refused: inside the protected network 198\.19\.0\.0\/24/.test(p.message),
    ),
    JSON.stringify(r.problems),
  );
  assert.equal(r.unpinned.find((u) => u.name === "gw8")?.address, null);
});
