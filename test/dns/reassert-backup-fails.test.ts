/**
 * A DNS reassert whose resolv.conf backup cannot be written (main/agent/data-plane.ts #watchDns with the real
 * reassertDns of native/platform/dns.linux.ts over temporary files, the state disk failing through the atomic-write
 * seam): the tunnel's resolvers are back (no lookup in clear to the network's resolver), the reassertion is counted,
 * and status's dns.lastError says that the network's newer resolv.conf was not saved, with the backup file and the
 * system's code. It lives here because main/agent may not import *.linux.ts.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { AtomicFs } from "../../main/shared/atomic-write.ts";
import { reassertDns, renderResolvConf } from "../../native/platform/dns.linux.ts";
import { connectOneGateway, oneGatewayRig, startOneGatewayDaemon } from "../fakes/one-gateway-daemon.ts";

const root = mkdtempSync(join(tmpdir(), "detourd-reassert-backup-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

test("a-reassert-whose-backup-write-fails-puts-the-tunnel-resolvers-back-and-reports-the-failure", async () => {
  const rig = oneGatewayRig(root);
  const { resolvConf, world } = rig;
  // The real resolv.conf handling over the rig's files; the fake world keeps the rest.
  const backupPath = join(root, "resolv.conf.orig");
  const original = readFileSync(resolvConf, "utf8");
  writeFileSync(backupPath, original);
  let diskFails = false;
  const stateFs: AtomicFs = {
    ...fs,
    writeSync: ((fd: number, buf: Uint8Array, off?: number, len?: number) => {
      if (diskFails) throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
      return fs.writeSync(fd, buf, off, len);
    }) as AtomicFs["writeSync"],
  };
  const base = rig.platform.dns;
  rig.platform = {
    ...rig.platform,
    dns: {
      ...base,
      reassert: (settings) => {
        base.reassert?.(settings, { path: resolvConf, backupPath });
        return reassertDns(settings, { path: resolvConf, backupPath }, { fs: stateFs });
      },
    },
  };
  const d = await startOneGatewayDaemon(root, rig);
  await connectOneGateway(d);
  assert.ok(world.dnsServers !== null && world.dnsWatch !== null, "the tunnel's DNS is in force and watched");
  const tunnel = { servers: world.dnsServers, searchDomains: [] as string[] };
  writeFileSync(resolvConf, renderResolvConf(tunnel));

  // The state disk fills up; then a network manager renews its lease and writes the network's resolvers.
  diskFails = true;
  writeFileSync(resolvConf, "nameserver 192.168.1.1\nsearch home.example\n");
  world.dnsWatch();
  await d.clock.advance(100);

  assert.equal(readFileSync(resolvConf, "utf8"), renderResolvConf(tunnel), "no lookup goes in clear to 192.168.1.1");
  assert.equal(readFileSync(backupPath, "utf8"), original, "the older saved original is whole");
  const dns = d.control.status().dns;
  assert.equal(dns.reassertions, 1, "the reassertion is counted");
  assert.match(dns.lastError ?? "", /tunnel's resolvers are back/);
  assert.match(dns.lastError ?? "", new RegExp(`${backupPath.replace(/[.]/g, "\\.")}.*ENOSPC`));
  await d.control.shutdown();
});
