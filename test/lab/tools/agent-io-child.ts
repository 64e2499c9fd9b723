/**
 * Lab-test helper: runs the agent's socket work (discovery, probes, the in-tunnel
 * monitor) inside a lab namespace the way detourd runs there, because lab tests themselves run in the root
 * namespace. Started as `ip netns exec <ns> node --import tsx <this file> '<json command>'`; prints one JSON
 * result line on stdout and exits. `runInNetns` is the test side of that.
 */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { setTimeout as delay } from "node:timers/promises";
import { parseConfig, type DetourConfig } from "../../../main/core/config/schema.ts";
import type { ProbeSample } from "../../../main/core/connection/types.ts";
import { discover, gatewayPorts, probeCandidates } from "../../../main/agent/discovery.ts";
import { startMonitor } from "../../../main/agent/monitor.ts";

export type ChildCommand =
  | { op: "discover"; config: DetourConfig; timeoutMs: number; probe: boolean }
  | {
      op: "monitor";
      legId: string;
      sourceAddress: string;
      target: { address: string; port: number };
      intervalMs: number;
      timeoutMs: number;
      durationMs: number;
    };

/** Starting node with the tsx loader takes about a second; the operation's own time comes on top. */
const CHILD_START_SLACK_MS = 15_000;
const HELPER = fileURLToPath(import.meta.url);
/** `--import tsx` resolves from the working folder: the repository root. */
const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** Test side: runs one command in `netns` and returns its parsed result; bounded by the command's own time. */
export function runInNetns<T>(netns: string, cmd: ChildCommand): Promise<T> {
  const own = cmd.op === "discover" ? cmd.timeoutMs * 2 : cmd.durationMs + cmd.timeoutMs;
  return new Promise((resolve, reject) => {
    execFile(
      "ip",
      ["netns", "exec", netns, process.execPath, "--import", "tsx", HELPER, JSON.stringify(cmd)],
      { cwd: REPO_ROOT, timeout: own + CHILD_START_SLACK_MS, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err !== null) {
          reject(new Error(`netns child (${cmd.op} in ${netns}) failed: ${err.message}\n${stderr.slice(-2000)}`));
          return;
        }
        try {
          resolve(JSON.parse(stdout.trim().split("\n").pop() ?? "") as T);
        } catch {
          reject(
            new Error(
              `netns child (${cmd.op}) printed no JSON result:\n${stdout.slice(-2000)}\n${stderr.slice(-2000)}`,
            ),
          );
        }
      },
    );
  });
}

async function main(arg: string): Promise<unknown> {
  const cmd = JSON.parse(arg) as ChildCommand;
  switch (cmd.op) {
    case "discover": {
      const parsed = parseConfig(cmd.config);
      if (!parsed.ok) throw new Error(`bad config: ${JSON.stringify(parsed.issues)}`);
      const t0 = performance.now();
      const result = await discover(parsed.config, { timeoutMs: cmd.timeoutMs });
      const discoverMs = performance.now() - t0;
      const t1 = performance.now();
      const probes = cmd.probe
        ? await probeCandidates(result.candidates, { timeoutMs: cmd.timeoutMs, ports: gatewayPorts(parsed.config) })
        : [];
      return { ...result, probes, discoverMs, probeMs: performance.now() - t1 };
    }
    case "monitor": {
      const samples: ProbeSample[] = [];
      const errors: string[] = [];
      const m = startMonitor({ ...cmd, onSample: (s) => samples.push(s), onError: (e) => errors.push(e) });
      try {
        await delay(cmd.durationMs);
        // Let the last probes be answered or time out before stopping.
        await delay(cmd.timeoutMs);
      } finally {
        m.stop();
      }
      return { samples, errors };
    }
  }
}

if (process.argv[1] === HELPER) {
  const arg = process.argv[2];
  if (arg === undefined) {
    process.stderr.write("usage: agent-io-child.ts '<json command>'\n");
    process.exit(2);
  }
  main(arg).then(
    (r) => {
      process.stdout.write(`${JSON.stringify(r)}\n`);
    },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 1;
    },
  );
}
