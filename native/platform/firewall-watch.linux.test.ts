/**
 * The kill switch's ruleset watcher against a stand-in nft (a shell script that starts "listening" and prints
 * nothing): no root, no namespace. The real nft monitor is the lab's (firewall-fallback.lab.test.ts).
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { splitMonitorOutput, watchFirewall, WATCH_LISTENING_AFTER_MS } from "./firewall-watch.linux.ts";

test("a-change-between-the-watchers-spawn-and-its-listening-is-caught-by-a-second-check", async () => {
  const dir = mkdtempSync(join(tmpdir(), "detour-fwwatch-"));
  try {
    const nft = join(dir, "nft");
    // a monitor that never reports anything: only the watcher's own checks count as changes
    writeFileSync(nft, "#!/bin/sh\nexec sleep 30\n");
    chmodSync(nft, 0o755);
    const checks: number[] = [];
    const deaths: string[] = [];
    const t0 = performance.now();
    const w = watchFirewall(
      { changed: () => checks.push(performance.now() - t0), watcherDied: (r) => deaths.push(r) },
      { nft },
    );
    try {
      for (let i = 0; i < 100 && checks.length < 2; i++) await sleep(50);
      assert.equal(checks.length, 2, `a check at spawn and one once it listens: ${JSON.stringify(checks)}`);
      assert.ok(
        (checks[1] ?? 0) - (checks[0] ?? 0) >= WATCH_LISTENING_AFTER_MS - 50,
        `the second check waits for the listener: ${JSON.stringify(checks)}`,
      );
      await sleep(WATCH_LISTENING_AFTER_MS + 200);
      assert.equal(checks.length, 2, "then only the monitor reports");
      assert.deepEqual(deaths, []);
    } finally {
      w.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// What `nft monitor` printed in the lab for one ping into a tunnel (shortened after the addresses).
const PACKET =
  'trace id 088e0496 inet detour_killswitch output packet: oif "djpace-l1" ip saddr 198.19.11.2 ip daddr 198.19.0.1 ip protocol icmp';
const STALE_RULE = "trace id 088e0496 inet detour_killswitch output unknown rule handle 5 (verdict continue)";
const FRESH_RULE =
  'trace id 088e0496 inet detour_killswitch output rule oifname "djpace-*" meta skgid != 64950 limit rate 1/second burst 1 packets meta nftrace set 1 comment "tunnel-activity" (verdict continue)';
const OTHER_TABLE = 'trace id 088e0496 inet detour_mss postrouting packet: oif "djpace-l1" ip saddr 198.19.11.2';

test("a-traced-packet-in-the-kill-switchs-output-chain-is-user-traffic-and-no-ruleset-change", () => {
  assert.deepEqual(splitMonitorOutput(`${PACKET}\n${STALE_RULE}\n`), { changed: false, activity: true, rest: "" });
  assert.deepEqual(splitMonitorOutput(`${PACKET}\n${FRESH_RULE}\n`), { changed: false, activity: true, rest: "" });
  // Other software's traces, elsewhere: neither.
  assert.deepEqual(splitMonitorOutput(`${OTHER_TABLE}\n`), { changed: false, activity: false, rest: "" });
  // A ruleset change is anything else.
  assert.deepEqual(splitMonitorOutput("delete table inet detour_killswitch\n"), {
    changed: true,
    activity: false,
    rest: "",
  });
});

test("a-trace-written-a-few-bytes-at-a-time-is-put-together-before-it-is-read", () => {
  let rest = "";
  let activity = false;
  for (let i = 0; i < PACKET.length; i += 7) {
    const r = splitMonitorOutput(rest + PACKET.slice(i, i + 7));
    rest = r.rest;
    activity ||= r.activity;
  }
  assert.equal(activity, false, "nothing before the line ends");
  assert.equal(splitMonitorOutput(`${rest}\n`).activity, true);
  // A line that never ends is dropped rather than kept growing.
  assert.equal(splitMonitorOutput("x".repeat(20_000)).rest, "");
});
