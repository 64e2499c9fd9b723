import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { Spool, spoolFiles } from "./spool.ts";

const root = mkdtempSync(join(tmpdir(), "detour-spool-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});
let n = 0;
const dir = (): string => join(root, String(++n));
const body = (s: string): Uint8Array => new TextEncoder().encode(s);

test("records-come-out-in-order-and-go-only-when-acked", () => {
  const s = Spool.open({ dir: dir(), maxBytes: 1 << 20, maxRecords: 100 });
  assert.equal(s.put("metrics", body("a")).seq, 1);
  assert.equal(s.put("logs", body("b")).seq, 2);
  const first = s.peek();
  assert.equal(first?.seq, 1);
  assert.equal(first.kind, "metrics");
  assert.equal(first.body.toString(), "a");
  assert.equal(s.peek()?.seq, 1, "peeking twice gives the same record");
  s.ack(1);
  assert.equal(s.peek()?.seq, 2);
  assert.throws(() => {
    s.ack(5);
  }, /oldest pending record is 2/);
  s.ack(2);
  assert.equal(s.peek(), null);
  assert.deepEqual(s.stats(), { pending: 0, bytes: 0, dropped: 0, rejected: 0, nextSeq: 3 });
});

test("a-restart-keeps-pending-records-and-never-reuses-a-sequence-number", () => {
  const d = dir();
  const s1 = Spool.open({ dir: d, maxBytes: 1 << 20, maxRecords: 100 });
  for (let i = 0; i < 5; i++) s1.put("metrics", body(`r${i}`));
  s1.ack(1);
  s1.ack(2);
  const s2 = Spool.open({ dir: d, maxBytes: 1 << 20, maxRecords: 100 });
  assert.equal(s2.stats().pending, 3);
  assert.equal(s2.peek()?.body.toString(), "r2");
  for (let i = 3; i <= 5; i++) s2.ack(i);
  const s3 = Spool.open({ dir: d, maxBytes: 1 << 20, maxRecords: 100 });
  assert.equal(s3.put("logs", body("x")).seq, 6, "an emptied spool still continues the sequence");
});

test("past-the-bound-the-oldest-go-first-and-are-counted-also-across-restarts", () => {
  const d = dir();
  const s = Spool.open({ dir: d, maxBytes: 1 << 20, maxRecords: 3 });
  for (let i = 1; i <= 5; i++) s.put("metrics", body(`r${i}`));
  assert.equal(s.stats().pending, 3);
  assert.equal(s.stats().dropped, 2);
  assert.equal(s.peek()?.body.toString(), "r3");
  const byBytes = Spool.open({ dir: dir(), maxBytes: 10, maxRecords: 100 });
  byBytes.put("metrics", body("12345"));
  byBytes.put("metrics", body("67890"));
  const r = byBytes.put("metrics", body("abc"));
  assert.equal(r.dropped, 1);
  assert.equal(byBytes.stats().bytes, 8);
  const again = Spool.open({ dir: d, maxBytes: 1 << 20, maxRecords: 3 });
  assert.equal(again.stats().dropped, 2, "the dropped count survives a restart");
  assert.deepEqual(spoolFiles(d), ["000000000003.metrics", "000000000004.metrics", "000000000005.metrics"]);
});

test("rejected-records-are-removed-and-counted-and-junk-in-the-folder-is-ignored", () => {
  const d = dir();
  const s = Spool.open({ dir: d, maxBytes: 1 << 20, maxRecords: 10 });
  s.put("metrics", body("bad"));
  s.put("metrics", body("good"));
  s.reject(1);
  assert.equal(s.stats().rejected, 1);
  writeFileSync(join(d, "notes.txt"), "x");
  writeFileSync(join(d, "000000000009.metrics.tmp"), "torn");
  writeFileSync(join(d, "state.json"), "{garbage");
  const s2 = Spool.open({ dir: d, maxBytes: 1 << 20, maxRecords: 10 });
  assert.equal(s2.stats().pending, 1);
  assert.equal(s2.peek()?.body.toString(), "good");
  assert.equal(s2.put("logs", body("n")).seq, 3, "with the state file torn, the records on disk tell the sequence");
});
