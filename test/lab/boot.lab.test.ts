/**
 * A boot under lockdown, seen from the network. The client namespace "boots": no nftables table, its uplink
 * down, an application already sending to corp. Then the network comes up (the link, its address routes and a
 * leak path to corp via the router, as DHCP would hand out), and only after a delay does detourd start and
 * connect, as systemd starts it after network-online.target. The router counts every packet to corp that left
 * the client outside a tunnel in the meantime. Without the early-boot step (detour-early-block.service) that gap
 * leaks; with it (run before the network comes up, from the lockdown state detourd recorded on its previous run)
 * nothing does, and detourd takes the table over without a gap. A damaged state file fails closed: the early
 * step blocks everything, nothing leaks, and detourd writes the state again.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { LOCKDOWN_STATE_FILE } from "../../main/core/lockdown-state.ts";
import { agentStart, agentStop } from "./agent.ts";
import { daemonBundle } from "./daemon-bundle.ts";
import { nsRun, run } from "./exec.ts";
import * as lab from "./lab.ts";
import { ProbeClient } from "./probe-client.ts";
import { waitForStatus, type Status } from "./wait-status.ts";

const ID = "boot";
const WITNESS_TABLE = "detour_boot_witness";
const KILLSWITCH_TABLE = "detour_killswitch";
/** How long the network is up before detourd starts: systemd's network-online.target plus detourd's own start. */
const GAP_MS = 2000;
/** tsx loads detourd in about a second; connecting takes under one more; a loaded 2-core machine needs slack. */
const CONNECT_WITHIN_MS = 30_000;
/** The early step is one node process and one nft run. */
const EARLY_STEP_TIMEOUT_MS = 20_000;
/** The application's stream: long enough for the whole boot (link up, the gap, detourd's start and connect). */
const STREAM_MS = 14_000;

let probe: ProbeClient | undefined;
let client: ControlClient | null = null;
let clientConfigOriginal: string | null = null;
/** The client's routes as the lab built them (as `ip` arguments): what "the network comes up" puts back. */
const uplinkRoutes: string[] = [];

function topo(): ReturnType<typeof lab.topologyOf> {
  return lab.topologyOf(ID);
}

function stateDir(): string {
  return join(lab.labDirOf(ID), "detourd-state");
}

function statePath(): string {
  return join(stateDir(), LOCKDOWN_STATE_FILE);
}

/** Packets from the client's uplink to corp's networks that reached the router: leaks. */
async function leakedToRouter(): Promise<number> {
  const out = await nsRun(topo().router.ns, ["nft", "-j", "list", "table", "inet", WITNESS_TABLE]);
  const m = /"packets":\s*(\d+)/.exec(out);
  assert.ok(m !== null, `the witness counter is there: ${out.slice(0, 500)}`);
  return Number(m[1]);
}

async function clientNs(argv: string[]): Promise<string> {
  return nsRun(topo().client.ns, argv);
}

async function killSwitchPresent(): Promise<boolean> {
  const r = await run("ip", ["netns", "exec", topo().client.ns, "nft", "list", "table", "inet", KILLSWITCH_TABLE]);
  return r.code === 0;
}

/** Power off and on: the kernel forgets every table, and the uplink is not configured yet. */
async function reboot(): Promise<void> {
  if (await killSwitchPresent()) await clientNs(["nft", "delete", "table", "inet", KILLSWITCH_TABLE]);
  // The kill switch's routing backstop (rule 230, table 5001), which a stop under lockdown keeps, goes too.
  await run("ip", ["netns", "exec", topo().client.ns, "ip", "-4", "rule", "del", "pref", "230"]);
  await run("ip", ["netns", "exec", topo().client.ns, "ip", "-4", "route", "flush", "table", "5001"]);
  await clientNs(["ip", "link", "set", topo().client.ifname, "down"]);
  assert.equal(await killSwitchPresent(), false);
}

/** The network comes up: the link, and the routes DHCP would hand out (the leak path to corp among them). */
async function networkUp(): Promise<void> {
  await clientNs(["ip", "link", "set", topo().client.ifname, "up"]);
  for (const r of uplinkRoutes) await clientNs(["ip", ...r.split(" ")]);
}

/** The early-boot step as the unit runs it: its bundle with plain node. */
async function earlyStep(expect: RegExp): Promise<void> {
  const r = await run(
    "ip",
    ["netns", "exec", topo().client.ns, process.execPath, (await daemonBundle()).earlyBlock, "--state-dir", stateDir()],
    { timeoutMs: EARLY_STEP_TIMEOUT_MS },
  );
  assert.equal(r.code, 0, `the early step succeeded: ${r.stderr}`);
  assert.match(r.stderr, expect);
}

/** How the boot goes: no early step, the early step over the recorded state, or over a damaged state file. */
type Boot = "without-early-step" | "with-early-step" | "damaged-state";

type BootBlock = NonNullable<Status["lockdownState"]>["bootBlock"] | undefined;

