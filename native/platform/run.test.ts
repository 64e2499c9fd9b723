/** Running OS commands: a command that never reads its input must not take the caller down with a broken pipe. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { run } from "./run.ts";

/** Far more than a pipe buffers (64 KiB on Linux): the write is still under way when the command has exited. */
const INPUT_BYTES = 8 * 1024 * 1024;

test("a-command-that-exits-without-reading-its-input-is-an-exit-status-not-an-uncaught-epipe", async () => {
  const r = await run("sh", ["-c", "exit 3"], { input: "x".repeat(INPUT_BYTES) });
  assert.equal(r.code, 3, "the command's own status is what the caller sees");
  assert.match(r.stderr, /EPIPE|could not be written/);
});

test("a-command-that-reads-its-input-gets-all-of-it", async () => {
  const r = await run("wc", ["-c"], { input: "x".repeat(INPUT_BYTES) });
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), String(INPUT_BYTES));
  assert.equal(r.stderr, "");
});
