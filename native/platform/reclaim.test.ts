/** Which recorded processes a reclaim may stop: only the very processes recorded, never a PID reused since. */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { identifyProcess, namedAsOurs, processStartTime, stillOurs } from "./reclaim.linux.ts";

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

test("a-process-is-detourds-by-naming-only-when-it-names-one-of-its-devices-or-its-work-folder", () => {
  const work = "/run/detour/legs";
  const yes: [string[], string[]][] = [
    [["wireguard-go", "-f", "dt-s1"], []],
    [["/usr/bin/ping", "-n", "-I", "dt-l3", "-i", "0.020", "-w", "5", "198.19.0.1"], []],
    [["openconnect", "--user=a", "--interface=dt-l12", "https://gw/"], []],
    [["/usr/sbin/charon-systemd"], ["PATH=/bin", `STRONGSWAN_CONF=${work}/L4-Ab3xYz/strongswan.conf`]],
  ];
  const no: [string[], string[]][] = [
    [["wireguard-go", "-f", "wg0"], []],
    [["wireguard-go", "-f", "dtx-s1"], []], // another prefix that merely starts alike
    [["ping", "dt-l3"], []], // not its device argument
    [["ping", "-I", "eth0", "dt-l3"], []],
    [["openconnect", "--interface=tun0", "https://dt-l1/"], []],
    [["/usr/sbin/charon-systemd"], ["STRONGSWAN_CONF=/etc/strongswan.conf"]],
    [["/usr/sbin/charon-systemd"], [`STRONGSWAN_CONF=${work}-other/x.conf`]],
    [["sshd", "-f", "dt-s1"], []],
  ];
  for (const [argv, env] of yes) assert.ok(namedAsOurs(argv, env, "dt", work), argv.join(" "));
  for (const [argv, env] of no) assert.ok(!namedAsOurs(argv, env, "dt", work), argv.join(" "));
});
