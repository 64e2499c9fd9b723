import assert from "node:assert/strict";
import { test } from "node:test";
import { Secret } from "../core/secret.ts";
import { createLogger } from "./log.ts";

test("log-lines-are-json-and-never-carry-secrets", () => {
  const lines: string[] = [];
  const log = createLogger({ write: (l) => lines.push(l) });
  log.info("leg started", {
    leg: "L1",
    psk: "plain-oops",
    nested: { password: "hunter2", ok: 1 },
    key: new Secret("k3y"),
  });
  const text = lines.join("");
  assert.doesNotMatch(text, /plain-oops|hunter2|k3y/);
  const obj = JSON.parse(lines[0] ?? "") as Record<string, unknown>;
  assert.equal(obj.msg, "leg started");
  assert.equal(obj.level, "info");
  assert.deepEqual(obj.nested, { password: "[redacted]", ok: 1 });
});

test("levels-below-the-minimum-are-dropped", () => {
  const lines: string[] = [];
  const log = createLogger({ level: "warn", write: (l) => lines.push(l) });
  log.info("quiet");
  log.error("loud");
  assert.equal(lines.length, 1);
});

test("credentials-in-urls-never-reach-a-log-line-message-fields-or-errors", () => {
  const lines: string[] = [];
  const log = createLogger({ write: (l) => lines.push(l) });
  log.warn("policy fetch from https://alice:hunter2@policy.example/p.json failed", {
    source: "url:https://policy.example/p.json?X-Amz-Signature=deadbeef&v=1",
    err: new Error("Failed to parse URL from https://bob:pw0@x.example/?token=zzz9"),
    list: ["https://x.example/?sig=sigvalue"],
  });
  const text = lines.join("");
  assert.doesNotMatch(text, /hunter2|deadbeef|pw0|zzz9|sigvalue|alice|bob/);
  const obj = JSON.parse(lines[0] ?? "") as Record<string, unknown>;
  assert.equal(obj.source, "url:https://policy.example/p.json?X-Amz-Signature=[redacted]&v=1");
  assert.equal(obj.msg, "policy fetch from https://[redacted]@policy.example/p.json failed");
});
