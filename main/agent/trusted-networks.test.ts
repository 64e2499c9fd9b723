import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { FakeClock } from "../../test/fakes/fake-clock.ts";
import type { DetourConfig } from "../core/config/schema.ts";
import { TEST_WG_PUBLIC_KEY, testConfig, type TestConfigOptions } from "../../test/fakes/config.ts";
import type { ConnectionStateName } from "../core/connection/types.ts";
import type { TlsCheckResult } from "../core/trusted-networks.ts";
import { createLogger } from "./log.ts";
import { disconnectRefusal, NETWORK_POLL_MS, pollTrigger, sameNetwork, TrustedNetworks } from "./trusted-networks.ts";

const dir = mkdtempSync(join(tmpdir(), "detour-trusted-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const PIN = `sha256/${"B".repeat(43)}=`;
const OFFICE = "search office.example.com\nnameserver 192.168.50.1\n";
const HOTEL = "search hotel.example.net\nnameserver 10.77.0.1\n";

/** One gateway, no identity, and the trusted network "office". */
function config(over: TestConfigOptions = {}): DetourConfig {
  return testConfig({
    gateways: [
      {
        name: "gw1",
        hostname: "gw1.example.com",
        address: "198.18.1.2",
        priority: 10,
        region: "lab",
        protocols: { wireguard: { publicKey: TEST_WG_PUBLIC_KEY, tunnelAddress: "198.19.11.2/32" } },
      },
    ],
    trustedNetworks: {
      rules: [
        { name: "office", dnsDomains: ["office.example.com"], tlsHost: { address: "192.168.50.5", pins: [PIN] } },
      ],
      recheckMs: 10_000,
    },
    ...over,
  });
}

let n = 0;
function rig(opts: { config?: DetourConfig; autoConnect?: boolean; resolv?: string } = {}) {
  const resolvPath = join(dir, `resolv-${String(n++)}.conf`);
  writeFileSync(resolvPath, opts.resolv ?? OFFICE);
  const clock = new FakeClock();
  const calls: string[] = [];
  let state: ConnectionStateName = "disconnected";
  /** What the office's TLS host answers: the pinned key, an impostor's key, or nothing. */
  let answer: TlsCheckResult = { ok: true };
  const cfg = opts.config ?? config();
  const t = new TrustedNetworks(
    {
      config: () => cfg,
      autoConnect: () => opts.autoConnect ?? false,
      state: () => state,
      resolvConfPath: () => resolvPath,
      networkKey: () => null,
      connect: () => {
        calls.push("connect");
        // As the daemon's: the machine is busy only once the connect's kill switch went in, a moment later.
        return new Promise<void>((resolve) =>
          setImmediate(() => {
            state = "connected";
            resolve();
          }),
        );
      },
      disconnect: () => {
        calls.push("disconnect");
        state = "disconnected";
      },
      report: () => undefined,
      log: createLogger({ write: () => undefined }),
      check: () => {
        calls.push("check");
        return Promise.resolve(answer);
      },
    },
    clock,
  );
  return {
    t,
    clock,
    calls,
    setState: (s: ConnectionStateName) => (state = s),
    answer: (a: TlsCheckResult) => (answer = a),
    moveTo: (text: string) => {
      writeFileSync(resolvPath, text);
    },
  };
}

test("on-the-trusted-network-always-on-stays-down-and-status-names-the-rule", async () => {
  const r = rig({ autoConnect: true });
  await r.t.evaluate("start");
  assert.deepEqual(r.calls, ["check"]);
  const s = r.t.status();
  assert.deepEqual([s.trusted, s.rule, s.heldDown, s.alwaysOn], [true, "office", true, true]);
  assert.match(s.reason, /trusted network "office"/);
});

test("a-connected-tunnel-goes-down-on-arrival-and-leaving-the-network-connects-by-itself", async () => {
  const r = rig({ resolv: HOTEL });
  r.setState("connected");
  r.t.start(
    pollTrigger(
      r.clock,
      () => r.t.identity(),
      () => 10_000,
    ),
  );
  await r.t.evaluate("recheck");
  assert.deepEqual(r.calls, [], "no DNS match, no TLS check, nothing to do");
  r.moveTo(OFFICE);
  await r.clock.advance(NETWORK_POLL_MS);
  assert.deepEqual(r.calls, ["check", "disconnect"]);
  r.moveTo(HOTEL);
  await r.clock.advance(NETWORK_POLL_MS);
  assert.deepEqual(r.calls, ["check", "disconnect", "connect"], "left the trusted network: connects");
  r.t.stop();
});

test("the-trusted-host-going-away-is-noticed-by-the-periodic-recheck", async () => {
  const r = rig();
  r.t.start(
    pollTrigger(
      r.clock,
      () => r.t.identity(),
      () => 10_000,
    ),
  );
  await r.t.evaluate("start");
  assert.equal(r.t.status().trusted, true);
  r.answer({ ok: false, reason: "192.168.50.5:443: ECONNREFUSED" });
  await r.clock.advance(10_000);
  assert.equal(r.t.status().trusted, false);
  assert.match(r.t.status().reason, /ECONNREFUSED/);
  assert.deepEqual(r.calls.slice(-1), ["connect"]);
  r.t.stop();
});

test("an-impostor-with-the-same-domain-but-another-key-is-untrusted-and-always-on-connects", async () => {
  const r = rig({ autoConnect: true });
  r.answer({ ok: false, reason: "192.168.50.5:443 answered with a public key (sha256/x) that matches no pin" });
  await r.t.evaluate("start");
  assert.deepEqual(r.calls, ["check", "connect"]);
  assert.equal(r.t.status().trusted, false);
  assert.match(r.t.status().reason, /matches no pin/);
});

test("a-connect-on-the-trusted-network-is-refused-naming-the-rule-and-the-policy", async () => {
  const r = rig();
  const refusal = await r.t.connectRefusal();
  assert.match(refusal ?? "", /trusted network "office".*trustedNetworkPolicy: disconnect/);
  const connectPolicy = rig({
    config: config({
      trustedNetworks: {
        policy: "connect",
        rules: [
          { name: "office", dnsDomains: ["office.example.com"], tlsHost: { address: "192.168.50.5", pins: [PIN] } },
        ],
      },
    }),
  });
  assert.equal(await connectPolicy.t.connectRefusal(), null);
});

test("a-recheck-never-reconnects-after-the-user-disconnected-but-a-network-change-does-under-always-on", async () => {
  const r = rig({ autoConnect: true, resolv: HOTEL });
  r.t.userDisconnected();
  await r.t.evaluate("recheck");
  assert.deepEqual(r.calls, []);
  await r.t.evaluate("network-change");
  assert.deepEqual(r.calls, ["connect"]);
});

test("the-trusted-host-is-not-checked-through-the-tunnel", async () => {
  const c = config({
    trustedNetworks: {
      rules: [{ name: "office", dnsDomains: ["office.example.com"], tlsHost: { address: "198.19.0.9", pins: [PIN] } }],
    },
  });
  const r = rig({ config: c });
  r.setState("connected");
  await r.t.evaluate("recheck");
  assert.deepEqual(r.calls, [], "no check, no disconnect");
  assert.match(r.t.status().reason, /network the tunnel carries/);
});

test("always-on-refuses-a-disconnect-naming-the-policy", () => {
  assert.equal(disconnectRefusal(config()), null);
  assert.match(disconnectRefusal(config({ allowDisconnect: false })) ?? "", /allowDisconnect: false/);
});

test("a-network-key-looked-up-for-the-first-time-is-not-a-move-between-networks", () => {
  const facts = '{"domains":["office.example.com"],"servers":[]}';
  assert.equal(sameNetwork(`?|${facts}`, `k1|${facts}`), true);
  assert.equal(sameNetwork(`k1|${facts}`, `k1|${facts}`), true);
  assert.equal(sameNetwork(`k1|${facts}`, `k2|${facts}`), false, "another network behind the same DHCP answers");
  assert.equal(sameNetwork(`k1|${facts}`, `k1|{"domains":[],"servers":[]}`), false);
});

test("two-evaluations-at-once-connect-only-once", async () => {
  const r = rig({ autoConnect: true, resolv: HOTEL });
  await Promise.all([r.t.evaluate("start"), r.t.evaluate("network-change")]);
  assert.deepEqual(r.calls, ["connect"]);
});

test("an-unreadable-resolv-conf-is-untrusted-and-status-says-why", async () => {
  const r = rig();
  r.moveTo("");
  const t = new TrustedNetworks(
    {
      config: () => config(),
      autoConnect: () => false,
      state: () => "disconnected",
      resolvConfPath: () => join(dir, "missing.conf"),
      networkKey: () => null,
      connect: () => Promise.resolve(),
      disconnect: () => undefined,
      report: () => undefined,
      log: createLogger({ write: () => undefined }),
      check: () => Promise.resolve({ ok: true }),
    },
    r.clock,
  );
  const v = await t.evaluate("start");
  assert.equal(v.trusted, false);
  assert.match(t.status().reason, /cannot read .*missing\.conf: ENOENT/);
});
