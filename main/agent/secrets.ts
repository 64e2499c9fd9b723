/**
 * Reads the secrets a configuration points to (files or environment variables) into Secret values, and any other
 * secret detourd keeps in a file (the remote policy URL). A secret file must be a regular file owned by root (or by
 * the user detourd runs as, for tests and unprivileged runs), not a symbolic link, and not readable or writable by
 * group or others: otherwise another local user could read it, or replace it with one of their choosing.
 */
import { closeSync, constants, fstatSync, openSync, readFileSync } from "node:fs";
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

/**
 * The trimmed text of a secret file, after checking who may have written or read it; `what` names the setting
 * in errors (the value itself never appears). The checks run on the open descriptor, so the file cannot be swapped
 * between the check and the read; O_NOFOLLOW refuses a symbolic link, O_NONBLOCK a FIFO that nobody writes.
 */
export function readSecretFile(file: string, what: string): string {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "error";
    if (code === "ELOOP")
      throw new SecretError(what, `${file} is a symbolic link; point to the file itself (a link can be redirected)`);
    throw new SecretError(what, `cannot read ${file}: ${code}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new SecretError(what, `${file} is not a regular file`);
    const self = process.geteuid?.() ?? 0;
    if (st.uid !== 0 && st.uid !== self)
      throw new SecretError(what, `${file} is owned by uid ${st.uid}, not root; chown root: it`);
    if ((st.mode & 0o077) !== 0)
      throw new SecretError(
        what,
        `${file} is open to group or others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`,
      );
    const v = readFileSync(fd, "utf8").trim();
    if (v === "") throw new SecretError(what, `${file} is empty`);
    return v;
  } finally {
    closeSync(fd);
  }
}

/** Loads one secret; `path` names the config field in errors (the value itself never appears). */
export function loadSecret(ref: SecretRef, path: string, env: NodeJS.ProcessEnv = process.env): Secret {
  if ("env" in ref) {
    const v = env[ref.env];
    if (v === undefined || v === "") throw new SecretError(path, `environment variable ${ref.env} is not set`);
    return new Secret(v);
  }
  return new Secret(readSecretFile(ref.file, path));
}
