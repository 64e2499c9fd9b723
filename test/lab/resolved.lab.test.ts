/**
 * The tunnel's DNS with a real systemd-resolved: resolved (Debian's binary, unpacked by scripts/setup.sh, never
 * installed) runs in the lab's client namespace on a private system bus of its own dbus-daemon, without systemd as
 * PID 1, and detourd's resolv.conf is a link into resolved's folder. The test reads resolved's state over that bus
 * (never detourd's opinion of it): split DNS on the tunnel's link, an intranet name resolved through the tunnel,
 * the link moving with a failover, reverted on disconnect, and reverted by the successor after a SIGKILL.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentLogs, agentPaths, agentRunning, agentStart, agentStop } from "./agent.ts";
import { startLabBus, type LabBus } from "./dbus.ts";
import { isAlive, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import * as lab from "./lab.ts";
import { CORP_DOMAIN, INTRANET_NAME } from "./services.ts";
import { waitForStatus } from "./wait-status.ts";

const ID = "dres";
const RESOLVED_BIN =
  process.env.DETOUR_RESOLVED_BIN ?? "/var/cache/detour-lab/systemd-resolved/lib/systemd/systemd-resolved";
/** A healthy lab connects within a second or two; 20 s bounds a loaded, shared machine. */
const CONNECT_WITHIN_MS = 20_000;
/** Failover by the standby takes well under a second; a race a few seconds. */
const FAILOVER_WITHIN_MS = 20_000;
/** resolved starts in tens of milliseconds; an unloaded machine needs far less than this. */
const SERVICE_READY_MS = 10_000;
/** A daemon that ignores SIGTERM this long gets SIGKILL. */
const STOP_GRACE_MS = 3_000;
/** detourd's DNS step runs right after the route change; this bounds it on a busy machine. */
const DNS_WITHIN_MS = 5_000;
/** A routing domain only the tunnel's resolver knows (split DNS sends it, and nothing else, to the tunnel). */
const ROUTED = "corp.example";

const dir = (): string => join(lab.labDirOf(ID), "resolved");
let labBus: LabBus | null = null;
const busAddress = (): string => {
  if (labBus === null) throw new Error("the private bus is not running");
  return labBus.address;
};
const ns = (): string => lab.topologyOf(ID).client.ns;
const pids: number[] = [];
let client: ControlClient | null = null;

