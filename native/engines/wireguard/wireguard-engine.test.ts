/** What the WireGuard driver refuses before it spawns anything: bad specs and starts cancelled up front. */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { after, describe, test } from "node:test";
import { Secret } from "../../../main/core/secret.ts";
import { EngineError, type WireGuardSpec } from "../engine.ts";
import { WireGuardEngine } from "./wireguard-engine.ts";

const PRIVATE = randomBytes(32).toString("base64");
const root = mkdtempSync(join(tmpdir(), "wg-engine-"));

after(() => {
  rmSync(root, { recursive: true, force: true });
});

function spec(
  over: { params?: Partial<WireGuardSpec["params"]>; privateKey?: string; ifname?: string } = {},
): WireGuardSpec {
  return {
    protocol: "wireguard",
    gateway: { name: "gw1", address: "198.18.1.2" },
    // A namespace that does not exist: should anything be spawned by mistake, it fails instead of touching the host.
    runtime: { netns: "detour-unit-absent", workDir: mkdtempSync(join(root, "w-")), ifname: over.ifname ?? "dwg-unit" },
    probe: { address: "198.19.0.1" },
    params: {
      port: 51820,
      publicKey: randomBytes(32).toString("base64"),
      tunnelAddress: "198.19.11.2/32",
      persistentKeepaliveSec: 25,
      allowedIps: ["198.19.0.0/24"],
      ...over.params,
    },
    credentials: { privateKey: new Secret(over.privateKey ?? PRIVATE) },
  };
}

async function refused(s: WireGuardSpec, code: string, signal?: AbortSignal): Promise<EngineError> {
  const engine = new WireGuardEngine(s);
  const err = await engine.start(Date.now() + 5000, signal).then(
    () => assert.fail("start resolved"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof EngineError, `EngineError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  assert.equal(engine.pid, null, "nothing was spawned");
  assert.ok(!existsSync(s.runtime.workDir), "the work folder is removed");
  await engine.stop();
  return err;
}

describe("wireguard engine before spawning", () => {
  const cases: [string, WireGuardSpec][] = [
    ["private-key-not-base64", spec({ privateKey: "definitely not a key" })],
    ["private-key-wrong-length", spec({ privateKey: randomBytes(31).toString("base64") })],
    ["gateway-key-invalid", spec({ params: { publicKey: "AAAA" } })],
    ["tunnel-address-not-a-prefix", spec({ params: { tunnelAddress: "198.19.11.2" } })],
    ["allowed-ips-empty", spec({ params: { allowedIps: [] } })],
    ["port-out-of-range", spec({ params: { port: 0 } })],
    ["ifname-too-long", spec({ ifname: "dwg-name-too-long-x" })],
    ["ifname-with-a-slash", spec({ ifname: "../evil" })],
  ];
  for (const [name, s] of cases) {
    test(`bad-config-${name}`, async () => {
      const err = await refused(s, "bad-config");
      assert.equal(err.retryable, false);
      const text = `${err.message} ${inspect(err)} ${JSON.stringify(err)}`;
      assert.ok(
        !text.includes(PRIVATE) && !text.includes(Buffer.from(PRIVATE, "base64").toString("hex")),
        "the private key is not in the error",
      );
    });
  }

  test("already-aborted-start-is-cancelled", async () => {
    const ac = new AbortController();
    ac.abort();
    const err = await refused(spec(), "cancelled", ac.signal);
    assert.equal(err.retryable, false);
  });

  test("stop-before-start-then-start-is-cancelled", async () => {
    const s = spec();
    const engine = new WireGuardEngine(s);
    await engine.stop();
    await engine.stop();
    await assert.rejects(
      engine.start(Date.now() + 5000),
      (e: unknown) => e instanceof EngineError && e.code === "cancelled",
    );
    assert.equal(engine.pid, null);
    assert.ok(!existsSync(s.runtime.workDir));
  });

  test("start-twice-is-a-bug", async () => {
    const ac = new AbortController();
    ac.abort();
    const engine = new WireGuardEngine(spec());
    await assert.rejects(engine.start(Date.now() + 5000, ac.signal), EngineError);
    await assert.rejects(engine.start(Date.now() + 5000), /called twice/);
  });
});
