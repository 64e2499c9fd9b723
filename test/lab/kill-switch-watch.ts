/** Lab tests that kill detourd: whether its kill switch table stayed in the client namespace the whole time. */
import { execFile } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";

/** Watches every few milliseconds whether the kill switch table is in namespace `ns`; the moments it was not. */
export function watchKillSwitchTable(ns: string): { stop(): Promise<number[]> } {
  const missing: number[] = [];
  const t0 = Date.now();
  const watching = { on: true };
  const loop = (async () => {
    for (let i = 0; watching.on && i < 10_000; i++) {
      const out = await promisify(execFile)("ip", ["netns", "exec", ns, "nft", "list", "tables"], {
        timeout: 5_000,
      }).catch(() => ({ stdout: "" }));
      if (!out.stdout.includes("detour_killswitch")) missing.push(Date.now() - t0);
      await sleep(5);
    }
  })();
  return {
    stop: async () => {
      watching.on = false;
      await loop;
      return missing;
    },
  };
}
