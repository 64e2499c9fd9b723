/**
 * A DNS reassert whose resolv.conf backup cannot be written (main/agent/data-plane.ts #watchDns with the real reassertDns of
 * dns.linux.ts over temporary files, the state disk failing through the atomic-write seam): the tunnel's resolvers
 * are back (no lookup in clear to the network's resolver), the reassertion is counted, and status's dns.lastError
 * says that the network's newer resolv.conf was not saved, with the backup file and the system's code.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { parseConfig } from "../../main/core/config/schema.ts";
import { reassertDns, renderResolvConf } from "../../native/platform/dns.linux.ts";
import { FakeClock } from "../fakes/fake-clock.ts";
import { FakeWorld, fakeFinder, fakePlatform, fakeProber } from "../fakes/fake-platform.ts";
import type { AtomicFs } from "../../main/shared/atomic-write.ts";
import { Daemon } from "../../main/agent/daemon.ts";
import { createLogger } from "../../main/agent/log.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-data-plane-dns-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

test("a-reassert-whose-backup-write-fails-puts-the-tunnel-resolvers-back-and-reports-the-failure", async () => {
  const keyFile = join(root, "wg.key");
  writeFileSync(keyFile, "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=\n", { mode: 0o600 });
  const parsed = parseConfig({
    version: 1,
    organisation: "example",
    identity: { wireguard: { privateKey: { file: keyFile } } },
    gateways: [
      {
        name: "gw1",
        hostname: "gw1.vpn.example.com",
        address: "198.18.1.2",
        priority: 1,
        region: "eu",
        protocols: { wireguard: { publicKey: "A".repeat(43) + "=", tunnelAddress: "198.19.11.2/32" } },
      },
    ],
    protectedRoutes: ["198.19.0.0/24"],
    probe: { address: "198.19.0.1", port: 7 },
  });
  assert.ok(parsed.ok);
  const clock = new FakeClock();
  const world = new FakeWorld(clock, { gw1: {} });
  // The real resolv.conf handling over files of the test's own; the fake world keeps the rest.
  const resolvConf = join(root, "resolv.conf");
  const backupPath = join(root, "resolv.conf.orig");
  const original = "nameserver 198.18.53.2\n";
  writeFileSync(resolvConf, original);
  writeFileSync(backupPath, original);
  let diskFails = false;
  const stateFs: AtomicFs = {
    ...fs,
    writeSync: ((fd: number, buf: Uint8Array, off?: number, len?: number) => {
      if (diskFails) throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
      return fs.writeSync(fd, buf, off, len);
    }) as AtomicFs["writeSync"],
  };
  const base = fakePlatform(world);
  const platform = {
    ...base,
    dns: {
      ...base.dns,
      reassert: (settings: Parameters<typeof reassertDns>[0]) => {
        base.dns.reassert?.(settings, { path: resolvConf, backupPath });
        return reassertDns(settings, { path: resolvConf, backupPath }, { fs: stateFs });
      },
    },
  };
  const dir = join(root, "d");
  mkdirSync(dir);
  const { control } = new Daemon(
    {
      config: parsed.config,
      configPath: join(dir, "client.json"),
      workDir: join(dir, "work"),
      stateDir: join(dir, "state"),
      resolvConf,
      ifnamePrefix: "dfake",
      log: createLogger({ write: () => undefined }),
      version: "0.0.0-test",
      ownGroup: 64950,
    },
    { platform, clock, finder: fakeFinder(world), startMonitor: fakeProber(world) },
  );
  control.refreshKillSwitch();
  control.warmUp();
  await clock.advance(100);
  const pending = control.connect();
  await clock.advance(500);
  await pending;
  assert.ok(await clock.until(() => control.status().state === "connected", 10_000));
  assert.ok(world.dnsServers !== null && world.dnsWatch !== null, "the tunnel's DNS is in force and watched");
  const tunnel = { servers: world.dnsServers, searchDomains: [] as string[] };
  writeFileSync(resolvConf, renderResolvConf(tunnel));

  // The state disk fills up; then a network manager renews its lease and writes the network's resolvers.
  diskFails = true;
  writeFileSync(resolvConf, "nameserver 192.168.1.1\nsearch home.example\n");
  world.dnsWatch();
  await clock.advance(100);

  assert.equal(readFileSync(resolvConf, "utf8"), renderResolvConf(tunnel), "no lookup goes in clear to 192.168.1.1");
  assert.equal(readFileSync(backupPath, "utf8"), original, "the older saved original is whole");
  const dns = control.status().dns;
  assert.equal(dns.reassertions, 1, "the reassertion is counted");
  assert.match(dns.lastError ?? "", /tunnel's resolvers are back/);
  assert.match(dns.lastError ?? "", new RegExp(`${backupPath.replace(/[.]/g, "\\.")}.*ENOSPC`));
  await control.shutdown();
});
