/** The lab end to end through its CLI, as a developer runs it: up, selftest, down, and down after kill -9. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { after, before, test } from "node:test";
import { processTree } from "./exec.ts";
import * as lab from "./lab.ts";
import { namespacePids } from "./netns.ts";
import { REPO_ROOT } from "./services.ts";

const ID = "ci";

function cli(...args: string[]): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", "test/lab/cli.ts", ...args, "--id", ID], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    timeout: 240_000,
  });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

before(async () => {
  await lab.down(ID);
});
after(async () => {
  await lab.down(ID);
});

test("lab-up-selftest-down-leaves-nothing", { timeout: 300_000 }, async () => {
  const upRun = cli("up");
  assert.equal(upRun.code, 0, upRun.out);
  const st = await lab.status(ID);
  assert.ok(st.up, "status says the lab is up");
  assert.ok(
    st.engines.length === 9 && st.engines.every((e) => e.alive),
    `all nine gateway engines run: ${JSON.stringify(st.engines)}`,
  );
  assert.ok(st.clientConfig !== undefined && existsSync(st.clientConfig), "the client config was written");

  const self = cli("selftest");
  console.log(self.out);
  assert.equal(self.code, 0, `selftest failed:\n${self.out}`);
  assert.match(self.out, /\| gw1 \|/, "selftest prints its table");
  assert.deepEqual((await lab.status(ID)).impairments, [], "selftest lifts every impairment it adds");
  const clientPids = await namespacePids(lab.topologyOf(ID).client.ns);
  assert.deepEqual(clientPids, [], "selftest leaves no client-side engine running");

  const downRun = cli("down");
  assert.equal(downRun.code, 0, downRun.out);
  assert.deepEqual(await lab.leftovers(ID), [], "nothing of the lab is left");
});

test("lab-down-after-kill-9-of-everything-leaves-nothing", { timeout: 120_000 }, async () => {
  const upRun = cli("up");
  assert.equal(upRun.code, 0, upRun.out);
  const topo = lab.topologyOf(ID);
  const pids = (await Promise.all(Object.values(topo.ns).map(namespacePids))).flat().flatMap(processTree);
  assert.ok(pids.length >= 11, `engines and services run (${pids.length} processes)`);
  for (const p of new Set(pids)) {
    try {
      process.kill(p, "SIGKILL");
    } catch {
      // already gone with its parent
    }
  }
  const stale = readdirSync("/run/wireguard").filter((f) => f.startsWith(`wg-${ID}-`));
  assert.ok(stale.length > 0, "SIGKILLed wireguard-go leaves stale sockets (the case down must handle)");
  const downRun = cli("down");
  assert.equal(downRun.code, 0, downRun.out);
  assert.deepEqual(await lab.leftovers(ID), [], "nothing of the lab is left");
});
