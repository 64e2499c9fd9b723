/**
 * A path MTU black hole: every gateway sits behind a 1400-byte hop (the router's links to gw1-gw3) whose ICMP
 * "fragmentation needed" / "packet too big" the router drops, as many PPPoE, LTE and nested-tunnel paths do. Small
 * packets cross, full-size ones vanish. detourd must find it on connect (full-size echoes through each leg, the
 * device's MTU lowered to what crosses), so that an SSH session (Debian's sshd in corp) moving megabytes both ways
 * and a large HTTP download from corp do not stall; the TCP MSS clamp is in force while connected and gone after
 * exit. Then the hop shrinks under the connected tunnel and the periodic check lowers the MTU again.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { ACTIVITY_HOLD_MS } from "../../main/core/connection/pace.ts";
import type { ConnectionEvent } from "../../main/core/connection/types.ts";
import { readMssClamp } from "../../native/platform/mss.linux.ts";
import { agentStart, agentStop } from "./agent.ts";
import { inNs, isAlive, nsRun, readIfExists, run, runOk, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import * as lab from "./lab.ts";
import { waitForStatus, type Status } from "./wait-status.ts";

const ID = "mtu";
/** The hop's MTU: what a PPPoE line inside another tunnel, or many LTE networks, leave. */
const HOP_MTU = 1400;
/** The smaller hop the path changes to while connected. */
const SMALLER_HOP_MTU = 1360;
/** A connect here includes each leg's full-size check and, for black-holed legs, the search: seconds, not tens. */
const CONNECT_WITHIN_MS = 30_000;
/** The periodic check runs every 10 s (PMTU_RECHECK_MS) and its search takes a few seconds more. */
const RECHECK_WITHIN_MS = 30_000;
/** Long enough after the transfers for the probes' idle pace (the fast pace's hold is 3 s, pace.ts). */
const IDLE_AFTER_MS = ACTIVITY_HOLD_MS + 2000;
/** Megabytes over a 0 ms veth take well under a second; a stalled transfer is stopped here (the failure). */
const TRANSFER_TIMEOUT_MS = 20_000;
const DOWNLOAD_BYTES = 5_000_000;
const SSH_BYTES = 4_000_000;
const SSH_PORT = 2223;
/** sshd reads its config and key and listens within milliseconds; a loaded machine gets ten seconds. */
const SSHD_READY_MS = 10_000;
const SSHD_STOP_GRACE_MS = 3000;
const DISCONNECT_WITHIN_MS = 15_000;
/** Debian's privilege separation folder; created (and removed) here if the host has none. */
const PRIVSEP_DIR = "/run/sshd";

const topo = lab.topologyOf(ID);
const clientNs = topo.client.ns;
const routerNs = topo.router.ns;
const corp = topo.corp.address;
const sshDir = join(lab.labDirOf(ID), "mtu-ssh");
let sshdPid: number | null = null;
let createdPrivsep = false;
let client: ControlClient | null = null;

/** The router's links toward the gateways get `mtu`; the ICMP that would tell senders about it is dropped. */
async function shrinkHop(mtu: number): Promise<void> {
  for (const g of topo.gateways)
    await nsRun(routerNs, ["ip", "link", "set", "dev", g.routerSide.ifname, "mtu", String(mtu)]);
  await nsRun(routerNs, ["nft", "-f", "-"], {
    input: [
      "table inet detour_mtu_hop {",
      "\tchain forward_icmp {",
      "\t\ttype filter hook forward priority -20; policy accept;",
      "\t\ticmp type destination-unreachable icmp code frag-needed counter drop",
      "\t\ticmpv6 type packet-too-big counter drop",
      "\t}",
      "\tchain output_icmp {",
      "\t\ttype filter hook output priority -20; policy accept;",
      "\t\ticmp type destination-unreachable icmp code frag-needed counter drop",
      "\t\ticmpv6 type packet-too-big counter drop",
      "\t}",
      "}",
      "",
    ].join("\n"),
  });
}

async function startSshd(): Promise<void> {
  rmSync(sshDir, { recursive: true, force: true });
  mkdirSync(sshDir, { recursive: true, mode: 0o700 });
  for (const k of ["host", "client"])
    await runOk("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", `detour-${ID}-${k}`, "-f", join(sshDir, k)]);
  writeFileSync(join(sshDir, "authorized_keys"), readIfExists(join(sshDir, "client.pub")), { mode: 0o600 });
  const conf = join(sshDir, "sshd_config");
  writeFileSync(
    conf,
    [
      `Port ${String(SSH_PORT)}`,
      `ListenAddress ${corp}`,
      `HostKey ${join(sshDir, "host")}`,
      "PidFile none",
      `AuthorizedKeysFile ${join(sshDir, "authorized_keys")}`,
      "AuthenticationMethods publickey",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PermitRootLogin prohibit-password",
      "UsePAM no",
      "StrictModes no",
      "AllowTcpForwarding no",
      "X11Forwarding no",
      "PermitTTY no",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );
  createdPrivsep = !existsSync(PRIVSEP_DIR);
  if (createdPrivsep) mkdirSync(PRIVSEP_DIR, { mode: 0o755 });
  const log = join(sshDir, "sshd.log");
  const pid = spawnDaemon(inNs(topo.corp.ns, ["/usr/sbin/sshd", "-D", "-e", "-f", conf]), { logFile: log });
  sshdPid = pid;
  await waitFor(
    "sshd in corp to listen",
    () => {
      if (!isAlive(pid)) throw new Error(`sshd exited:\n${readIfExists(log).slice(-2000)}`);
      return readIfExists(log).includes(`Server listening on ${corp} port ${String(SSH_PORT)}`);
    },
    { timeoutMs: SSHD_READY_MS, intervalMs: 50 },
  );
}

