/**
 * The lab's https portal: a throwaway CA and a certificate for the DNS namespace's address, made in the lab's
 * folder, and the portal server (tools/portal-server.ts) in the DNS namespace answering one JSON document. A test
 * starts it when it needs it and stops it by PID; `lab down` removes it with the namespace otherwise.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { inNs, isAlive, readIfExists, spawnDaemon, stopPids, waitFor } from "./exec.ts";
import { labDirOf } from "./lab.ts";
import { REPO_ROOT } from "./services.ts";
import { makeTestCertificate } from "./test-ca.ts";
import { DOMAIN, labTopology } from "./topology.ts";

/** Node with the tsx loader starts in about a second; a loaded two-core machine takes several. */
const PORTAL_READY_TIMEOUT_MS = 20_000;
export const PORTAL_PORT = 443;
export const PORTAL_NAME = `portal.${DOMAIN}`;

export interface LabPortal {
  pid: number;
  /** https URL by address (the lab's DNS has no record for the portal). */
  url: string;
  /** The CA file detourd's configuration trusts, and a pin of the portal's key. */
  caFile: string;
  pin: string;
  /** Replaces the document the portal serves. */
  serve(doc: unknown): void;
  stop(): Promise<void>;
}

export async function startPortal(id: string, doc: unknown): Promise<LabPortal> {
  const topo = labTopology(id);
  const dir = join(labDirOf(id), "portal");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const cert = makeTestCertificate(dir, { ips: [topo.dns.address], names: [PORTAL_NAME] });
  const docFile = join(dir, "gateways.json");
  const serve = (d: unknown): void => {
    writeFileSync(docFile, JSON.stringify(d));
  };
  serve(doc);
  const log = join(labDirOf(id), "logs", "portal.log");
  const argv = [
    process.execPath,
    "--import",
    "tsx",
    join(REPO_ROOT, "test", "lab", "tools", "portal-server.ts"),
    cert.certFile,
    cert.keyFile,
    docFile,
    topo.dns.address,
    String(PORTAL_PORT),
  ];
  const pid = spawnDaemon(inNs(topo.dns.ns, argv), { logFile: log, cwd: REPO_ROOT });
  try {
    await waitFor(
      "the lab portal to listen",
      () => {
        if (!isAlive(pid)) throw new Error(`the portal exited during start-up:\n${readIfExists(log).slice(-2000)}`);
        return readIfExists(log).includes("listening");
      },
      { timeoutMs: PORTAL_READY_TIMEOUT_MS, intervalMs: 50 },
    );
  } catch (e) {
    await stopPids([pid]);
    throw e;
  }
  return {
    pid,
    url: `https://${topo.dns.address}:${String(PORTAL_PORT)}/gateways`,
    caFile: cert.caFile,
    pin: cert.pin,
    serve,
    stop: () => stopPids([pid]),
  };
}
