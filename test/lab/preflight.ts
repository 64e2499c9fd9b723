/**
 * Checks that the lab can run here (root, Linux, the Debian packages) and says exactly what is missing.
 * Engine binaries are found on PATH, never executed: wireguard-go would take `--version`-like words as an
 * interface name outside a namespace.
 */
import { accessSync, constants, existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** Each binary the lab runs, with the Debian package that provides it. */
export const REQUIRED_BINARIES: Record<string, string> = {
  ip: "iproute2",
  ss: "iproute2",
  nft: "nftables",
  iptables: "iptables",
  ping: "iputils-ping",
  "wireguard-go": "wireguard-go",
  wg: "wireguard-tools",
  "charon-systemd": "charon-systemd",
  swanctl: "strongswan-swanctl",
  ocserv: "ocserv",
  ocpasswd: "ocserv",
  openconnect: "openconnect",
  certtool: "gnutls-bin",
  dnsmasq: "dnsmasq-base",
  cc: "gcc",
  setpriv: "util-linux",
};

/** Debian installs the PostgreSQL server under /usr/lib/postgresql/<major>/bin, off PATH. */
export const POSTGRES_LIB = "/usr/lib/postgresql";
/** What the lab runs of the server (test/lab/postgres.ts); psql comes with it (postgresql-client). */
const POSTGRES_PROGRAMS = ["postgres", "initdb", "psql"];

/** The newest installed PostgreSQL server's bin folder, or undefined when the `postgresql` package is missing. */
export function postgresBinDir(): string | undefined {
  let versions: string[];
  try {
    versions = readdirSync(POSTGRES_LIB).filter((v) => /^\d+$/.test(v));
  } catch {
    return undefined;
  }
  for (const v of versions.sort((a, b) => Number(b) - Number(a))) {
    const bin = join(POSTGRES_LIB, v, "bin");
    if (POSTGRES_PROGRAMS.every((p) => existsSync(join(bin, p)))) return bin;
  }
  return undefined;
}

const SEARCH_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

export function findBinary(name: string): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(":").filter((d) => d !== ""), ...SEARCH_PATH];
  for (const d of dirs) {
    const p = join(d, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface PreflightProblem {
  what: string;
  fix: string;
}

export function preflightProblems(): PreflightProblem[] {
  const problems: PreflightProblem[] = [];
  if (process.platform !== "linux")
    problems.push({
      what: `the lab needs Linux network namespaces; this is ${process.platform}`,
      fix: "run on Debian 12",
    });
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    problems.push({ what: "the lab needs root (namespaces, TUN devices, nftables)", fix: "run as root" });
  }
  const missing = Object.entries(REQUIRED_BINARIES).filter(([bin]) => findBinary(bin) === undefined);
  if (postgresBinDir() === undefined)
    missing.push([`${POSTGRES_LIB}/<version>/bin/{${POSTGRES_PROGRAMS.join(",")}}`, "postgresql"]);
  if (missing.length > 0) {
    const pkgs = [...new Set(missing.map(([, pkg]) => pkg))];
    problems.push({
      what: `missing programs: ${missing.map(([b, p]) => `${b} (package ${p})`).join(", ")}`,
      fix: `run \`bash scripts/setup.sh\` as root (or apt-get install ${pkgs.join(" ")})`,
    });
  }
  return problems;
}

/** Throws one error listing every problem, so a missing package is never a silent skip. */
export function assertLabCanRun(): void {
  const problems = preflightProblems();
  if (problems.length > 0) {
    throw new Error(
      `the lab cannot run on this machine:\n${problems.map((p) => `  - ${p.what}; fix: ${p.fix}`).join("\n")}`,
    );
  }
}