/** One boot: the packets to corp that reached the router outside a tunnel, and what detourd says the early step did. */
async function bootOnce(how: Boot): Promise<{ leaked: number; bootBlock: BootBlock }> {
  await reboot();
  const base = await leakedToRouter();
  if (probe === undefined) throw new Error("the probe agent did not start");
  let bootBlock: BootBlock;
  const traffic = probe.stream({ host: topo().corp.address, port: 7, ratePerSec: 50, durationMs: STREAM_MS });
  try {
    await sleep(300);
    if (how === "damaged-state") writeFileSync(statePath(), '{"format":"detour-lockdown-state/1","lockd');
    if (how !== "without-early-step") {
      await earlyStep(
        how === "with-early-step"
          ? /"msg":"early block: blocking","reason":"lockdown is on"/
          : /"level":"warn","msg":"early block: blocking","reason":"the lockdown state is not JSON: .*fail closed\)"/,
      );
      assert.equal(await killSwitchPresent(), true, "the blocking table is in force before the network comes up");
    }
    await networkUp();
    await sleep(GAP_MS);
    const a = await agentStart(ID, { connect: true });
    client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
    const s = await waitForStatus(client, "connected", (x) => x.state === "connected", CONNECT_WITHIN_MS);
    bootBlock = s.lockdownState?.bootBlock;
    await sleep(500);
  } finally {
    await traffic.catch(() => undefined);
    client?.close();
    client = null;
    await agentStop(ID);
  }
  return { leaked: (await leakedToRouter()) - base, bootBlock };
}

before(async () => {
  await lab.down(ID);
  await lab.up(ID, { distance: "none" });
  const t = topo();
  // The leak path: corp via the router, which a network without Detour would use.
  await clientNs(["ip", "route", "add", "198.19.0.0/16", "via", t.client.routerAddress, "metric", "500"]);
  for (const family of ["-4", "-6"])
    uplinkRoutes.push(
      ...(await clientNs(["ip", family, "route", "show", "dev", t.client.ifname]))
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l !== "" && !l.includes("proto kernel") && !l.startsWith("fe80:"))
        .map((l) => `${family} route replace ${l} dev ${t.client.ifname}`),
    );
  assert.ok(
    uplinkRoutes.some((r) => r.startsWith("-4 route replace 198.19.0.0/16")),
    `the leak path is among the routes: ${uplinkRoutes.join("; ")}`,
  );
  // IPv6 addresses stay across the link's down and up, like a static configuration (the lab's).
  await clientNs(["sysctl", "-q", "-w", `net.ipv6.conf.${t.client.ifname}.keep_addr_on_down=1`]);
  await nsRun(t.router.ns, ["nft", "-f", "-"], {
    input: `table inet ${WITNESS_TABLE} {\n chain witness {\n  type filter hook prerouting priority -300; policy accept;\n  iifname "to-client" ip daddr 198.19.0.0/16 counter\n }\n}\n`,
  });
  probe = await ProbeClient.start({ prefix: ["ip", "netns", "exec", t.client.ns] });
  const state = lab.loadState(ID);
  clientConfigOriginal = readFileSync(state.clientConfig, "utf8");
  writeFileSync(
    state.clientConfig,
    JSON.stringify({ ...(JSON.parse(clientConfigOriginal) as object), lockdown: true }, null, 2),
    { mode: 0o600 },
  );
  // The previous run: detourd under lockdown records the state the next boot's early step reads.
  rmSync(statePath(), { force: true });
  const a = await agentStart(ID);
  client = await ControlClient.connect(a.socket, { timeoutMs: 5000 });
  const s = await waitForStatus(client, "disconnected", (x) => x.state === "disconnected", 10_000);
  assert.deepEqual(s.lockdownState?.error, null, "the lockdown state was recorded");
  client.close();
  client = null;
  await agentStop(ID);
  assert.ok(existsSync(statePath()));
});

after(async () => {
  client?.close();
  await agentStop(ID);
  await probe?.close();
  if (clientConfigOriginal !== null)
    writeFileSync(lab.loadState(ID).clientConfig, clientConfigOriginal, { mode: 0o600 });
  await lab.down(ID);
});

test(
  "a-boot-under-lockdown-leaks-in-the-gap-without-the-early-step-and-nothing-with-it-even-from-a-damaged-state",
  { timeout: 300_000 },
  async () => {
    const { leaked: without, bootBlock: noReport } = await bootOnce("without-early-step");
    const { leaked: withEarly, bootBlock: blocked } = await bootOnce("with-early-step");
    const { leaked: damaged, bootBlock: failedClosed } = await bootOnce("damaged-state");
    console.log(
      `boot under lockdown, ${GAP_MS} ms between the network coming up and detourd starting: packets to corp that reached the router outside a tunnel: ${without} without the early step, ${withEarly} with it, ${damaged} with it over a damaged state file`,
    );
    assert.ok(without > 0, `control: without the early step the gap leaks (${without} packets)`);
    assert.equal(withEarly, 0, "with the early step nothing leaks, from boot to connected");
    assert.equal(damaged, 0, "a damaged state file fails closed");
    const healed = JSON.parse(readFileSync(statePath(), "utf8")) as { lockdown?: unknown };
    assert.equal(healed.lockdown, true, "detourd wrote the state again at start");
    // What `detour status` says the early step did this boot.
    assert.equal(noReport, null, "no early step ran this boot");
    assert.deepEqual([blocked?.action, blocked?.failClosed], ["block", false]);
    assert.deepEqual([failedClosed?.action, failedClosed?.failClosed], ["block", true]);
    assert.match(failedClosed?.reason ?? "", /not JSON/);
  },
);
