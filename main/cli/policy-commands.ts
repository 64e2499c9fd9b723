/**
 * `detour policy ...` and `detour prefs ...`: IT's offline key and signing tools, and the daemon's policy status
 * and user preferences over the control socket. Exit codes as in detour.ts: 0 ok, 1 refused or rejected (or the
 * daemon failed), 2 usage, 3 detourd is not running.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ControlClient, isControlError } from "../client/control-client.ts";
import { PolicyDocument } from "../core/policy/document.ts";
import { flattenSettings } from "../core/policy/settings.ts";
import type { PolicyStatus, PrefsPayload } from "../core/policy/status.ts";
import { pathOf } from "../core/policy/verify.ts";
import { DEFAULT_SOCKET_PATH } from "../core/protocol/messages.ts";
import { keygen, loadPrivateKey, signPolicy, verifyFile } from "./policy-tools.ts";
import { writeFileAtomicSync } from "../shared/atomic-write.ts";

export const POLICY_USAGE = `policy and preferences:
  policy keygen --out <dir>                                   new Ed25519 signing key (0600) + public key <keyId>.pem
  policy sign --key <private key> --in <policy.json> --out <signed.json>
  policy verify --keys <dir> [--config <file>] [--current-version <n>] <signed.json>
                                                              would a device accept it? (says why not)
  policy status [--json]                                      the policy in force, locked keys, last rejection
  prefs get [--json]                                          every setting, its value and where it comes from
  prefs set <key> <value>                                     set a preference (refused if the policy locks it)
  prefs unset <key>                                           back to the configuration's value
`;

const EXIT_OK = 0;
const EXIT_REFUSED = 1;
const EXIT_USAGE = 2;
const EXIT_NOT_RUNNING = 3;

class Usage extends Error {}

const out = (t: string): void => {
  process.stdout.write(t);
};

function need(v: string | undefined, flag: string): string {
  if (v === undefined || v === "") throw new Usage(`${flag} is required`);
  return v;
}

function formatTime(ms: number | null): string {
  return ms === null ? "-" : new Date(ms).toISOString();
}

export function formatPolicyStatus(p: PolicyStatus): string {
  const lines: string[] = [];
  if (p.version === null) lines.push("No managed policy in force.");
  else {
    lines.push(
      `Policy version ${p.version} of ${p.organisation ?? "?"} (key ${p.keyId ?? "?"}), from ${p.source ?? "?"}`,
    );
    lines.push(`  applied ${formatTime(p.appliedAt)}; issued ${p.issuedAt ?? "-"}, expires ${p.expiresAt ?? "-"}`);
    lines.push(`  locked: ${p.locked.length === 0 ? "nothing" : p.locked.join(", ")}`);
  }
  const r = p.lastRejection;
  if (r !== null)
    lines.push(
      `Last rejected document: ${r.code}${r.field === undefined ? "" : ` (${r.field})`} at ${formatTime(r.at)} from ${r.source}: ${r.message}`,
    );
  return lines.join("\n") + "\n";
}

export function formatPrefs(p: PrefsPayload): string {
  const rows = p.entries.map((e) => {
    const tag = e.locked
      ? `managed by ${p.organisation ?? "the organisation"}'s policy`
      : e.source === "user"
        ? "your preference"
        : e.scope === "managed"
          ? "configuration (IT only)"
          : "configuration";
    const note = e.ignored === undefined ? "" : `\n  ${"".padEnd(24)} your preference is ignored: ${e.ignored}`;
    return `  ${e.key.padEnd(24)} ${JSON.stringify(e.value).padEnd(34)} ${tag}${note}`;
  });
  return rows.join("\n") + "\n";
}

async function withDaemon(socket: string, f: (c: ControlClient) => Promise<number>): Promise<number> {
  let client: ControlClient | null = null;
  try {
    client = await ControlClient.connect(socket, { client: "detour-cli/0.1" });
    return await f(client);
  } catch (e) {
    if (!isControlError(e)) throw e;
    process.stderr.write(`detour: ${e.message}\n`);
    return e.code === "not-running" ? EXIT_NOT_RUNNING : EXIT_REFUSED;
  } finally {
    client?.close();
  }
}

async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        socket: { type: "string" },
        json: { type: "boolean", default: false },
        out: { type: "string" },
        key: { type: "string" },
        in: { type: "string" },
        keys: { type: "string" },
        config: { type: "string" },
        "current-version": { type: "string" },
      },
    });
  } catch (e) {
    throw new Usage((e as Error).message);
  }
  const { values: v, positionals } = parsed;
  const [group, sub, ...rest] = positionals;
  const socket = v.socket ?? process.env.DETOUR_SOCKET ?? DEFAULT_SOCKET_PATH;
  const what = `${group ?? ""} ${sub ?? ""}`.trim();
  switch (what) {
    case "policy keygen": {
      const k = keygen(need(v.out, "--out"));
      out(
        `key id ${k.keyId}\n  private key (keep it off devices, mode 0600): ${k.privatePath}\n  public key (install in each device's trusted-keys folder): ${k.publicPath}\n`,
      );
      return EXIT_OK;
    }
    case "policy sign": {
      const input = need(v.in, "--in");
      const bytes = readFileSync(input);
      let value: unknown;
      try {
        value = JSON.parse(bytes.toString("utf8"));
      } catch (e) {
        process.stderr.write(`detour: ${input} is not valid JSON: ${(e as Error).message}\n`);
        return EXIT_REFUSED;
      }
      const doc = PolicyDocument.safeParse(value);
      if (!doc.success) {
        const i = doc.error.issues[0];
        process.stderr.write(
          `detour: ${input} is not a valid policy: ${i === undefined ? "" : `${pathOf(i.path)}: ${i.message}`}\n`,
        );
        return EXIT_REFUSED;
      }
      const env = signPolicy(bytes, loadPrivateKey(need(v.key, "--key")));
      const target = need(v.out, "--out");
      // Atomic: a signed policy that IT copies out while it is written is either the old one or the new one, whole.
      writeFileAtomicSync(target, JSON.stringify(env, null, 2) + "\n", { mode: 0o644 });
      out(
        `signed version ${doc.data.version} with key ${env.keyId}: ${target}\n  locks: ${[...flattenSettings(doc.data.settings).keys()].join(", ") || "nothing"}\n`,
      );
      return EXIT_OK;
    }
    case "policy verify": {
      const file = rest[0];
      if (file === undefined) throw new Usage("policy verify needs the signed file");
      const cv = v["current-version"];
      if (cv !== undefined && !/^\d+$/.test(cv)) throw new Usage("--current-version needs a whole number");
      const r = verifyFile(file, {
        keysDir: need(v.keys, "--keys"),
        ...(v.config === undefined ? {} : { configPath: v.config }),
        ...(cv === undefined ? {} : { currentVersion: Number(cv) }),
      });
      for (const p of r.problems) process.stderr.write(`detour: warning: ${p}\n`);
      if (!r.verdict.ok) {
        const j = r.verdict.rejection;
        out(`rejected: ${j.code}${j.field === undefined ? "" : ` (${j.field})`}: ${j.message}\n`);
        return EXIT_REFUSED;
      }
      const d = r.verdict.policy;
      out(
        `ok: version ${d.version} for ${d.organisation}, signed by ${r.verdict.keyId}, expires ${d.expiresAt}\n  locks: ${[...flattenSettings(d.settings).keys()].join(", ") || "nothing"}\n`,
      );
      return EXIT_OK;
    }
    case "policy status":
      return withDaemon(socket, async (c) => {
        const p = await c.policy();
        out(v.json ? JSON.stringify(p, null, 2) + "\n" : formatPolicyStatus(p));
        return EXIT_OK;
      });
    case "prefs get":
      return withDaemon(socket, async (c) => {
        const p = await c.prefs();
        out(v.json ? JSON.stringify(p, null, 2) + "\n" : formatPrefs(p));
        return EXIT_OK;
      });
    case "prefs set":
    case "prefs unset": {
      const key = rest[0];
      const value = sub === "set" ? rest[1] : null;
      if (key === undefined || value === undefined || rest.length > (sub === "set" ? 2 : 1))
        throw new Usage(sub === "set" ? "prefs set needs <key> <value>" : "prefs unset needs <key>");
      return withDaemon(socket, async (c) => {
        const p = await c.setPref(key, value);
        const e = p.entries.find((x) => x.key === key);
        out(`${key} = ${JSON.stringify(e?.value ?? null)}\n`);
        return EXIT_OK;
      });
    }
    default:
      throw new Usage(`unknown command "${what}"`);
  }
}

/** Runs `detour policy ...` / `detour prefs ...`; argv is everything after `detour`. */
export async function runPolicyCli(argv: string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (e) {
    if (e instanceof Usage) {
      process.stderr.write(`detour: ${e.message}\n${POLICY_USAGE}`);
      return EXIT_USAGE;
    }
    if (e instanceof Error && !isControlError(e) && (e as NodeJS.ErrnoException).code !== undefined) {
      process.stderr.write(`detour: ${e.message}\n`);
      return EXIT_REFUSED;
    }
    if (
      e instanceof Error &&
      /not a readable PEM|holds a|refusing to overwrite|not a valid configuration/.test(e.message)
    ) {
      process.stderr.write(`detour: ${e.message}\n`);
      return EXIT_REFUSED;
    }
    throw e;
  }
}
