/** The IKEv2 driver's contract where no engine needs to run: bad specs, cancellation, start once, stop always. */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Secret } from "../../../main/core/secret.ts";
import { isEngineError, type Ikev2Spec } from "../engine.ts";
import { IpsecEngine } from "./ipsec-engine.ts";

const root = mkdtempSync(join(tmpdir(), "ipsec-engine-test-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

function spec(over: Partial<Ikev2Spec["params"]> = {}): Ikev2Spec {
  return {
    protocol: "ikev2",
    gateway: { name: "gw1", address: "198.18.1.2" },
    // no netns: these specs are refused (or cancelled) before anything would run
    runtime: { workDir: mkdtempSync(join(root, "ikev2-")), ifname: "dike-gw1" },
    probe: { address: "198.19.0.1" },
    params: {
      port: 500,
      natTraversalPort: 4500,
      remoteId: "gw1.lab.detour.test",
      proposals: ["aes256-sha256-x25519"],
      espProposals: ["aes128-sha256"],
      remoteTs: ["198.19.0.0/24"],
      ...over,
    },
    credentials: { localId: "client@lab.detour.test", psk: new Secret("x") },
  };
}

test("a-spec-that-cannot-work-is-bad-config-and-leaves-nothing", async () => {
  const s = spec({ natTraversalPort: 4501 });
  const e = new IpsecEngine(s);
  await assert.rejects(
    e.start(Date.now() + 5000),
    (err: unknown) =>
      isEngineError(err) && err.code === "bad-config" && !err.retryable && /NAT-T port/.test(err.message),
  );
  assert.equal(e.pid, null, "no charon was started");
  assert.ok(!existsSync(s.runtime.workDir), "the work folder is removed");
  assert.deepEqual(await e.leftovers(), []);
});

test("an-aborted-start-is-cancelled-not-a-failure", async () => {
  const ctl = new AbortController();
  ctl.abort();
  const e = new IpsecEngine(spec());
  await assert.rejects(
    e.start(Date.now() + 5000, ctl.signal),
    (err: unknown) => isEngineError(err) && err.code === "cancelled",
  );
  assert.equal(e.pid, null);
  assert.deepEqual(await e.leftovers(), []);
});

test("an-instance-starts-once-and-stop-is-idempotent", async () => {
  const e = new IpsecEngine(spec({ remoteTs: [] }));
  await assert.rejects(e.start(Date.now() + 5000));
  await assert.rejects(e.start(Date.now() + 5000), /starts once/);
  await Promise.all([e.stop(), e.stop()]);
  await e.stop();
});

test("stop-before-start-removes-the-work-folder-and-cancels-the-start", async () => {
  const s = spec();
  const e = new IpsecEngine(s);
  await e.stop();
  assert.ok(!existsSync(s.runtime.workDir));
  await assert.rejects(
    e.start(Date.now() + 5000),
    (err: unknown) => isEngineError(err) && err.code === "cancelled",
    "a stopped instance does not start",
  );
  assert.equal(e.pid, null);
  assert.deepEqual(await e.leftovers(), []);
});
