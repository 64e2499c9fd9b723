import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { configJsonSchema } from "./json-schema.ts";

test("the-shipped-json-schema-matches-the-zod-schema", () => {
  const shipped = JSON.parse(
    readFileSync(
      join(import.meta.dirname, "..", "..", "..", "resources", "schema", "detour-config.schema.json"),
      "utf8",
    ),
  ) as unknown;
  assert.deepEqual(shipped, configJsonSchema(), "resources/schema is stale: run `npm run schema`");
});

test("the-json-schema-names-every-top-level-section", () => {
  const s = configJsonSchema() as { properties?: Record<string, unknown>; required?: string[] };
  for (const k of ["version", "organisation", "identity", "gateways", "protectedRoutes", "probe", "race", "health"])
    assert.ok(s.properties?.[k] !== undefined, k);
  assert.deepEqual([...(s.required ?? [])].sort(), [
    "gateways",
    "identity",
    "organisation",
    "probe",
    "protectedRoutes",
    "version",
  ]);
});
