/** detourd refuses to start on a bad configuration and says exactly what is wrong, before opening any socket. */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

const root = join(import.meta.dirname, "..", "..");
const dir = mkdtempSync(join(tmpdir(), "detourd-test-"));
after(() => {
  rmSync(dir, { recursive: true, force: true });
});

function detourd(...args: string[]): { code: number | null; out: string; err: string } {
  // Never the host's resolv.conf or state folder, even if a refusal came too late.
  const safe = [
    "--resolv-conf",
    join(dir, "resolv.conf"),
    "--state-dir",
    join(dir, "state"),
    "--work-dir",
    join(dir, "work"),
    // A gid no file owns, and no group in /etc/group: the tests need not create one.
    "--own-group",
    "64950",
  ];
  const r = spawnSync(process.execPath, ["--import", "tsx", "main/agent/detourd.ts", ...safe, ...args], {
    cwd: root,
    encoding: "utf8",
    timeout: 30_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test("a-config-with-bad-fields-is-refused-naming-each-path-and-no-socket-appears", () => {
  const cfg = join(dir, "bad.json");
  const socket = join(dir, "d.sock");
  writeFileSync(
    cfg,
    JSON.stringify({
      version: 1,
      organisation: "x",
      identity: {},
      gateways: [{ name: "GW 1", hostname: "gw1.example.com", priority: 1, region: "r", protocols: {} }],
      protectedRoutes: ["10.0.0.0/33"],
      probe: { address: "10.0.0.1" },
    }),
  );
  const r = detourd("--config", cfg, "--socket", socket);
  assert.equal(r.code, 2);
  assert.match(r.err, /gateways\[0\]\.name/);
  assert.match(r.err, /gateways\[0\]\.protocols: a gateway needs at least one protocol/);
  assert.match(r.err, /protectedRoutes\[0\]/);
  assert.equal(existsSync(socket), false, "a bad file never starts a half-configured daemon");
});

test("a-missing-or-unparsable-config-file-is-refused-clearly", () => {
  assert.match(detourd("--config", join(dir, "nope.json")).err, /cannot read .*nope\.json: ENOENT/);
  const cfg = join(dir, "broken.json");
  writeFileSync(cfg, "{ not json");
  const r = detourd("--config", cfg);
  assert.equal(r.code, 2);
  assert.match(r.err, /not valid JSON/);
  assert.match(detourd().err, /--config is required/);
});

test("help-and-version-answer-without-a-config-and-exit-0", () => {
  const help = detourd("--help");
  assert.equal(help.code, 0, help.err);
  assert.match(help.out, /^usage: detourd --config <file>/);
  const version = detourd("--version");
  assert.equal(version.code, 0, version.err);
  assert.match(version.out, /^detourd \d+\.\d+\.\d+\n$/);
});

test("a-secret-file-readable-by-others-is-refused", () => {
  const key = join(dir, "wg.key");
  writeFileSync(key, "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=\n", { mode: 0o644 });
  const cfg = join(dir, "loose.json");
  writeFileSync(
    cfg,
    JSON.stringify({
      version: 1,
      organisation: "x",
      identity: { wireguard: { privateKey: { file: key } } },
      gateways: [
        {
          name: "gw1",
          hostname: "gw1.example.com",
          address: "198.18.1.2",
          priority: 1,
          region: "r",
          protocols: {
            wireguard: { publicKey: "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=", tunnelAddress: "198.19.11.2/32" },
          },
        },
      ],
      protectedRoutes: ["198.19.0.0/24"],
      probe: { address: "198.19.0.1" },
    }),
  );
  const r = detourd("--config", cfg, "--socket", join(dir, "x.sock"));
  assert.equal(r.code, 2);
  assert.match(r.err, /identity\.wireguard\.privateKey: .* open to group or others/);
  assert.doesNotMatch(r.err, /GEoB0ZX0nQ4f\/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=.*readable/);
});

test("an-own-group-that-cannot-tell-detourds-traffic-apart-is-refused-before-anything-starts", () => {
  const socket = join(dir, "g.sock");
  const key = join(dir, "wg-ok.key");
  writeFileSync(key, "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=\n", { mode: 0o600 });
  const cfg = join(dir, "ok.json");
  writeFileSync(
    cfg,
    JSON.stringify({
      version: 1,
      organisation: "x",
      identity: { wireguard: { privateKey: { file: key } } },
      gateways: [
        {
          name: "gw1",
          hostname: "gw1.example.com",
          address: "198.18.1.2",
          priority: 1,
          region: "r",
          protocols: {
            wireguard: { publicKey: "GEoB0ZX0nQ4f/2QzWxtV0UzwSYjHoGdV5ok8JXEQmGw=", tunnelAddress: "198.19.11.2/32" },
          },
        },
      ],
      protectedRoutes: ["198.19.0.0/24"],
      probe: { address: "198.19.0.1" },
    }),
  );
  const unknown = detourd("--config", cfg, "--socket", socket, "--own-group", "no-such-group-x");
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /--own-group: no group "no-such-group-x" in \/etc\/group/);
  const root0 = detourd("--config", cfg, "--socket", socket, "--own-group", "0");
  assert.equal(root0.code, 2);
  assert.match(root0.err, /--own-group: 0 \(gid 0\) cannot tell detourd's traffic from other processes/);
  assert.equal(existsSync(socket), false);
});

test("the-policy-url-on-the-command-line-is-refused-pointing-to-a-file", () => {
  const r = detourd("--policy-url", "https://alice:hunter2@policy.example/p.json", "--config", join(dir, "x.json"));
  assert.equal(r.code, 2);
  assert.match(r.err, /--policy-url is refused: .*\/proc\/<pid>\/cmdline.*--policy-url-file <file>/);
  assert.doesNotMatch(r.err, /hunter2/);
});
