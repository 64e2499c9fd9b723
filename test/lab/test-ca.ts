/**
 * A throwaway certificate authority and one server certificate signed by it, made with openssl in a folder the
 * caller owns and removes: what the lab's https portal and the portal tests serve, and the CA file or pin that
 * detourd's configuration then trusts. ECDSA P-256, valid for two days.
 */
import { execFileSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface TestCertificate {
  /** PEM of the CA certificate (what a CA file holds). */
  caPem: string;
  caFile: string;
  /** PEM of the server's certificate and key. */
  certPem: string;
  keyPem: string;
  certFile: string;
  keyFile: string;
  /** "sha256/<base64>" of the server's public key: a pin that matches it. */
  pin: string;
}

/** openssl's bound: generating two P-256 keys and signing takes milliseconds. */
const OPENSSL_TIMEOUT_MS = 15_000;

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"], timeout: OPENSSL_TIMEOUT_MS });
}

/** Makes a CA and a certificate for these names and IP addresses under `dir` (which must exist). */
export function makeTestCertificate(dir: string, san: { ips?: string[]; names?: string[] }): TestCertificate {
  const f = (name: string): string => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl(
    ["req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "2"].concat([
      "-subj",
      "/CN=detour throwaway test CA",
    ]),
  );
  openssl(["req", ...ec, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=detour test portal"]);
  const alt = [...(san.ips ?? []).map((i) => `IP:${i}`), ...(san.names ?? []).map((n) => `DNS:${n}`)].join(",");
  writeFileSync(f("server.ext"), `subjectAltName=${alt}\n`);
  openssl([
    "x509",
    "-req",
    "-in",
    f("server.csr"),
    "-CA",
    f("ca.pem"),
    "-CAkey",
    f("ca.key"),
    "-CAcreateserial",
    "-out",
    f("server.pem"),
    "-days",
    "2",
    "-extfile",
    f("server.ext"),
  ]);
  const certPem = readFileSync(f("server.pem"), "utf8");
  const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
  return {
    caPem: readFileSync(f("ca.pem"), "utf8"),
    caFile: f("ca.pem"),
    certPem,
    keyPem: readFileSync(f("server.key"), "utf8"),
    certFile: f("server.pem"),
    keyFile: f("server.key"),
    pin: `sha256/${createHash("sha256").update(spki).digest("base64")}`,
  };
}
