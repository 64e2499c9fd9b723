/** Unit tests for the delayq helpers: argument validation and building the binary (needs gcc, not root). */
import { execFile } from "node:child_process";
import { access, constants, stat, utimes } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { promisify } from "node:util";
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { delayqArgv, ensureDelayqBinary } from "./delayq.ts";

const execFileAsync = promisify(execFile);

/** Building takes about half a second; the brief for this suite is "under 10 s". */
const BUILD_TEST_TIMEOUT_MS = 10_000;
/** delayq with bad arguments exits before touching netfilter, so this only bounds a broken binary. */
const RUN_TIMEOUT_MS = 2_000;

void describe("delayqArgv", () => {
  void it("builds queue, delay and jitter arguments for the binary", () => {
    assert.deepEqual(delayqArgv("/x/delayq", 7, 50, 20), ["/x/delayq", "7", "50", "20"]);
    assert.deepEqual(delayqArgv("/x/delayq", 0, 0, 0), ["/x/delayq", "0", "0", "0"]);
    assert.deepEqual(delayqArgv("/x/delayq", 65535, 10000, 10000), ["/x/delayq", "65535", "10000", "10000"]);
  });

  void it("rejects a queue number outside 0..65535 or not an integer", () => {
    for (const q of [-1, 65536, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => delayqArgv("/x/delayq", q, 50, 0), /queue number must be an integer from 0 to 65535/);
    }
  });

  void it("rejects a delay or jitter outside 0..10000 ms or not an integer", () => {
    for (const ms of [-1, 10001, 0.5, Number.NaN]) {
      assert.throws(() => delayqArgv("/x/delayq", 7, ms, 0), /delay \(ms\) must be an integer from 0 to 10000/);
      assert.throws(() => delayqArgv("/x/delayq", 7, 50, ms), /jitter \(ms\) must be an integer from 0 to 10000/);
    }
  });

  void it("rejects an empty binary path", () => {
    assert.throws(() => delayqArgv("", 7, 50, 0), /binary path is empty/);
  });
});

void describe("ensureDelayqBinary", { timeout: BUILD_TEST_TIMEOUT_MS }, () => {
  void it("builds an executable under .build/delayq and reuses it while it is current", async () => {
    const binary = await ensureDelayqBinary();
    assert.ok(isAbsolute(binary), `expected an absolute path, got ${binary}`);
    assert.match(binary, /\/\.build\/delayq\/delayq$/);
    await access(binary, constants.X_OK);
    const first = await stat(binary);
    assert.equal(await ensureDelayqBinary(), binary);
    assert.equal((await stat(binary)).mtimeMs, first.mtimeMs, "a current binary must not be rebuilt");
  });

  void it("rebuilds a binary that is older than its source", async () => {
    const binary = await ensureDelayqBinary();
    const epoch = new Date(0);
    await utimes(binary, epoch, epoch);
    await ensureDelayqBinary();
    assert.ok((await stat(binary)).mtimeMs > 0, "the stale binary was not rebuilt");
  });

  void it("produces a delayq that rejects bad arguments with a usage message", async () => {
    const binary = await ensureDelayqBinary();
    for (const args of [[], ["7"], ["7", "abc"], ["70000", "50"], ["7", "50", "-1"], ["7", "50", "20", "x"]]) {
      await assert.rejects(execFileAsync(binary, args, { timeout: RUN_TIMEOUT_MS }), (err: unknown) => {
        const e = err as { code?: unknown; stderr?: unknown };
        assert.equal(e.code, 2, `delayq ${args.join(" ")} should exit 2`);
        assert.match(String(e.stderr), /usage: delayq|must be an integer/);
        return true;
      });
    }
  });
});
