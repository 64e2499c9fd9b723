/**
 * The daemon's log as a diagnostic bundle carries it: the last lines held in memory (so a bundle has them even
 * when detourd logs only to stderr), or the bounded tail of its log file, which also covers earlier runs.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";

/** In memory: 2 MiB of JSON lines is several hours of a connected daemon's log, and a small fixed cost. */
export const LOG_TAIL_MEMORY_BYTES = 2 * 1024 * 1024;

export class LogTail {
  readonly #lines: string[] = [];
  #bytes = 0;

  constructor(readonly maxBytes: number = LOG_TAIL_MEMORY_BYTES) {}

  push(line: string): void {
    this.#lines.push(line);
    this.#bytes += line.length;
    let drop = 0;
    while (this.#bytes > this.maxBytes && drop < this.#lines.length - 1) {
      this.#bytes -= this.#lines[drop]?.length ?? 0;
      drop++;
    }
    if (drop > 0) this.#lines.splice(0, drop);
  }

  text(): string {
    return this.#lines.join("");
  }
}

/**
 * The last `maxBytes` of a file, starting at a line boundary (the first, partial line is dropped); null if the file
 * cannot be read. Reads only the tail, so a day of logs costs no more than the bound.
 */
export function readFileTail(path: string, maxBytes: number): { text: string; truncated: boolean } | null {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return null;
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(0, size - maxBytes);
    const buf = Buffer.alloc(size - start);
    let off = 0;
    // Bounded: each read returns > 0 bytes until the buffer is full, or 0 at end of file (a file truncated meanwhile).
    for (let i = 0; i < 1 + buf.length && off < buf.length; i++) {
      const n = readSync(fd, buf, off, buf.length - off, start + off);
      if (n === 0) break;
      off += n;
    }
    let text = buf.subarray(0, off).toString("utf8");
    if (start > 0) {
      const nl = text.indexOf("\n");
      text = nl === -1 ? "" : text.slice(nl + 1);
    }
    return { text, truncated: start > 0 };
  } finally {
    closeSync(fd);
  }
}
