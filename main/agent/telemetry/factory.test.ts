/** A full disk under the state folder costs telemetry, never the start of the tunnel daemon. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { testConfig } from "../../../test/fakes/config.ts";
import { atomicWriteFailures } from "../../shared/atomic-write.ts";
import type { Logger } from "../log.ts";
import { TelemetryHandle } from "./factory.ts";

test("a-full-state-folder-starts-detourd-without-telemetry-and-says-so", (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("needs root to mount a small tmpfs");
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), "detour-telemetry-full-"));
  const state = join(dir, "state");
  const token = join(dir, "token");
  writeFileSync(token, "t0ken-for-the-collector\n", { mode: 0o600 });
  spawnSync("mkdir", ["-p", state]);
  const mount = spawnSync("mount", ["-t", "tmpfs", "-o", "size=16k,mode=0700", "tmpfs", state], { encoding: "utf8" });
  if (mount.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    t.skip(`cannot mount a tmpfs: ${mount.stderr.trim()}`);
    return;
  }
  try {
    try {
      writeFileSync(join(state, "filler"), Buffer.alloc(64 * 1024));
    } catch {
      // ENOSPC: full, as wanted
    }
    const config = testConfig({
      gateways: [1],
      telemetry: { endpoint: "https://collector.example.com", token: { file: token } },
    });
    const errors: string[] = [];
    const log: Logger = {
      debug: () => undefined,
      info: () => undefined,
      warn: () => undefined,
      error: (msg) => {
        errors.push(msg);
      },
    };
    const before = atomicWriteFailures().stateWriteFailures;
    const source = {
      state: () => "disconnected" as const,
      active: () => null,
      health: () => null,
      engineStats: () => Promise.resolve(null),
    };
    const h = new TelemetryHandle(config, { stateDir: state, version: "0.0.0-test", source, log });
    assert.equal(h.current, null, "no telemetry");
    assert.ok(errors.includes("telemetry is off: its state cannot be written"), errors.join(" | "));
    assert.ok(atomicWriteFailures().stateWriteFailures > before, "the failed write is counted for status");
  } finally {
    spawnSync("umount", [state]);
    rmSync(dir, { recursive: true, force: true });
  }
});