/** busctl on the private bus, from inside the client namespace; JSON output. */
function bus(args: string[]): unknown[] {
  const r = spawnSync("ip", ["netns", "exec", ns(), "busctl", "--system", "--timeout=3", "--json=short", ...args], {
    encoding: "utf8",
    timeout: 10_000,
    env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: busAddress() },
  });
  if (r.status !== 0) throw new Error(`busctl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => (JSON.parse(l) as { data: unknown }).data);
}

function ifindex(dev: string): number | null {
  const r = spawnSync("ip", ["-n", ns(), "-o", "link", "show", "dev", dev], { encoding: "utf8", timeout: 5_000 });
  const m = /^(\d+):/.exec(r.stdout);
  return r.status === 0 && m?.[1] !== undefined ? Number(m[1]) : null;
}

function ipOf(family: number, bytes: number[]): string {
  if (family === 2) return bytes.join(".");
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return g.join(":");
}

/** Every per-link server resolved holds, as "<ifindex> <address>" (global ones, ifindex 0, left out). */
function linkServers(): string[] {
  const [dns] = bus([
    "get-property",
    "org.freedesktop.resolve1",
    "/org/freedesktop/resolve1",
    "org.freedesktop.resolve1.Manager",
    "DNS",
  ]);
  return (dns as [number, number, number[]][])
    .filter(([i]) => i !== 0)
    .map(([i, f, b]) => `${String(i)} ${ipOf(f, b)}`);
}

/** Every per-link domain, as "<ifindex> [~]<name>". */
function linkDomains(): string[] {
  const [doms] = bus([
    "get-property",
    "org.freedesktop.resolve1",
    "/org/freedesktop/resolve1",
    "org.freedesktop.resolve1.Manager",
    "Domains",
  ]);
  return (doms as [number, string, boolean][])
    .filter(([i]) => i !== 0)
    .map(([i, n, r]) => `${String(i)} ${r ? "~" : ""}${n}`);
}

function defaultRoute(dev: string): boolean {
  const idx = ifindex(dev);
  assert.ok(idx !== null, `device ${dev} exists`);
  const [path] = bus([
    "call",
    "org.freedesktop.resolve1",
    "/org/freedesktop/resolve1",
    "org.freedesktop.resolve1.Manager",
    "GetLink",
    "i",
    String(idx),
  ]);
  const [v] = bus([
    "get-property",
    "org.freedesktop.resolve1",
    String(path),
    "org.freedesktop.resolve1.Link",
    "DefaultRoute",
  ]);
  return v === true;
}

/** Resolves a name through resolved (its D-Bus API): the addresses, or the error resolved gave. */
function resolveName(name: string): string[] | string {
  try {
    const out = bus([
      "call",
      "org.freedesktop.resolve1",
      "/org/freedesktop/resolve1",
      "org.freedesktop.resolve1.Manager",
      "ResolveHostname",
      "isit",
      "0",
      name,
      "2",
      "0",
    ]);
    const addrs = (out as [[number, number, number[]][], string, number][])[0]?.[0] ?? [];
    return addrs.map(([, f, b]) => ipOf(f, b));
  } catch (err) {
    return (err as Error).message;
  }
}

function logTail(file: string): string {
  return existsSync(file) ? readFileSync(file, "utf8").slice(-2000) : "";
}

/** A private system bus and resolved in the client namespace (resolved's run folder private to its mount namespace). */
async function startResolved(): Promise<void> {
  rmSync(dir(), { recursive: true, force: true });
  mkdirSync(dir(), { recursive: true, mode: 0o755 });
  labBus = await startLabBus(ns(), join(lab.labDirOf(ID), "bus"));
  // resolved drops to a user of its own when started as root; "nobody" with the three capabilities it keeps
  // stands in for it (Debian's systemd-resolve user does not exist where the package is only unpacked).
  const script = [
    "mount -t tmpfs -o mode=755 tmpfs /run/systemd",
    "mkdir /run/systemd/resolve",
    "chown nobody:nogroup /run/systemd/resolve",
    `exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=+net_bind_service,+net_raw,+setpcap --ambient-caps=+net_bind_service,+net_raw,+setpcap ${RESOLVED_BIN}`,
  ].join(" && ");
  const resolvedLog = join(dir(), "resolved.log");
  const pid = spawnDaemon(["ip", "netns", "exec", ns(), "unshare", "-m", "sh", "-c", script], {
    logFile: resolvedLog,
    env: { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: busAddress() },
  });
  pids.push(pid);
  await waitFor(
    "systemd-resolved on the private bus",
    () => {
      if (!isAlive(pid)) throw new Error(`systemd-resolved exited:\n${logTail(resolvedLog)}`);
      try {
        bus(["call", "org.freedesktop.resolve1", "/org/freedesktop/resolve1", "org.freedesktop.DBus.Peer", "Ping"]);
        return true;
      } catch {
        return false;
      }
    },
    { timeoutMs: SERVICE_READY_MS, intervalMs: 100 },
  );
  // detourd's resolv.conf: resolved's stub, as on Ubuntu or Fedora.
  symlinkSync("/run/systemd/resolve/stub-resolv.conf", join(dir(), "resolv.conf"));
}

async function startAgent(): Promise<ControlClient> {
  rmSync(agentPaths(ID).socket, { force: true });
  process.env.DBUS_SYSTEM_BUS_ADDRESS = busAddress();
  const a = await agentStart(ID, { extraArgs: ["--resolv-conf", join(dir(), "resolv.conf")], keepWorkDir: true });
  client = await waitFor(
    "detourd's control socket to answer",
    () => ControlClient.connect(a.socket, { timeoutMs: 5000 }).catch(() => false as const),
    { timeoutMs: 20_000, intervalMs: 100 },
  );
  return client;
}

before(async () => {
  assert.ok(existsSync(RESOLVED_BIN), `${RESOLVED_BIN} exists (scripts/setup.sh unpacks Debian's systemd-resolved)`);
  await lab.down(ID);
  await lab.up(ID);
  const cfgPath = lab.loadState(ID).clientConfig;
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8")) as { tunnelDns: Record<string, unknown> };
  cfg.tunnelDns = { ...cfg.tunnelDns, mode: "split", routingDomains: [ROUTED] };
  writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
  await startResolved();
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await stopPids([...pids].reverse(), "SIGTERM", STOP_GRACE_MS);
  await labBus?.stop();
  delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
  await lab.down(ID);
});

