/**
 * detourd's structured log: one JSON object per line on stderr (and optionally a file). Secret values print as
 * "[redacted]" through their own toJSON, fields named like secrets are dropped even if a plain string slips in, and
 * credentials in any URL (user info, signed or token query parameters) are redacted in the message and every field.
 */
import { appendFileSync } from "node:fs";
import { redactUrlCredentials } from "../core/diag/redact.ts";

export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_FIELD = /(private.?key|psk|password|passwd|secret|cookie|token)/i;

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

function scrub(value: unknown, depth: number): unknown {
  if (typeof value === "string") return redactUrlCredentials(value);
  if (depth > 8 || value === null || typeof value !== "object") return value;
  if (value instanceof Error) return { name: value.name, message: redactUrlCredentials(value.message) };
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1));
  if (typeof (value as { toJSON?: unknown }).toJSON === "function") return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_FIELD.test(k) ? "[redacted]" : scrub(v, depth + 1);
  return out;
}

/** `tee` also gets every line written (the diagnostic bundle's in-memory log tail). */
export function createLogger(
  opts: { level?: Level; file?: string; write?: (line: string) => void; tee?: (line: string) => void } = {},
): Logger {
  const min = ORDER[opts.level ?? "info"];
  const write =
    opts.write ??
    ((line: string) => {
      process.stderr.write(line);
      if (opts.file !== undefined) {
        try {
          appendFileSync(opts.file, line, { mode: 0o600 });
        } catch {
          // a log file that cannot be written must not stop the daemon
        }
      }
    });
  const log = (level: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (ORDER[level] < min) return;
    const line =
      JSON.stringify({
        t: new Date().toISOString(),
        level,
        msg: redactUrlCredentials(msg),
        ...(fields === undefined ? {} : (scrub(fields, 0) as Record<string, unknown>)),
      }) + "\n";
    write(line);
    opts.tee?.(line);
  };
  return {
    debug: (m, f) => {
      log("debug", m, f);
    },
    info: (m, f) => {
      log("info", m, f);
    },
    warn: (m, f) => {
      log("warn", m, f);
    },
    error: (m, f) => {
      log("error", m, f);
    },
  };
}
