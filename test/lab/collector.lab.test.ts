/**
 * The collector as the lab runs it: started by `lab up` in its namespace, fed OTLP from the client namespace
 * over the lab network by the SDK's serializers, and read (dashboard, /metrics) from there too. No traffic of
 * this test touches the root namespace.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { statSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { collectorPaths, collectorUrl } from "./collector.ts";
import * as lab from "./lab.ts";
import { REPO_ROOT } from "./services.ts";

const ID = "col";
/** Each sender run starts Node with tsx (about a second) plus one request; generous for a loaded 2-core box. */
const SENDER_TIMEOUT_MS = 30_000;

let state: lab.LabState;

before(async () => {
  await lab.down(ID);
  state = await lab.up(ID);
});
after(async () => {
  await lab.down(ID);
  assert.deepEqual(await lab.leftovers(ID), [], "nothing of the lab is left");
});

interface Answer {
  status: number;
  contentType: string | null;
  message?: string;
  body?: string;
}

/** Runs the OTLP sender in the lab's client namespace and returns what the collector answered. */
function fromClient(...args: string[]): Answer {
  const topo = lab.topologyOf(ID);
  const argv = [
    "netns",
    "exec",
    topo.client.ns,
    process.execPath,
    "--import",
    "tsx",
    join(REPO_ROOT, "test", "lab", "tools", "otlp-send.ts"),
    ...args,
    "--tokens",
    collectorPaths(state.labDir).tokensFile,
  ];
  const r = spawnSync("ip", argv, { cwd: REPO_ROOT, encoding: "utf8", timeout: SENDER_TIMEOUT_MS });
  assert.equal(r.status, 0, `sender failed: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "{}") as Answer;
}

test("lab-up-starts-the-collector-in-its-namespace-with-private-tokens", async () => {
  const st = await lab.status(ID);
  const svc = st.services.find((s) => s.name === "collector");
  assert.ok(svc?.alive === true, `the collector runs: ${JSON.stringify(st.services)}`);
  assert.equal(statSync(collectorPaths(state.labDir).tokensFile).mode & 0o777, 0o600, "the tokens file is private");
});

test("agents-post-otlp-over-the-lab-network-and-the-fleet-shows-up", () => {
  const url = collectorUrl(lab.topologyOf(ID));
  const m1 = fromClient(
    "post",
    "--url",
    url,
    "--signal",
    "metrics",
    "--format",
    "protobuf",
    "--device",
    "lab-alice",
    "--batch",
    "m-1",
    "--gateway",
    "gw1",
    "--protocol",
    "wireguard",
    "--rtt",
    "20,30",
    "--loss",
    "5",
  );
  assert.equal(m1.status, 200, m1.message);
  const m2 = fromClient(
    "post",
    "--url",
    url,
    "--signal",
    "metrics",
    "--format",
    "json",
    "--device",
    "lab-bob",
    "--batch",
    "m-1",
    "--gateway",
    "gw2",
    "--protocol",
    "ikev2",
    "--rtt",
    "8",
    "--loss",
    "0",
  );
  assert.equal(m2.status, 200, m2.message);
  const l1 = fromClient(
    "post",
    "--url",
    url,
    "--signal",
    "logs",
    "--format",
    "protobuf",
    "--device",
    "lab-alice",
    "--batch",
    "l-1",
    "--failover",
    "gw1:wireguard:gw2:ikev2:dead:640:820",
    "--state",
    "connected:gw2:ikev2",
  );
  assert.equal(l1.status, 200, l1.message);

  const replay = fromClient(
    "post",
    "--url",
    url,
    "--signal",
    "logs",
    "--format",
    "protobuf",
    "--device",
    "lab-alice",
    "--batch",
    "l-1",
    "--failover",
    "gw1:wireguard:gw2:ikev2:dead:640:820",
    "--state",
    "connected:gw2:ikev2",
  );
  assert.equal(replay.status, 409, "a re-delivered batch is refused");
  assert.match(replay.message ?? "", /^duplicate-batch: batch l-1 of device lab-alice/);
  const anonymous = fromClient("post", "--url", url, "--token-role", "none", "--device", "lab-eve", "--batch", "1");
  assert.equal(anonymous.status, 401);

  const page = fromClient("get", "--url", `${url}/`);
  assert.equal(page.status, 200);
  assert.match(page.body ?? "", /lab-alice/);
  assert.match(page.body ?? "", /lab-bob/);
  assert.doesNotMatch(page.body ?? "", /lab-eve/, "the unauthenticated device was not stored");
  assert.match(page.body ?? "", /<tr class="failover">.*<td>gw1\/wireguard<\/td>/s, "the failover is on the timeline");
  const agent = fromClient("get", "--url", `${url}/agents/lab-alice`);
  assert.equal(agent.status, 200);
  assert.match(agent.body ?? "", /<svg class="chart"/);

  const metrics = fromClient("get", "--url", `${url}/metrics`);
  assert.equal(metrics.status, 200);
  assert.match(metrics.body ?? "", /^detour_agents\{state="connected"\} 1$/m);
  assert.match(metrics.body ?? "", /^detour_gateway_agents_connected\{gateway="gw2"\} 1$/m);
  assert.match(metrics.body ?? "", /^detour_failovers_last_hour\{from="gw1",to="gw2",reason="dead"\} 1$/m);
  assert.equal(
    fromClient("get", "--url", `${url}/metrics`, "--token-role", "ingest").status,
    403,
    "an agent's token cannot read the fleet",
  );
});
