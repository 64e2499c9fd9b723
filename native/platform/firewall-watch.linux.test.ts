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
import { watchFirewall, WATCH_LISTENING_AFTER_MS } from "./firewall-watch.linux.ts";

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
