/**
 * An engine process that dies before reading its input (openconnect's password on stdin) must not take detourd down
 * with a broken pipe; its exit and output say what happened. Its spawn and exit are reported to the ownership watch.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { watchChildren, type ChildInfo } from "../platform/child-watch.ts";
import { EngineProcess } from "./engine-process.ts";

/** Far more than a pipe buffers (64 KiB on Linux): the write is still under way when the engine has exited. */
const INPUT_BYTES = 8 * 1024 * 1024;
const ENV = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" };

test("an-engine-that-exits-without-reading-its-input-is-an-exit-not-an-uncaught-epipe", async () => {
  const p = EngineProcess.spawn({ argv: ["sh", "-c", "exit 3"], env: ENV, stdin: "x".repeat(INPUT_BYTES) });
  const exit = await p.exited;
  assert.equal(exit.code, 3, "the engine's own status is what the driver sees");
  // Let a late 'error' on the pipe surface: without a listener it would be thrown here, failing the test.
  await new Promise((r) => setTimeout(r, 50));
  assert.match(p.tail(), /EPIPE|could not be written|^$/);
});

test("an-engine-process-is-reported-from-its-spawn-to-its-exit", async () => {
  const seen: string[] = [];
  const unwatch = watchChildren({
    spawned: (c: ChildInfo) => seen.push(`spawned ${String(c.pid)} ${c.argv.join(" ")}`),
    exited: (c: ChildInfo) => seen.push(`exited ${String(c.pid)}`),
  });
  try {
    const p = EngineProcess.spawn({ argv: ["sh", "-c", "exit 0"], env: ENV });
    assert.deepEqual(seen, [`spawned ${String(p.pid)} sh -c exit 0`], "reported synchronously at spawn");
    await p.exited;
    assert.deepEqual(seen.slice(1), [`exited ${String(p.pid)}`]);
  } finally {
    unwatch();
  }
});

test("a-program-that-cannot-be-started-is-an-exit-not-a-crash", async () => {
  const p = EngineProcess.spawn({ argv: ["/nonexistent/engine"], env: ENV, stdin: "secret" });
  const exit = await p.exited;
  assert.equal(exit.code, null);
  assert.match(p.tail(), /spawn failed|ENOENT/);
});
