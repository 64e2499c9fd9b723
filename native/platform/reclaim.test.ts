/** Which recorded processes a reclaim may stop: only the very processes recorded, never a PID reused since. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { identifyProcess, processStartTime, stillOurs } from "./reclaim.linux.ts";

const rec = (pid: number, startTime: string, bootId = "boot-a") => ({ pid, startTime, bootId, exe: "wireguard-go" });

test("a-recorded-process-is-ours-only-while-pid-start-time-and-boot-all-match", () => {
  const live = new Map([
    [100, { startTime: "5000", bootId: "boot-a" }],
    [101, { startTime: "9999", bootId: "boot-a" }], // the PID went to another process since
    [102, { startTime: "5002", bootId: "boot-b" }], // recorded before a reboot
  ]);
  const ours = stillOurs(
    [rec(100, "5000"), rec(101, "5001"), rec(102, "5002"), rec(103, "5003"), rec(1, "1"), rec(process.pid, "0")],
    (pid) => live.get(pid) ?? null,
  );
  assert.deepEqual(
    ours.map((p) => p.pid),
    [100],
    "a reused PID, another boot's, a gone one, init and detourd itself are never stopped",
  );
});

test("a-live-process-has-a-start-time-that-a-successor-sees-the-same-and-a-dead-one-has-none", async () => {
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  try {
    const pid = child.pid ?? -1;
    const first = identifyProcess(pid);
    assert.ok(first !== null && /^\d+$/.test(first.startTime) && first.bootId !== "");
    assert.deepEqual(identifyProcess(pid), first, "stable while it runs");
    assert.deepEqual(stillOurs([{ pid, ...first, exe: "sleep" }], identifyProcess).length, 1);
  } finally {
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
  }
  assert.equal(processStartTime(child.pid ?? -1), null, "gone (reaped): nothing to stop");
});
