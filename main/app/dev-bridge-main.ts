/**
 * `npm run bridge -- --socket <path>`: runs the dev/test bridge against a detourd and prints one JSON line,
 * {"url": ..., "token": ..., "pid": ...}, once it listens. Stops on SIGTERM/SIGINT.
 */
import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DEFAULT_SOCKET_PATH } from "../core/protocol/messages.ts";
import { writeFileAtomicSync } from "../shared/atomic-write.ts";
import { AppHost } from "./app-host.ts";
import { startBridge } from "./dev-bridge.ts";
import { daemonDiagnostics } from "./diagnostics.ts";
import { DaemonPolicyLocks } from "./policy-locks.ts";
import { memoryStore, parseLocks, Settings, type PreferenceStore } from "./settings-model.ts";

/** Preferences in a JSON file, replaced atomically (the Electron app uses electron-store instead). */
function fileStore(path: string): PreferenceStore {
  const read = (): Partial<Record<string, unknown>> => {
    try {
      return existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>) : {};
    } catch {
      return {};
    }
  };
  return {
    read,
    write: (key, value) => {
      writeFileAtomicSync(path, JSON.stringify({ ...read(), [key]: value }, null, 2) + "\n");
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      socket: { type: "string", default: process.env.DETOUR_SOCKET ?? DEFAULT_SOCKET_PATH },
      port: { type: "string", default: "0" },
      static: { type: "string", default: new URL("../../.build/renderer-web", import.meta.url).pathname },
      prefs: { type: "string" },
      // Locks from a file of [{key, value, managedBy}] (trying the page without a signed policy, and keys
      // detourd's policy does not cover), on top of those detourd's managed policy reports.
      "policy-locks": { type: "string" },
    },
  });
  const lockFile = values["policy-locks"];
  const parsed =
    lockFile === undefined ? { locks: [], problems: [] } : parseLocks(JSON.parse(readFileSync(lockFile, "utf8")));
  for (const p of parsed.problems) process.stderr.write(`dev-bridge: ignoring a policy lock: ${p}\n`);
  const policyLocks = new DaemonPolicyLocks();
  const fromFile = parsed.locks;
  const settings = new Settings(values.prefs === undefined ? memoryStore() : fileStore(values.prefs), {
    locks: () => [...fromFile, ...policyLocks.locks().filter((l) => !fromFile.some((f) => f.key === l.key))],
    managed: () => policyLocks.managed(),
  });
  const host = new AppHost({
    socket: values.socket,
    settings,
    diagnostics: daemonDiagnostics,
    clientName: "detour-dev-bridge/0.1",
    policyLocks,
  });
  const bridge = await startBridge({ host, staticDir: values.static, port: Number(values.port) });
  host.start();
  process.stdout.write(JSON.stringify({ url: bridge.url, token: bridge.token, pid: process.pid }) + "\n");
  const stop = (): void => {
    host.stop();
    void bridge.close().then(() => process.exit(0));
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

void main().catch((e: unknown) => {
  process.stderr.write(`dev-bridge: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
