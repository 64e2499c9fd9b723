/**
 * The lab's trusted-network TLS host: the lab portal's server (./portal.ts; any https answer will do) in the DNS
 * namespace, answering with a test certificate whose key a trusted-network rule pins, and the rule that names it.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DetourConfigInput } from "../../main/core/config/schema.ts";
import { stopPids } from "./exec.ts";
import * as lab from "./lab.ts";
import { startPortalServer } from "./portal.ts";
import { makeTestCertificate } from "./test-ca.ts";
import { DOMAIN } from "./topology.ts";

/** The trusted host's port: not the portal's 443, so the two never meet. */
export const TRUSTED_TLS_PORT = 8443;
/** How often detourd rechecks the network in these tests: fast enough to see leaving it within seconds. */
const RECHECK_MS = 2000;
/** One TLS handshake on the lab's links takes milliseconds. */
const CHECK_TIMEOUT_MS = 1000;

export interface TestCertificate {
  pin: string;
  certFile: string;
  keyFile: string;
}

/** A certificate for the DNS namespace's address, in lab `id`'s folder `trusted-<name>`. */
export function makeTrustedCertificate(id: string, name: string): TestCertificate {
  const dir = join(lab.labDirOf(id), `trusted-${name}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return makeTestCertificate(dir, { ips: [lab.topologyOf(id).dns.address] });
}

/** Trusted networks with one rule, "office": the lab's DNS domain and the TLS host pinned to `pin`. */
export function officeTrustedNetworks(id: string, pin: string): NonNullable<DetourConfigInput["trustedNetworks"]> {
  return {
    rules: [
      {
        name: "office",
        dnsDomains: [DOMAIN],
        tlsHost: { address: lab.topologyOf(id).dns.address, port: TRUSTED_TLS_PORT, pins: [pin] },
      },
    ],
    recheckMs: RECHECK_MS,
    timeoutMs: CHECK_TIMEOUT_MS,
  };
}

/** One TLS host at a time in lab `id`'s DNS namespace; `stop` is safe to call when none runs. */
export class TrustedTlsHost {
  #pid: number | null = null;

  constructor(readonly id: string) {}

  /** (Re)starts the host with `cert` and waits until it listens; one that does not is stopped, failing with its log. */
  async start(cert: { certFile: string; keyFile: string }): Promise<void> {
    await this.stop();
    const dir = join(lab.labDirOf(this.id), "trusted-host");
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const docFile = join(dir, "doc.json");
    writeFileSync(docFile, "{}");
    this.#pid = await startPortalServer(this.id, {
      what: "the trusted TLS host",
      cert,
      docFile,
      port: TRUSTED_TLS_PORT,
      logFile: join(lab.labDirOf(this.id), "logs", `trusted-host-${String(Date.now())}.log`),
    });
  }

  async stop(): Promise<void> {
    if (this.#pid !== null) await stopPids([this.#pid]);
    this.#pid = null;
  }
}
