/**
 * Checkpoints the SQLite store's write-ahead log from a thread of its own, with its own connection, so copying the
 * WAL back into the database never runs on the event loop inside a request's commit (SQLite's automatic checkpoint
 * does exactly that, every 1000 pages). PASSIVE checkpoints never wait for the writer or readers: whatever they
 * cannot copy now is copied by the next one. The store keeps SQLite's automatic checkpoint only as a distant
 * backstop (store.ts), for when this thread falls behind or is gone.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

/**
 * How often the thread checkpoints. A second of ingest at a few thousand reports adds a few MiB of WAL, which a
 * passive checkpoint copies in milliseconds; readers (the dashboard) then find a short WAL to search.
 */
export const CHECKPOINT_INTERVAL_MS = 1000;
/** The thread's connection waits this long for a lock before a checkpoint gives up until the next interval. */
const BUSY_TIMEOUT_MS = 100;
/** A last checkpoint and closing take milliseconds; past this the thread is terminated. */
const STOP_TIMEOUT_MS = 2000;

export interface WalCheckpointer {
  stop(): Promise<void>;
}

/** The thread's code: plain CommonJS, so it runs without the TypeScript loader the collector itself may use. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.module);
const db = new Database(workerData.path);
db.pragma("busy_timeout = ${BUSY_TIMEOUT_MS}");
const timer = setInterval(() => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message || e) });
  }
}, workerData.intervalMs);
parentPort.on("message", (m) => {
  if (m === "stop") {
    clearInterval(timer);
    try { db.pragma("wal_checkpoint(PASSIVE)"); } catch {}
    db.close();
    parentPort.close();
  }
});
`;

/** Starts the checkpointer thread for the database file at `path`; errors go to `onError` (the log), never throw. */
export function startWalCheckpointer(
  path: string,
  onError: (e: Error) => void = () => undefined,
  intervalMs = CHECKPOINT_INTERVAL_MS,
): WalCheckpointer {
  const module = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path, module, intervalMs } });
  // The thread must not keep a collector that is shutting down alive.
  worker.unref();
  worker.on("message", (m: { error?: string }) => {
    if (m.error !== undefined) onError(new Error(`WAL checkpoint failed: ${m.error}`));
  });
  worker.on("error", (e) => {
    onError(e);
  });
  const exited = new Promise<void>((resolve) =>
    worker.once("exit", () => {
      resolve();
    }),
  );
  return {
    stop: async () => {
      // Held while it stops, so the last checkpoint and close finish before the process may exit.
      worker.ref();
      worker.postMessage("stop");
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => {
          resolve("timeout");
        }, STOP_TIMEOUT_MS);
      });
      const outcome = await Promise.race([exited, timeout]);
      clearTimeout(timer);
      if (outcome === "timeout") await worker.terminate();
    },
  };
}
