import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { sourcesHash } from "./daemon-bundle.ts";

const root = mkdtempSync(join(tmpdir(), "detour-bundle-hash-"));
after(() => {
  rmSync(root, { recursive: true, force: true });
});

function put(rel: string, text: string): void {
  mkdirSync(join(root, rel, ".."), { recursive: true });
  writeFileSync(join(root, rel), text);
}

test("the-bundle-is-rebuilt-when-a-source-changes-and-not-when-a-test-does", () => {
  put("main/agent/detourd.ts", "a");
  put("native/platform/run.ts", "b");
  put("package-lock.json", "{}");
  const first = sourcesHash(root);
  assert.equal(sourcesHash(root), first, "same sources, same build");
  put("main/agent/detourd.test.ts", "a test");
  assert.equal(sourcesHash(root), first, "a test is not part of the bundle");
  put("native/platform/run.ts", "c");
  const second = sourcesHash(root);
  assert.notEqual(second, first, "a changed source builds anew");
  put("resources/engines/openconnect/handback.sh", "#!/bin/sh");
  assert.notEqual(sourcesHash(root), second, "the engines' resources are part of it");
  rmSync(join(root, "resources"), { recursive: true });
  put("main/agent/renamed.ts", "c");
  rmSync(join(root, "native"), { recursive: true });
  assert.notEqual(sourcesHash(root), second, "a moved file is a change");
});
