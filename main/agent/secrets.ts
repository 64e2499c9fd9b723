/** Reads the secrets a configuration points to (files or environment variables) into Secret values. */
import { readFileSync, statSync } from "node:fs";
import { Secret } from "../core/secret.ts";
import type { SecretRef } from "../core/config/schema.ts";

export class SecretError extends Error {
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(`${path}: ${message}`);
    this.name = "SecretError";
  }
}

/** Loads one secret; `path` names the config field in errors (the value itself never appears). */
export function loadSecret(ref: SecretRef, path: string, env: NodeJS.ProcessEnv = process.env): Secret {
  if ("env" in ref) {
    const v = env[ref.env];
    if (v === undefined || v === "") throw new SecretError(path, `environment variable ${ref.env} is not set`);
    return new Secret(v);
  }
  let mode: number;
  try {
    mode = statSync(ref.file).mode;
  } catch (e) {
    throw new SecretError(path, `cannot read ${ref.file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
  }
  if ((mode & 0o077) !== 0)
    throw new SecretError(path, `${ref.file} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  const v = readFileSync(ref.file, "utf8").trim();
  if (v === "") throw new SecretError(path, `${ref.file} is empty`);
  return new Secret(v);
}
