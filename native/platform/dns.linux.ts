/**
 * DNS for the tunnel through resolv.conf: the winner's resolvers go in while connected, the original comes back
 * on disconnect. The original is saved to a file first (replaced whole, so a crash never leaves half of it to
 * restore), and a crashed daemon restores it on its next start. resolv.conf itself is written in place (never
 * renamed over), because in a network namespace or a container /etc/resolv.conf is a bind mount.
 */
import { existsSync, lstatSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { writeFileAtomicSync } from "../../main/shared/atomic-write.ts";

export interface DnsSettings {
  servers: string[];
  searchDomains: string[];
}

export interface DnsTarget {
  /** The resolv.conf to manage (/etc/resolv.conf in production). */
  path: string;
  /** Where the original is kept while Detour's is in force. */
  backupPath: string;
}

const HEADER = "# Written by detourd while the tunnel is up; the original is restored on disconnect.";
/** glibc reads at most three nameserver lines. */
const MAX_SERVERS = 3;

export class DnsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DnsError";
  }
}

export function renderResolvConf(s: DnsSettings): string {
  const lines = [HEADER, ...s.servers.slice(0, MAX_SERVERS).map((a) => `nameserver ${a}`)];
  if (s.searchDomains.length > 0) lines.push(`search ${s.searchDomains.join(" ")}`);
  return lines.join("\n") + "\n";
}

/** Puts the tunnel's resolvers in force; safe to repeat (the first original stays saved). */
export function applyDns(s: DnsSettings, t: DnsTarget): void {
  if (s.servers.length === 0) return;
  if (s.servers.some((a) => !/^\d{1,3}(\.\d{1,3}){3}$/.test(a)))
    throw new DnsError(`refusing DNS servers that are not IPv4 addresses: ${s.servers.join(", ")}`);
  if (s.searchDomains.some((d) => !/^[a-z0-9.-]{1,253}$/i.test(d)))
    throw new DnsError(`refusing search domains that are not host names: ${s.searchDomains.join(", ")}`);
  if (existsSync(t.path) && lstatSync(t.path).isSymbolicLink()) {
    throw new DnsError(
      `${t.path} is a symbolic link (systemd-resolved or resolvconf manages it); detourd leaves it alone`,
    );
  }
  if (!existsSync(t.backupPath)) {
    writeFileAtomicSync(t.backupPath, existsSync(t.path) ? readFileSync(t.path, "utf8") : "");
  }
  writeFileSync(t.path, renderResolvConf(s));
}

/** Puts the original back if Detour's is in force; a no-op otherwise (also after a crash and restart). */
export function restoreDns(t: DnsTarget): boolean {
  if (!existsSync(t.backupPath)) return false;
  writeFileSync(t.path, readFileSync(t.backupPath, "utf8"));
  rmSync(t.backupPath, { force: true });
  return true;
}
