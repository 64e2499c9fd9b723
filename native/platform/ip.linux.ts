/** iproute2 helpers shared by the device, route and rule modules: the same `-n` handling and JSON reading. */
import { run } from "./run.ts";

/** `ip` arguments for a namespace (`-n ns`), or as given when netns is undefined. */
export function ipArgs(netns: string | undefined, args: readonly string[]): string[] {
  return netns === undefined ? [...args] : ["-n", netns, ...args];
}

/**
 * `ip -j <args>` as an array; a failed command or unparsable output is an empty list (a routing table that
 * never held a route does not exist yet, and iproute2 then fails with a partial "[").
 */
export async function ipJson(netns: string | undefined, args: readonly string[]): Promise<unknown[]> {
  const r = await run("ip", ipArgs(netns, ["-j", ...args]));
  if (r.code !== 0 || r.stdout.trim() === "") return [];
  try {
    const parsed: unknown = JSON.parse(r.stdout);
    return Array.isArray(parsed) ? (parsed as unknown[]) : [];
  } catch {
    return [];
  }
}