test(
  "resolved-gets-split-dns-on-the-tunnel-link-that-follows-a-failover-is-reverted-and-survives-a-sigkill",
  { timeout: 240_000 },
  async () => {
    const corp = lab.topologyOf(ID).corp.address;
    const c = await startAgent();
    await c.connect();
    const s0 = await waitForStatus(
      c,
      "connected with the tunnel's DNS on its link",
      (s) => s.state === "connected" && s.dns?.link != null,
      CONNECT_WITHIN_MS,
      { context: () => agentLogs(ID, 30) },
    );
    const dev1 = s0.dns?.link ?? "?";
    const idx1 = ifindex(dev1);
    assert.equal(s0.dns?.backend, "resolved");
    assert.deepEqual(linkServers(), [`${String(idx1)} ${corp}`], "only the tunnel's link holds the tunnel's server");
    assert.deepEqual(
      linkDomains().sort(),
      [`${String(idx1)} ${CORP_DOMAIN}`, `${String(idx1)} ~${ROUTED}`].sort(),
      "split DNS: the search domain and the routing domain, no ~.",
    );
    assert.equal(defaultRoute(dev1), false, "split DNS: other names stay with the network's resolvers");
    const intranet = resolveName(INTRANET_NAME);
    console.log(`${INTRANET_NAME} through resolved: ${JSON.stringify(intranet)}`);
    assert.deepEqual(intranet, [corp], "an intranet name resolves through the tunnel's resolver");

    // Failover: gw's engines die, the standby (another device) takes the routes and the DNS.
    const from = s0.gateway ?? "?";
    await lab.kill(from, "all", ID);
    const s1 = await waitForStatus(
      c,
      "failover with the DNS on the new link",
      (s) => s.state === "connected" && s.gateway !== from && s.dns?.link != null && s.dns.link !== dev1,
      FAILOVER_WITHIN_MS,
      { context: () => agentLogs(ID, 30) },
    );
    const dev2 = s1.dns?.link ?? "?";
    const idx2 = ifindex(dev2);
    await waitFor("only the new link to hold the server", () => linkServers().join() === `${String(idx2)} ${corp}`, {
      timeoutMs: DNS_WITHIN_MS,
      intervalMs: 100,
    }).catch(() =>
      assert.fail(
        `after the failover resolved holds ${linkServers().join(", ")}, wanted only ${String(idx2)} (${dev2})`,
      ),
    );
    assert.deepEqual(resolveName(INTRANET_NAME), [corp], "intranet names still resolve after the failover");

    // Disconnect: nothing of the tunnel's stays in resolved.
    await c.disconnect();
    await waitFor("resolved to hold no tunnel DNS", () => linkServers().length === 0 && linkDomains().length === 0, {
      timeoutMs: DNS_WITHIN_MS,
      intervalMs: 100,
    }).catch(() =>
      assert.fail(`after disconnect resolved holds ${linkServers().join(", ")} ${linkDomains().join(", ")}`),
    );
    assert.equal((await c.status()).dns?.backend, null);

    // SIGKILL while connected: the engines (and their devices) stay, so resolved keeps the settings...
    await c.connect();
    const s2 = await waitForStatus(
      c,
      "connected again",
      (s) => s.state === "connected" && s.dns?.link != null,
      CONNECT_WITHIN_MS,
    );
    const dev3 = s2.dns?.link ?? "?";
    client?.close();
    client = null;
    const running = agentRunning(ID);
    assert.ok(running !== null);
    process.kill(running.pid, "SIGKILL");
    for (let i = 0; i < 100 && agentRunning(ID) !== null; i++) await sleep(20);
    await sleep(300);
    const idx3 = ifindex(dev3);
    assert.deepEqual(linkServers(), [`${String(idx3)} ${corp}`], "the killed detourd's link still holds the DNS");
    // ...until the successor reverts them (before it stops the old engines) and, resuming, sets its own.
    const c2 = await startAgent();
    const s3 = await waitForStatus(
      c2,
      "the successor connected",
      (s) => s.state === "connected" && s.dns?.link != null,
      CONNECT_WITHIN_MS,
    );
    const reclaimLog = agentLogs(ID, 300)
      .split("\n")
      .filter((l) => l.includes("reclaimed what a previous detourd left behind"));
    assert.ok(
      reclaimLog.some((l) => l.includes(`resolved link settings on ${dev3}`)),
      `the successor reverted ${dev3}'s link: ${reclaimLog.join("\n")}`,
    );
    const idx4 = ifindex(s3.dns?.link ?? "?");
    await waitFor(
      "only the successor's link to hold the server",
      () => linkServers().join() === `${String(idx4)} ${corp}`,
      {
        timeoutMs: DNS_WITHIN_MS,
        intervalMs: 100,
      },
    ).catch(() => assert.fail(`resolved holds ${linkServers().join(", ")}, wanted only ${String(idx4)}`));
    // A clean stop leaves nothing.
    c2.close();
    client = null;
    await agentStop(ID);
    await waitFor("a clean stop to revert the link", () => linkServers().length === 0 && linkDomains().length === 0, {
      timeoutMs: DNS_WITHIN_MS,
      intervalMs: 100,
    }).catch(() =>
      assert.fail(`after a clean stop resolved holds ${linkServers().join(", ")} ${linkDomains().join(", ")}`),
    );
  },
);