async function stopSshd(): Promise<void> {
  if (sshdPid !== null && isAlive(sshdPid)) await stopPids([sshdPid], "SIGTERM", SSHD_STOP_GRACE_MS);
  sshdPid = null;
  if (createdPrivsep && existsSync(PRIVSEP_DIR) && readdirSync(PRIVSEP_DIR).length === 0)
    rmSync(PRIVSEP_DIR, { recursive: true, force: true });
  rmSync(sshDir, { recursive: true, force: true });
}

function sshArgv(command: string): [string, ...string[]] {
  return inNs(clientNs, [
    "ssh",
    "-F",
    "none",
    "-i",
    join(sshDir, "client"),
    "-p",
    String(SSH_PORT),
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "ConnectTimeout=10",
    "-o",
    "LogLevel=ERROR",
    `root@${corp}`,
    command,
  ]);
}

/** One SSH session that receives `SSH_BYTES`, one that sends them: both must finish in time with every byte. */
async function sshBothWays(what: string): Promise<void> {
  const [file, ...args] = sshArgv(`head -c ${String(SSH_BYTES)} /dev/zero`);
  const t0 = Date.now();
  const down = await run(file, args, { timeoutMs: TRANSFER_TIMEOUT_MS });
  assert.equal(
    down.code,
    0,
    `${what}: ssh download ended with ${String(down.code)}/${String(down.signal)}: ${down.stderr}`,
  );
  assert.equal(down.stdout.length, SSH_BYTES, `${what}: every byte of the SSH download arrived`);
  const t1 = Date.now();
  const [f2, ...a2] = sshArgv("wc -c");
  const up = await run(f2, a2, { timeoutMs: TRANSFER_TIMEOUT_MS, input: "0".repeat(SSH_BYTES) });
  assert.equal(up.code, 0, `${what}: ssh upload ended with ${String(up.code)}/${String(up.signal)}: ${up.stderr}`);
  assert.equal(up.stdout.trim(), String(SSH_BYTES), `${what}: every byte of the SSH upload arrived`);
  console.log(`${what}: ssh ${String(SSH_BYTES)} B down in ${String(t1 - t0)} ms, up in ${String(Date.now() - t1)} ms`);
}

/** A large HTTP download from corp (Node's own client in the client namespace), bounded in time. */
async function download(what: string): Promise<void> {
  const fetcher = [
    `const r = require("node:http").get(${JSON.stringify(`http://${corp}/bytes?n=${String(DOWNLOAD_BYTES)}`)}, (res) => {`,
    "  let n = 0;",
    "  res.on('data', (d) => { n += d.length; });",
    "  res.on('end', () => { process.stdout.write(String(n)); });",
    "});",
    "r.on('error', (e) => { process.stderr.write(e.message); process.exit(1); });",
  ].join("\n");
  const t0 = Date.now();
  const [file, ...args] = inNs(clientNs, [process.execPath, "-e", fetcher]);
  const r = await run(file, args, { timeoutMs: TRANSFER_TIMEOUT_MS });
  assert.equal(
    r.code,
    0,
    `${what}: the download stalled or failed (${String(r.code)}/${String(r.signal)}, got ${r.stdout} B) ${r.stderr}`,
  );
  assert.equal(Number(r.stdout), DOWNLOAD_BYTES, `${what}: every byte of the download arrived`);
  console.log(`${what}: ${String(DOWNLOAD_BYTES)} B download in ${String(Date.now() - t0)} ms`);
}

let baseConfig: string | null = null;

before(async () => {
  await lab.down(ID);
  await lab.up(ID, { distance: "none" });
  await shrinkHop(HOP_MTU);
  await startSshd();
});

after(async () => {
  client?.close();
  await agentStop(ID);
  if (baseConfig !== null) writeFileSync(lab.loadState(ID).clientConfig, baseConfig, { mode: 0o600 });
  await stopSshd();
  await lab.down(ID);
});

