/**
 * Debian's Chromium, driven by playwright-core, inside a lab namespace: a small wrapper script enters the
 * namespace and execs /usr/bin/chromium, and Playwright talks to it over a pipe, so no browser traffic ever
 * leaves from the root namespace. The caller owns `workDir` (wrapper and profile live there) and removes it.
 */
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium, type BrowserContext } from "playwright-core";

export const CHROMIUM_PATH = "/usr/bin/chromium";
/** No GPU, no phoning home, no first-run UI: only the page under test talks to the network. */
export const CHROMIUM_FLAGS = [
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-dev-shm-usage",
];
/** Chromium's cold start on a loaded 2-core machine, plus `ip netns exec`. */
export const BROWSER_LAUNCH_TIMEOUT_MS = 30_000;

export interface NsBrowserOptions {
  /** A private folder for the wrapper and the profile. */
  workDir: string;
  viewport?: { width: number; height: number };
  /** Sent with every request of the context, e.g. an Authorization header. */
  extraHTTPHeaders?: Record<string, string>;
}

/** Launches a fresh, headless Chromium profile inside namespace `ns`. Close the context to stop the browser. */
export async function launchChromiumInNs(ns: string, opts: NsBrowserOptions): Promise<BrowserContext> {
  if (!/^detour-[a-z0-9-]+$/.test(ns))
    throw new Error(`refusing to run Chromium outside a lab namespace (got "${ns}")`);
  mkdirSync(opts.workDir, { recursive: true, mode: 0o700 });
  const wrapper = join(opts.workDir, "chromium-in-netns.sh");
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM_PATH} "$@"\n`);
  chmodSync(wrapper, 0o755);
  return chromium.launchPersistentContext(join(opts.workDir, "profile"), {
    executablePath: wrapper,
    headless: true,
    chromiumSandbox: false, // Chromium as root needs --no-sandbox; the pages are the lab's own
    args: CHROMIUM_FLAGS,
    timeout: BROWSER_LAUNCH_TIMEOUT_MS,
    viewport: opts.viewport ?? { width: 1100, height: 900 },
    ...(opts.extraHTTPHeaders === undefined ? {} : { extraHTTPHeaders: opts.extraHTTPHeaders }),
  });
}
