/**
 * The kill switch's native pieces against the real kernel, in a namespace of their own (no gateways needed):
 * the fallback table parses and blocks everything but detourd's group, the routing backstop makes protected
 * networks unroutable and goes away cleanly, and the firewall watcher sees every ruleset change and comes back
 * after it is killed.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { applyBackstop, BACKSTOP_RULE_PREF, BACKSTOP_TABLE, removeBackstop } from "./firewall-backstop.linux.ts";
import { watchFirewall } from "./firewall-watch.linux.ts";
import {
  applyKillSwitchFallback,
  countedPackets,
  FALLBACK_COMMENT,
  killSwitchCounters,
  readKillSwitch,
  removeKillSwitch,
} from "./firewall.linux.ts";
import { run, runOk } from "./run.ts";

const NS = "detour-kfb-client";
const OWN_GID = 64950;
/** A peer on the namespace's veth: sends to it need a route and leave (or are dropped) at once. */
const PEER = "198.18.77.1";

/** Sends `count` UDP datagrams to PEER from the namespace, as root or as `gid`; whether every send succeeded. */
async function send(count: number, gid?: number): Promise<boolean> {
  const script = `const s=require("dgram").createSocket("udp4");let ok=0,n=0;s.on("error",()=>{});const go=()=>{if(n++>=${String(count)}){s.close();process.exit(ok===${String(count)}?0:1);}s.send(Buffer.from("x"),9,"${PEER}",(e)=>{if(!e)ok++;setTimeout(go,5);});};go();`;
  const prefix = gid === undefined ? [] : ["setpriv", `--regid=${String(gid)}`, "--clear-groups"];
  const r = await run("ip", ["netns", "exec", NS, ...prefix, process.execPath, "-e", script]);
  return r.code === 0;
}

async function routeGet(dst: string): Promise<string> {
  const r = await run("ip", ["-n", NS, "route", "get", dst]);
  return r.code === 0 ? r.stdout : r.stderr;
}

before(async () => {
  await run("ip", ["netns", "del", NS]);
  await runOk("ip", ["netns", "add", NS]);
  await runOk("ip", ["-n", NS, "link", "set", "lo", "up"]);
  // A veth pair inside the namespace (this kernel has no dummy devices); ARP off, so each send leaves at once.
  await runOk("ip", ["-n", NS, "link", "add", "kfb0", "type", "veth", "peer", "name", "kfb1"]);
  await runOk("ip", ["-n", NS, "addr", "add", "198.18.77.2/24", "dev", "kfb0"]);
  await runOk("ip", ["-n", NS, "link", "set", "kfb0", "arp", "off", "up"]);
  await runOk("ip", ["-n", NS, "link", "set", "kfb1", "up"]);
  await runOk("ip", ["-n", NS, "route", "add", "198.19.0.0/16", "via", PEER]);
});

after(async () => {
  await run("ip", ["netns", "del", NS]);
});

test("the-fallback-table-goes-in-and-blocks-everything-but-detourds-own-group", async () => {
  assert.equal(await send(3), true, "control: without a table the underlay is open");
  await applyKillSwitchFallback({ tunnelDevices: ["dt-*", "ipsec*"], ownGroup: OWN_GID }, { netns: NS });
  const text = await readKillSwitch({ netns: NS });
  assert.ok(text?.includes(FALLBACK_COMMENT), String(text));
  assert.equal(await send(3), false, "root's traffic is dropped");
  assert.equal(await send(3, OWN_GID), true, "detourd's group still gets out");
  const counters = (await killSwitchCounters({ netns: NS })) ?? [];
  assert.ok(countedPackets(counters, "underlay-blocked") >= 1);
  assert.ok(countedPackets(counters, "own-traffic") >= 3);
  assert.equal(await readKillSwitch({ netns: NS }), text, "two reads of an unchanged table are equal");
  await removeKillSwitch({ netns: NS });
  assert.equal(await readKillSwitch({ netns: NS }), null);
});