test("behind-a-1400-byte-hop-that-drops-icmp-too-big-ssh-and-a-large-download-do-not-stall", async () => {
  // The hop is really a black hole: a full-size packet toward a gateway vanishes while a small one crosses.
  const gw1 = topo.gateways[0]?.address ?? assert.fail();
  const small = await run("ip", ["netns", "exec", clientNs, "ping", "-c1", "-W1", "-M", "do", "-s", "56", gw1]);
  const full = await run("ip", ["netns", "exec", clientNs, "ping", "-c1", "-W1", "-M", "do", "-s", "1472", gw1]);
  assert.equal(small.code, 0, "a small echo crosses the hop");
  assert.notEqual(full.code, 0, "a full-size echo vanishes at the hop");

  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const c = client;
  const events: ConnectionEvent[] = [];
  const sub = await c.subscribe((e) => events.push(e));
  await c.connect();
  const s: Status = await waitForStatus(c, "connected", (x) => x.state === "connected", CONNECT_WITHIN_MS);
  console.log(`connected to ${String(s.gateway)} over ${String(s.protocol)}; path MTU ${JSON.stringify(s.pathMtu)}`);

  await download("behind the 1400-byte hop");
  await sshBothWays("behind the 1400-byte hop");

  const st = await c.status();
  const p = st.pathMtu;
  assert.ok(p !== undefined, "status reports the path MTU");
  assert.ok(p.mtu !== null && p.mtu <= HOP_MTU - 28, `the active tunnel's MTU (${String(p.mtu)}) fits the hop`);
  assert.equal(p.mssClamp, "in-force", "the TCP MSS clamp is in force while connected");
  const clamp = await readMssClamp(clientNs);
  assert.ok(clamp?.includes("maxseg size set rt mtu") === true, `the clamp table is in the kernel: ${String(clamp)}`);
  // The path changes under the connected tunnel while it is idle: nothing rechecks it then (the probes' idle pace,
  // core/connection/pace.ts); the user's next packet brings the fast pace back, and with it the full-size check,
  // at once since the last one is older than its period: it finds the new black hole.
  const before = p.mtu;
  const seen = events.length;
  await shrinkHop(SMALLER_HOP_MTU);
  await sleep(IDLE_AFTER_MS);
  await run("ip", ["netns", "exec", clientNs, "ping", "-c1", "-W1", corp]);
  const s2 = await waitForStatus(
    c,
    "the active tunnel's MTU lowered below the smaller hop",
    (x) => x.state === "connected" && x.pathMtu?.mtu != null && x.pathMtu.mtu < before && x.pathMtu.lowered > 0,
    RECHECK_WITHIN_MS,
    { pollMs: 500 },
  );
  const lowered = events.slice(seen).filter((e) => e.type === "path-mtu" && e.change === "lowered");
  assert.ok(
    lowered.length > 0,
    `a path-mtu event says the tunnel's MTU was lowered: ${JSON.stringify(events.slice(seen))}`,
  );
  console.log(
    `after the hop shrank to ${String(SMALLER_HOP_MTU)}: ${String(s2.gateway)}/${String(s2.protocol)} at MTU ${String(s2.pathMtu?.mtu)} (was ${String(before)})`,
  );
  await download("behind the 1360-byte hop");

  sub.close();
  await c.disconnect();
  await waitForStatus(c, "disconnected", (x) => x.state === "disconnected", DISCONNECT_WITHIN_MS);
  client.close();
  client = null;
  await agentStop(ID);
  assert.equal(await readMssClamp(clientNs), null, "the clamp table is gone after detourd's exit");
});

test("a-wireguard-only-client-behind-the-black-hole-gets-a-lowered-mtu-and-its-transfers-do-not-stall", async () => {
  await shrinkHop(HOP_MTU);
  const path = lab.loadState(ID).clientConfig;
  baseConfig = readFileSync(path, "utf8");
  const cfg = JSON.parse(baseConfig) as { gateways: { protocols: Record<string, unknown> }[] };
  for (const g of cfg.gateways) g.protocols = { wireguard: g.protocols.wireguard };
  writeFileSync(path, JSON.stringify(cfg, null, 2), { mode: 0o600 });
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const c = client;
  const events: ConnectionEvent[] = [];
  const sub = await c.subscribe((e) => events.push(e));
  await c.connect();
  const s = await waitForStatus(c, "connected", (x) => x.state === "connected", CONNECT_WITHIN_MS);
  assert.equal(s.protocol, "wireguard");
  // WireGuard's device starts at the route's 1500 less 60 and is lowered to what crosses the hop.
  assert.ok(
    s.pathMtu?.mtu != null && s.pathMtu.mtu <= HOP_MTU - 60,
    `WireGuard's MTU fits: ${JSON.stringify(s.pathMtu)}`,
  );
  assert.ok(
    events.some((e) => e.type === "path-mtu" && e.change === "lowered" && e.protocol === "wireguard"),
    "a path-mtu event says WireGuard's MTU was lowered",
  );
  console.log(`wireguard only: ${String(s.gateway)} at MTU ${String(s.pathMtu.mtu)}`);
  await download("wireguard only, behind the 1400-byte hop");
  await sshBothWays("wireguard only, behind the 1400-byte hop");
  sub.close();
  await c.disconnect();
  await waitForStatus(c, "disconnected", (x) => x.state === "disconnected", DISCONNECT_WITHIN_MS);
  client.close();
  client = null;
  await agentStop(ID);
});
