import assert from "node:assert/strict";
import { test } from "node:test";
import { inspect } from "node:util";
import { Secret } from "./secret.ts";

test("a-secret-never-prints-its-value", () => {
  const s = new Secret("hunter2");
  assert.equal(String(s), "[redacted]");
  // eslint-disable-next-line @typescript-eslint/restrict-template-expressions -- the point: interpolation must not leak
  assert.equal(`${s}`, "[redacted]");
  assert.equal(JSON.stringify({ psk: s }), '{"psk":"[redacted]"}');
  assert.equal(inspect({ s }), "{ s: [redacted] }");
  assert.equal(s.reveal(), "hunter2");
});
