/** Writes resources/schema/detour-config.schema.json from the zod schema (`npm run schema`). */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { configJsonSchema } from "../main/core/config/json-schema.ts";

const out = join(import.meta.dirname, "..", "resources", "schema", "detour-config.schema.json");
writeFileSync(out, JSON.stringify(configJsonSchema(), null, 2) + "\n");
console.log(`wrote ${out}`);
