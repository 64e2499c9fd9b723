/**
 * A full state disk at connect, then kill -9, with the real daemon and engines: detourd's state folder is a tiny
 * tmpfs filled to the brim, so the ownership record there cannot take the connect intent. The copy in the runtime
 * folder (the work folder) does; connect says crash protection is in force and names the file that failed, and a
 * successor started on the same full disk resumes the connection with the kill switch held from the crash until
 * the new tunnel is up.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ControlClient } from "../../main/client/control-client.ts";
import { agentLogs, agentPaths, agentRunning, agentStart, agentStop } from "./agent.ts";
import { waitFor } from "./exec.ts";
import * as lab from "./lab.ts";
import { waitForStatus } from "./wait-status.ts";
import { watchKillSwitchTable } from "./kill-switch-watch.ts";

const ID = "qdisk";
/** A healthy lab connects within a second or two; 20 s bounds a loaded, shared machine. */
const CONNECT_WITHIN_MS = 20_000;
/** detourd writes a few small state files at start; this leaves room for them before the test fills the rest. */
const TMPFS_SIZE = "256k";
/** More than the tmpfs holds: the filler stops at ENOSPC with every block taken. */
const FILLER_BYTES = 1024 * 1024;

let client: ControlClient | null = null;
let mounted: string | null = null;

function stateMount(): string {
  return join(lab.labDirOf(ID), "qstate-full");
}

function ns(): string {
  return lab.topologyOf(ID).client.ns;
}

async function start(): Promise<ControlClient> {
  // A killed detourd leaves its socket file: the lab's readiness check would pass on it at once.
  rmSync(agentPaths(ID).socket, { force: true });
  const a = await agentStart(ID, { extraArgs: ["--state-dir", stateMount()], keepWorkDir: true });
  client = await waitFor(
    "detourd's control socket to answer",
    () => ControlClient.connect(a.socket, { timeoutMs: 5000 }).catch(() => false as const),
    { timeoutMs: 20_000, intervalMs: 100 },
  );
  return client;
}

function unmount(): void {
  if (mounted === null) return;
  spawnSync("umount", [mounted], { timeout: 10_000 });
  rmSync(mounted, { recursive: true, force: true });
  mounted = null;
}

before(async () => {
  await lab.down(ID);
  await lab.up(ID);
  // The work folder starts empty, as after a boot; restarts below keep it, as a service manager does.
  rmSync(agentPaths(ID).workDir, { recursive: true, force: true });
  const mnt = stateMount();
  mkdirSync(mnt, { recursive: true, mode: 0o700 });
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", `size=${TMPFS_SIZE},mode=0700`, "tmpfs", mnt], {
    encoding: "utf8",
    timeout: 10_000,
  });
  assert.equal(r.status, 0, `mount a tmpfs for the state folder: ${r.stderr}`);
  mounted = mnt;
});

after(async () => {
  client?.close();
  client = null;
  try {
    await agentStop(ID);
  } finally {
    unmount();
    await lab.down(ID);
  }
});

test(
  "a-full-state-disk-at-connect-then-kill-9-the-successor-resumes-with-the-kill-switch-held",
  { timeout: 120_000 },
  async () => {
    const c = await start();
    await waitForStatus(c, "detourd to settle disconnected", (s) => s.state === "disconnected", CONNECT_WITHIN_MS);
    // Fill the state folder's file system to the last block.
    try {
      writeFileSync(join(stateMount(), "filler"), Buffer.alloc(FILLER_BYTES));
    } catch {
      // ENOSPC: full, as wanted
    }
    const answer = await c.connect();
    assert.equal(answer?.crashProtection?.inForce, true, `the runtime copy holds the intent\n${agentLogs(ID, 30)}`);
    assert.deepEqual(
      answer.crashProtection.failedCopies.map((f) => [f.path, f.code]),
      [[join(stateMount(), "owned.json"), "ENOSPC"]],
      "connect names the copy the full disk refused",
    );
    await waitForStatus(c, "the tunnel to come up", (s) => s.state === "connected", CONNECT_WITHIN_MS);

    // kill -9: no shutdown path runs.
    client?.close();
    client = null;
    const running = agentRunning(ID);
    assert.ok(running !== null);
    const watch = watchKillSwitchTable(ns());
    process.kill(running.pid, "SIGKILL");
    for (let i = 0; i < 100 && agentRunning(ID) !== null; i++) await sleep(20);

    // The successor starts on the same full disk.
    const successor = await start();
    const s = await waitForStatus(
      successor,
      "the successor to resume the connection",
      (x) => x.state === "connected",
      CONNECT_WITHIN_MS,
    );
    const gaps = await watch.stop();
    assert.equal(s.daemon.recovery?.resumedConnection, true, "the successor resumed the connection the user wanted");
    assert.deepEqual(
      gaps.slice(0, 5),
      [],
      `the kill switch held from the crash until the resumed tunnel was up (missing at ms ${gaps.join(", ")})\n${agentLogs(ID, 30)}`,
    );
    successor.close();
    client = null;
    await agentStop(ID);
  },
);
