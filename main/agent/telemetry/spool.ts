/**
 * The telemetry spool: every OTLP request is written to disk before anyone tries to send it, delivered oldest
 * first, and removed only once the collector has it. Bounded in bytes and records; past the bound the oldest
 * record goes and the loss is counted (and reported, by the same path). Survives restarts: the sequence
 * number and the dropped count live in a small state file, records in one file each.
 *
 * Layout: <dir>/state.json {"nextSeq":N,"dropped":N,"rejected":N} and <dir>/<seq, 12 digits>.<kind>.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomicSync } from "../../shared/atomic-write.ts";

export type SpoolKind = "metrics" | "logs";
const KINDS: readonly SpoolKind[] = ["metrics", "logs"];

export interface SpoolOptions {
  dir: string;
  maxBytes: number;
  maxRecords: number;
}

export interface SpoolRecord {
  seq: number;
  kind: SpoolKind;
  body: Buffer;
}

export interface SpoolStats {
  pending: number;
  bytes: number;
  /** Records removed unsent because the spool was full, since the spool was created. */
  dropped: number;
  /** Records the collector refused as malformed (they would never be accepted), since creation. */
  rejected: number;
  nextSeq: number;
}

interface Entry {
  seq: number;
  kind: SpoolKind;
  size: number;
}

const NAME_RE = /^(\d{12})\.(metrics|logs)$/;

export class Spool {
  readonly #opts: SpoolOptions;
  /** Pending records, oldest first. */
  #entries: Entry[] = [];
  #bytes = 0;
  #nextSeq = 1;
  #dropped = 0;
  #rejected = 0;

  private constructor(opts: SpoolOptions) {
    this.#opts = opts;
  }

  /** Opens (or creates) the spool in `dir`, picking up whatever a previous daemon left. */
  static open(opts: SpoolOptions): Spool {
    if (opts.maxBytes < 1 || opts.maxRecords < 1) throw new Error("spool: maxBytes and maxRecords must be positive");
    mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    const s = new Spool(opts);
    s.#load();
    return s;
  }

  #statePath(): string {
    return join(this.#opts.dir, "state.json");
  }

  #recordPath(e: { seq: number; kind: SpoolKind }): string {
    return join(this.#opts.dir, `${String(e.seq).padStart(12, "0")}.${e.kind}`);
  }

  #load(): void {
    try {
      const st = JSON.parse(readFileSync(this.#statePath(), "utf8")) as Partial<
        Record<"nextSeq" | "dropped" | "rejected", unknown>
      >;
      if (typeof st.nextSeq === "number" && Number.isSafeInteger(st.nextSeq) && st.nextSeq > 0)
        this.#nextSeq = st.nextSeq;
      if (typeof st.dropped === "number" && st.dropped >= 0) this.#dropped = st.dropped;
      if (typeof st.rejected === "number" && st.rejected >= 0) this.#rejected = st.rejected;
    } catch {
      // No state yet (or a torn one): the records on disk still tell where the sequence is.
    }
    const entries: Entry[] = [];
    for (const name of readdirSync(this.#opts.dir)) {
      const m = NAME_RE.exec(name);
      if (m === null) {
        // A write a crash interrupted (see writeFileAtomicSync): never a record.
        if (name.endsWith(".tmp")) rmSync(join(this.#opts.dir, name), { force: true });
        continue;
      }
      const kind = m[2] as SpoolKind;
      if (!KINDS.includes(kind)) continue;
      entries.push({ seq: Number(m[1]), kind, size: statSync(join(this.#opts.dir, name)).size });
    }
    entries.sort((a, b) => a.seq - b.seq);
    this.#entries = entries;
    this.#bytes = entries.reduce((n, e) => n + e.size, 0);
    const last = entries[entries.length - 1];
    if (last !== undefined && last.seq >= this.#nextSeq) this.#nextSeq = last.seq + 1;
    this.#enforceBound();
    this.#saveState();
  }

  #saveState(): void {
    writeFileAtomicSync(
      this.#statePath(),
      JSON.stringify({ nextSeq: this.#nextSeq, dropped: this.#dropped, rejected: this.#rejected }) + "\n",
    );
  }

  /** Removes the oldest records until the bound holds; returns how many went. */
  #enforceBound(): number {
    let n = 0;
    while (
      this.#entries.length > 0 &&
      (this.#entries.length > this.#opts.maxRecords || this.#bytes > this.#opts.maxBytes)
    ) {
      const e = this.#entries.shift();
      if (e === undefined) break;
      rmSync(this.#recordPath(e), { force: true });
      this.#bytes -= e.size;
      this.#dropped += 1;
      n += 1;
    }
    return n;
  }

  /** Stores one record durably; returns its sequence number and how many old records the bound pushed out. */
  put(kind: SpoolKind, body: Uint8Array): { seq: number; dropped: number } {
    const seq = this.#nextSeq;
    this.#nextSeq += 1;
    // The sequence is saved before the record: a crash in between skips a number, never reuses one.
    this.#saveState();
    const buf = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    // Durable before put() returns: a record the daemon said it spooled survives a power cut that follows.
    writeFileAtomicSync(this.#recordPath({ seq, kind }), buf);
    this.#entries.push({ seq, kind, size: buf.length });
    this.#bytes += buf.length;
    const dropped = this.#enforceBound();
    if (dropped > 0) this.#saveState();
    return { seq, dropped };
  }

  /** The oldest pending record, or null. A record whose file vanished is skipped (and counted as dropped). */
  peek(): SpoolRecord | null {
    for (let i = 0; i < 1000 && this.#entries.length > 0; i++) {
      const e = this.#entries[0];
      if (e === undefined) return null;
      try {
        return { seq: e.seq, kind: e.kind, body: readFileSync(this.#recordPath(e)) };
      } catch {
        this.#entries.shift();
        this.#bytes -= e.size;
        this.#dropped += 1;
        this.#saveState();
      }
    }
    return null;
  }

  /** The collector has the record: it is removed. Acking anything but the oldest is a bug. */
  ack(seq: number): void {
    const e = this.#entries[0];
    if (e?.seq !== seq) throw new Error(`spool: ack of ${seq} but the oldest pending record is ${String(e?.seq)}`);
    this.#entries.shift();
    this.#bytes -= e.size;
    rmSync(this.#recordPath(e), { force: true });
  }

  /** The collector refused the record for good (malformed by its lights): removed, and counted. */
  reject(seq: number): void {
    this.ack(seq);
    this.#rejected += 1;
    this.#saveState();
  }

  stats(): SpoolStats {
    return {
      pending: this.#entries.length,
      bytes: this.#bytes,
      dropped: this.#dropped,
      rejected: this.#rejected,
      nextSeq: this.#nextSeq,
    };
  }
}

/** For tests and diagnostics: the raw names in a spool folder. */
export function spoolFiles(dir: string): string[] {
  return readdirSync(dir)
    .filter((n) => NAME_RE.test(n))
    .sort();
}
