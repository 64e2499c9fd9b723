/**
 * Long-lived child processes (tunnel engines, in-tunnel pings) are reported here from their spawn, synchronously
 * and before they can create anything, to their exit: detourd's ownership record keeps their PIDs so that a
 * successor of a crashed detourd stops exactly those (platform.ts' PlatformReclaim.watchEngineProcesses).
 */

export interface ChildInfo {
  pid: number;
  argv: readonly string[];
}

export interface ChildWatcher {
  spawned(p: ChildInfo): void;
  exited(p: ChildInfo): void;
}

const watchers = new Set<ChildWatcher>();

/** Subscribes to every long-lived child's spawn and exit; returns the unsubscribe function. */
export function watchChildren(w: ChildWatcher): () => void {
  watchers.add(w);
  return () => watchers.delete(w);
}

/** Tells the watchers; a watcher's failure is its own to report, the child runs on. */
export function noteChild(event: "spawned" | "exited", p: ChildInfo): void {
  if (p.pid <= 0) return;
  for (const w of watchers) {
    try {
      w[event](p);
    } catch {
      // see above
    }
  }
}
