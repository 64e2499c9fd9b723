/**
 * `detour diag`: asks detourd for a diagnostic bundle (written locally first, so it works when the network is
 * what is broken), optionally copies it (--out) and uploads it (--upload); `detour diag inspect <bundle>` prints
 * a bundle's summary in the terminal and verifies the manifest's hashes, offline.
 * Exit codes: 0 ok, 1 daemon error or failed upload, 2 usage, 3 detourd not running, 4 damaged bundle.
 */
import { constants, copyFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ControlClient, isControlError } from "../client/control-client.ts";
import { SUMMARY_JSON } from "../core/diag/manifest.ts";
import { renderSummaryText, type SummaryModel } from "../core/diag/summary.ts";
import { DEFAULT_SOCKET_PATH } from "../core/protocol/messages.ts";
import { BundleReadError, readBundle } from "./diag-archive.ts";

const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
const EXIT_NOT_RUNNING = 3;
const EXIT_DAMAGED = 4;

export const DIAG_USAGE = `usage: detour diag [--out <file>] [--upload] [--json]
       detour diag inspect <bundle.tar.gz> [--json]

  diag                 detourd writes a diagnostic bundle (.tar.gz, secrets removed) and prints where
    --out <file>       also copy it to <file> (refuses to overwrite)
    --upload           then upload it to the collector and/or the SFTP drop the configuration names
  diag inspect <file>  print a bundle's summary and verify every file against the manifest (offline)
`;

function write(text: string): void {
  process.stdout.write(text);
}

function fail(msg: string, code: number): number {
  process.stderr.write(`detour: ${msg}\n`);
  return code;
}

function kib(n: number): string {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

async function inspect(file: string, json: boolean): Promise<number> {
  let b;
  try {
    b = await readBundle(file);
  } catch (e) {
    if (e instanceof BundleReadError) return fail(e.message, EXIT_DAMAGED);
    throw e;
  }
  const summaryBuf = b.files.get(SUMMARY_JSON);
  let model: SummaryModel | null = null;
  try {
    model = summaryBuf === undefined ? null : (JSON.parse(summaryBuf.toString("utf8")) as SummaryModel);
  } catch {
    model = null;
  }
  if (json) {
    write(JSON.stringify({ manifest: b.manifest, check: b.check, summary: model }, null, 2) + "\n");
  } else {
    if (model === null) write(`(no readable ${SUMMARY_JSON} in this bundle)\n`);
    else write(renderSummaryText(model));
    write(
      `\nManifest: ${b.manifest.format}, agent ${b.manifest.agentVersion}, policy ${b.manifest.policyHash}, created ${b.manifest.createdAt}\n`,
    );
    write(
      b.check.ok
        ? `Integrity: all ${b.check.verified} files match their SHA-256 in the manifest.\n`
        : `Integrity: ${b.check.problems.length} problem(s):\n${b.check.problems.map((p) => `  ${p}`).join("\n")}\n`,
    );
  }
  return b.check.ok ? EXIT_OK : EXIT_DAMAGED;
}

export async function diagMain(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        socket: { type: "string" },
        out: { type: "string" },
        upload: { type: "boolean", default: false },
        json: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
  } catch (e) {
    return fail(`${(e as Error).message}\n${DIAG_USAGE}`, EXIT_USAGE);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    write(DIAG_USAGE);
    return EXIT_OK;
  }
  const [first, sub, ...rest] = positionals;
  if (first !== "diag") return fail(`expected the diag command\n${DIAG_USAGE}`, EXIT_USAGE);
  if (sub === "inspect") {
    const file = rest[0];
    if (file === undefined || rest.length > 1)
      return fail(`diag inspect takes exactly one bundle file\n${DIAG_USAGE}`, EXIT_USAGE);
    if (values.out !== undefined || values.upload) return fail("diag inspect takes no --out or --upload", EXIT_USAGE);
    return inspect(file, values.json);
  }
  if (sub !== undefined) return fail(`unknown diag argument "${sub}"\n${DIAG_USAGE}`, EXIT_USAGE);
  if (values.out === "") return fail("--out needs a file name", EXIT_USAGE);
  const socket = values.socket ?? process.env.DETOUR_SOCKET ?? DEFAULT_SOCKET_PATH;

  let client: ControlClient | null = null;
  try {
    client = await ControlClient.connect(socket, { client: "detour-cli/0.1" });
    const r = await client.diag();
    let copied: string | null = null;
    if (values.out !== undefined) {
      try {
        copyFileSync(r.path, values.out, constants.COPYFILE_EXCL);
        copied = values.out;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const why =
          code === "EEXIST"
            ? `${values.out} already exists; choose another name`
            : code === "EACCES"
              ? `cannot read ${r.path} or write ${values.out} (bundles are root-only: run as root)`
              : `cannot copy to ${values.out}: ${code ?? (e as Error).message}`;
        return fail(`the bundle was written to ${r.path}, but ${why}`, EXIT_FAILED);
      }
    }
    const up = values.upload ? await client.diagUpload() : null;
    if (values.json) write(JSON.stringify({ ...r, copiedTo: copied, uploads: up?.uploads ?? null }, null, 2) + "\n");
    else {
      const removed =
        Object.entries(r.redactions.removed)
          .filter(([, n]) => n > 0)
          .map(([k, n]) => `${n} ${k}`)
          .join(", ") || "none";
      const pseudo =
        Object.entries(r.redactions.pseudonymised)
          .filter(([, n]) => n > 0)
          .map(([k, n]) => `${n} ${k}`)
          .join(", ") || "none";
      write(
        `bundle: ${copied ?? r.path} (${kib(r.bytes)}, ${r.files} files, ${r.tookMs} ms)\nsha256: ${r.sha256}\nremoved: ${removed}\npseudonymised: ${pseudo}\n`,
      );
      for (const u of up?.uploads ?? [])
        write(
          u.ok
            ? `uploaded to ${u.target}: ${u.location ?? "ok"} (${u.attempts} attempt${u.attempts === 1 ? "" : "s"})\n`
            : `upload to ${u.target} failed after ${u.attempts} attempt(s): ${u.error ?? "?"}\n`,
        );
    }
    return up !== null && up.uploads.some((u) => !u.ok) ? EXIT_FAILED : EXIT_OK;
  } catch (e) {
    if (!isControlError(e)) throw e;
    return fail(e.message, e.code === "not-running" ? EXIT_NOT_RUNNING : EXIT_FAILED);
  } finally {
    client?.close();
  }
}
