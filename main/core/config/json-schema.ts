/** The configuration's JSON Schema, derived from the zod schema so editors and IT tooling validate the same rules. */
import { z } from "zod";
import { DetourConfig } from "./schema.ts";

export function configJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(DetourConfig, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
  return {
    ...schema,
    $id: "https://detour.invalid/schema/detour-config.schema.json",
    title: "Detour client configuration",
  };
}
