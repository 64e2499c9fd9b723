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
  const pid = await startPortalServer(id, {
    what: "the lab portal",
    cert,
    docFile,
    port: PORTAL_PORT,
    logFile: join(labDirOf(id), "logs", "portal.log"),
  });
  return {
    pid,
    url: `https://${topo.dns.address}:${String(PORTAL_PORT)}/gateways`,
    caFile: cert.caFile,
    pin: cert.pin,
    serve,
    stop: () => stopPids([pid]),
  };
}

export interface PortalServerOptions {
  /** Names the server in errors: "the lab portal", "the trusted TLS host". */
  what: string;
  cert: { certFile: string; keyFile: string };
  /** The JSON document it serves (the file is read on each request). */
  docFile: string;
  port: number;
  logFile: string;
}

/**
 * Starts tools/portal-server.ts on the DNS namespace's address in lab `id` and waits until it listens; returns its
 * PID. One that exits or does not listen in time is stopped, and the error carries its log.
 */
export async function startPortalServer(id: string, opts: PortalServerOptions): Promise<number> {
  const dns = labTopology(id).dns;
  const argv = [
    process.execPath,
    "--import",
    "tsx",
    join(REPO_ROOT, "test", "lab", "tools", "portal-server.ts"),
    opts.cert.certFile,
    opts.cert.keyFile,
    opts.docFile,
    dns.address,
    String(opts.port),
  ];
  const pid = spawnDaemon(inNs(dns.ns, argv), { logFile: opts.logFile, cwd: REPO_ROOT });
  try {
    await waitFor(
      `${opts.what} to listen`,
      () => {
        if (!isAlive(pid))
          throw new Error(`${opts.what} exited during start-up:\n${readIfExists(opts.logFile).slice(-2000)}`);
        return readIfExists(opts.logFile).includes("listening");
      },
      { timeoutMs: PORTAL_READY_TIMEOUT_MS, intervalMs: 50 },
    );
  } catch (e) {
    await stopPids([pid]);
    throw e;
  }
  return pid;
}
