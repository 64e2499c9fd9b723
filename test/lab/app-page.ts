/**
 * The app's page in a lab test: the renderer built, the dev bridge (main/app/dev-bridge-main.ts) started in the
 * client namespace against detourd's socket, screenshots kept in test-artifacts/e2e-app/, and axe-core run on the
 * page as shown. Used by the e2e tests and by the lab tests that look at the page (Chromium: ./browser.ts).
 */
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { isAlive, stopPids } from "./exec.ts";
import { REPO_ROOT } from "./services.ts";

export const APP_ARTIFACTS = join(REPO_ROOT, "test-artifacts", "e2e-app");
/** The bridge loads TypeScript through tsx before it listens. */
const BRIDGE_READY_MS = 20_000;
/** A bridge that ignores SIGTERM this long gets SIGKILL. */
const BRIDGE_STOP_GRACE_MS = 5000;

/** Builds the renderer the bridge serves and makes the screenshots' folder; fails naming the build's error. */
export function buildRenderer(): void {
  mkdirSync(APP_ARTIFACTS, { recursive: true });
  const built = spawnSync(process.execPath, [join(REPO_ROOT, "scripts/build-app.mjs"), "renderer"], {
    cwd: REPO_ROOT,
    encoding: "utf8",
  });
  assert.equal(built.status, 0, built.stderr);
}

export interface DevBridge {
  /** The page's URL, once the bridge listens; rejects if it exits or is not up within BRIDGE_READY_MS. */
  readonly url: Promise<string>;
  /** Stops the bridge by its PID (also one that never came up). */
  stop(): Promise<void>;
}

/** Starts the dev bridge in namespace `ns` against detourd's `socket`, keeping its preferences in `prefsFile`. */
export function startBridge(ns: string, socket: string, prefsFile: string): DevBridge {
  const child = spawn(
    "ip",
    [
      "netns",
      "exec",
      ns,
      process.execPath,
      "--import",
      "tsx",
      join(REPO_ROOT, "main/app/dev-bridge-main.ts"),
      "--socket",
      socket,
      "--prefs",
      prefsFile,
    ],
    { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "inherit"] },
  );
  const url = new Promise<string>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => {
      reject(new Error(`the bridge did not start within ${String(BRIDGE_READY_MS)} ms`));
    }, BRIDGE_READY_MS);
    child.stdout.on("data", (c: Buffer) => {
      out += c.toString("utf8");
      const nl = out.indexOf("\n");
      if (nl === -1) return;
      clearTimeout(timer);
      resolve((JSON.parse(out.slice(0, nl)) as { url: string }).url);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the bridge exited with ${String(code)}`));
    });
  });
  // A caller that stops the bridge before it came up has no use for the rejection.
  url.catch(() => undefined);
  return {
    url,
    stop: async () => {
      const pid = child.pid;
      if (pid !== undefined && isAlive(pid)) await stopPids([pid], "SIGTERM", BRIDGE_STOP_GRACE_MS);
    },
  };
}

/** A full-page screenshot in APP_ARTIFACTS; returns its path. */
export async function screenshot(page: Page, file: string): Promise<string> {
  const path = join(APP_ARTIFACTS, file);
  await page.screenshot({ path, fullPage: true });
  return path;
}

const AXE = readFileSync(join(REPO_ROOT, "node_modules/axe-core/axe.min.js"), "utf8");

interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: { target: string[] }[];
}

/** Runs axe-core on the page as shown; serious and critical violations fail the test, minor ones are listed. */
export async function assertAccessible(page: Page, what: string): Promise<void> {
  // Evaluated over the DevTools protocol, which the page's CSP (script-src 'self') does not govern.
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    // Runs in the page: its globals, typed here because this module is compiled without the DOM's types.
    const g = globalThis as unknown as {
      document: unknown;
      axe: { run(ctx: unknown, opts: object): Promise<{ violations: AxeViolation[] }> };
    };
    const r = await g.axe.run(g.document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] },
    });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => ({ target: n.target })),
    }));
  });
  const bad = violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad, [], `${what}: ${JSON.stringify(bad, null, 1)}`);
  if (violations.length > 0)
    console.log(
      `${what}: minor accessibility notes: ${violations.map((v) => `${v.id} (${String(v.impact)})`).join(", ")}`,
    );
}