test("the-routing-backstop-makes-protected-networks-unroutable-except-gateways-and-goes-away-cleanly", async () => {
  assert.match(await routeGet("198.19.0.5"), /via 198\.18\.77\.1/, "control: corp is routed via the underlay");
  await applyBackstop({ prefixes: ["198.19.0.0/24"], bypass: ["198.19.0.7/32", "198.19.0.8/32"] }, { netns: NS });
  assert.match(await routeGet("198.19.0.5"), /Permission denied|prohibit/);
  assert.match(await routeGet("198.19.0.7"), /via 198\.18\.77\.1/, "a gateway inside stays reachable");
  assert.match(await routeGet("198.19.1.5"), /via 198\.18\.77\.1/, "outside the protected networks nothing changes");
  // Repeating with another gateway set replaces the old exceptions.
  await applyBackstop({ prefixes: ["198.19.0.0/24"], bypass: ["198.19.0.7/32"] }, { netns: NS });
  await applyBackstop({ prefixes: ["198.19.0.0/24"], bypass: ["198.19.0.7/32"] }, { netns: NS });
  assert.match(await routeGet("198.19.0.8"), /Permission denied|prohibit/);
  const rules = await runOk("ip", ["-n", NS, "rule", "show", "pref", String(BACKSTOP_RULE_PREF)]);
  assert.equal(rules.trim().split("\n").length, 1, `one rule: ${rules}`);
  await removeBackstop({ netns: NS });
  assert.equal((await runOk("ip", ["-n", NS, "rule", "show", "pref", String(BACKSTOP_RULE_PREF)])).trim(), "");
  assert.match(await routeGet("198.19.0.5"), /via 198\.18\.77\.1/);
  const left = await run("ip", ["-n", NS, "route", "show", "table", String(BACKSTOP_TABLE)]);
  assert.equal(left.stdout.trim(), "");
  await removeBackstop({ netns: NS });
});

test("the-firewall-watcher-sees-each-ruleset-change-and-comes-back-when-killed", async () => {
  let changes = 0;
  const deaths: string[] = [];
  const w = watchFirewall(
    {
      changed: () => {
        changes++;
      },
      watcherDied: (reason) => deaths.push(reason),
    },
    { netns: NS },
  );
  try {
    const until = async (what: string, pred: () => boolean, ms = 3000): Promise<void> => {
      const t0 = performance.now();
      for (let i = 0; i < ms / 10 && performance.now() - t0 < ms; i++) {
        if (pred()) return;
        await sleep(10);
      }
      assert.fail(`timed out waiting for ${what} (changes ${String(changes)}, deaths ${JSON.stringify(deaths)})`);
    };
    await until("the start's own check", () => changes >= 1);
    await sleep(200);
    const before = changes;
    const t0 = performance.now();
    await runOk("ip", ["netns", "exec", NS, "nft", "add", "table", "inet", "kfb_other"]);
    await until("a change", () => changes > before);
    console.log(`the watcher saw a ruleset change ${String(Math.round(performance.now() - t0))} ms after nft ran`);
    // Killed: reported, restarted, and its first act is a check (changes made meanwhile were missed).
    const pids = (await runOk("ip", ["netns", "pids", NS])).trim().split("\n").filter(Boolean).map(Number);
    assert.equal(pids.length, 1, `only the watcher runs in the namespace: ${pids.join(",")}`);
    const afterKill = changes;
    process.kill(pids[0] ?? 0, "SIGKILL");
    await until("the death reported", () => deaths.length === 1);
    await until("the restart's check", () => changes > afterKill);
    const before2 = changes;
    await runOk("ip", ["netns", "exec", NS, "nft", "delete", "table", "inet", "kfb_other"]);
    await until("a change seen by the new watcher", () => changes > before2);
  } finally {
    w.stop();
  }
  await sleep(100);
  assert.equal((await runOk("ip", ["netns", "pids", NS])).trim(), "", "stop leaves no process behind");
});
