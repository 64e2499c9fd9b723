import assert from "node:assert/strict";
import { test } from "node:test";
import {
  base64ToHex,
  isPublicIpv4,
  isPublicIpv6,
  Redactor,
  redactUrlCredentials,
  redactUrlsDeep,
  secretEnvValues,
} from "./redact.ts";

const WG_KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

test("wireguard-private-keys-are-removed-in-base64-and-uapi-hex", () => {
  const hex = base64ToHex(WG_KEY);
  assert.ok(hex !== null && /^[0-9a-f]{64}$/.test(hex));
  const r = new Redactor();
  const out = r.text(`PrivateKey = ${WG_KEY}\nprivate_key=${hex}\npublic_key=${"ab".repeat(32)}\n`);
  assert.ok(!out.includes(WG_KEY) && !out.includes(hex), out);
  assert.ok(out.includes(`public_key=${"ab".repeat(32)}`), "public keys stay");
  assert.equal(r.report().removed["private-key"], 2);
});

test("a-known-secret-is-removed-also-in-its-hex-form-and-anywhere-in-text", () => {
  const hex = base64ToHex(WG_KEY) ?? "";
  const r = new Redactor({ knownSecrets: [WG_KEY, "hunter2-is-long"] });
  const out = r.text(`dump ${hex.toUpperCase()} and the word hunter2-is-long in a sentence`);
  assert.ok(!out.toLowerCase().includes(hex) && !out.includes("hunter2-is-long"), out);
  assert.equal(r.report().removed["known-secret"], 2);
});

test("passwords-psks-cookies-and-tokens-are-removed-with-their-context-kept", () => {
  const r = new Redactor();
  const out = r.text(
    [
      "password=Sup3rS3cret",
      "secret = 0sIkePsk123",
      "Set-Cookie: webvpn=ABCDEF0123456789@12345@6789; Secure",
      "COOKIE='3C0FFEE0123'",
      "authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
      "refresh_token=tok_abcdef123456",
    ].join("\n"),
  );
  for (const s of [
    "Sup3rS3cret",
    "0sIkePsk123",
    "ABCDEF0123456789",
    "3C0FFEE0123",
    "eyJhbGciOiJIUzI1NiJ9",
    "tok_abcdef123456",
  ])
    assert.ok(!out.includes(s), `${s} removed:\n${out}`);
  assert.match(out, /password=\[removed:password\]/);
  const rep = r.report().removed;
  assert.ok(rep.password >= 1 && rep["preshared-key"] >= 1 && rep.cookie >= 2 && rep.token >= 2, JSON.stringify(rep));
});

test("json-fields-named-like-secrets-lose-their-values-but-secret-refs-and-public-keys-stay", () => {
  const r = new Redactor();
  const out = r.json({
    identity: { wireguard: { privateKey: { file: "/etc/detour/wg.key" } } },
    token: "abc",
    apiKey: "k-123",
    publicKey: WG_KEY,
    nested: [{ cookie: "c" }],
  }) as Record<string, unknown>;
  assert.deepEqual(out.identity, { wireguard: { privateKey: { file: "/etc/detour/wg.key" } } });
  assert.equal(out.token, "[removed:secret-field]");
  assert.equal(out.apiKey, "[removed:secret-field]");
  assert.equal(out.publicKey, WG_KEY);
  assert.deepEqual(out.nested, [{ cookie: "[removed:secret-field]" }]);
});

test("pseudonyms-are-consistent-per-value-across-texts", () => {
  const r = new Redactor({ userNames: ["alice", "bob", "root"] });
  const a = r.text("alice logged in from 8.8.8.8 with /home/alice/.config, bob from 1.1.1.1");
  const b = r.text("again 8.8.8.8 for alice; /root/x and 198.18.1.2 and 10.0.0.1 and 203.0.113.7");
  assert.equal(a, "user-1 logged in from ip-1 with /home/user-1/.config, user-2 from ip-2");
  assert.equal(b, "again ip-1 for user-1; /home/user-root/x and 198.18.1.2 and 10.0.0.1 and 203.0.113.7");
  const rep = r.report();
  assert.equal(rep.distinct["public-ip"], 2);
  assert.equal(rep.pseudonymised["public-ip"], 3);
  assert.equal(rep.pseudonymised["home-path"], 2);
});

test("address-classes-public-or-not", () => {
  for (const ip of [
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "198.18.0.2",
    "198.19.255.1",
    "127.0.0.1",
    "169.254.1.1",
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "224.0.0.1",
  ])
    assert.equal(isPublicIpv4(ip), false, ip);
  for (const ip of ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "198.20.0.1"])
    assert.equal(isPublicIpv4(ip), true, ip);
  assert.equal(isPublicIpv6("2a00:1450:4001:81b::200e"), true);
  for (const ip of ["2001:db8::1", "fe80::1", "fd00::1", "::1"]) assert.equal(isPublicIpv6(ip), false, ip);
  const r = new Redactor();
  assert.equal(
    r.text("v6 2a00:1450:4001:81b::200e at 08:06:13 mac 52:54:00:12:34:56"),
    "v6 ip-1 at 08:06:13 mac 52:54:00:12:34:56",
  );
});

test("secret-looking-environment-values-are-collected", () => {
  assert.deepEqual(
    secretEnvValues({ PATH: "/usr/bin", DETOUR_API_TOKEN: "t0ken-value", MY_PASSWORD: "pw", HOME: "/root" }),
    ["t0ken-value", "pw"],
  );
});

test("credentials-in-any-url-are-redacted-user-info-and-signed-or-token-query-values", () => {
  const cases: [string, string][] = [
    [
      "fetch https://alice:hunter2@policy.example/p.json failed",
      "fetch https://[redacted]@policy.example/p.json failed",
    ],
    ["url:https://tok3n@policy.example/p.json", "url:https://[redacted]@policy.example/p.json"],
    [
      "https://b.s3.amazonaws.com/p.json?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA123%2F2026&X-Amz-Signature=abcdef0123&X-Amz-Security-Token=Fwo",
      "https://b.s3.amazonaws.com/p.json?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=[redacted]&X-Amz-Signature=[redacted]&X-Amz-Security-Token=[redacted]",
    ],
    [
      '"https://acct.blob.core.windows.net/c/p.json?sv=2024&sp=r&sig=Zm9v%3D"',
      '"https://acct.blob.core.windows.net/c/p.json?sv=2024&sp=r&sig=[redacted]"',
    ],
    [
      "http://p.example/x?token=ab&key=k&api_key=z&access_token=q&page=2#frag",
      "http://p.example/x?token=[redacted]&key=[redacted]&api_key=[redacted]&access_token=[redacted]&page=2#frag",
    ],
    ["no url here: token-ish words stay", "no url here: token-ish words stay"],
    ["https://policy.example/p.json?version=3", "https://policy.example/p.json?version=3"],
  ];
  for (const [input, want] of cases) assert.equal(redactUrlCredentials(input), want);
  const r = new Redactor();
  const out = r.text("GET https://u:p@x.example/a?sig=s3cr3t done");
  assert.equal(out, "GET https://[redacted]@x.example/a?sig=[redacted] done");
  assert.equal(r.report().removed.token, 2, "bundles count them as tokens");
});

test("short-known-secrets-are-removed-as-whole-words-and-short-token-values-too", () => {
  const r = new Redactor({ knownSecrets: ["4711", "pw9"] });
  const out = r.text("pin 4711 given; serial 47110 and t=14711 stay; pw9 was typed; token=ab psk: x1");
  assert.equal(
    out,
    "pin [removed:known-secret] given; serial 47110 and t=14711 stay; [removed:known-secret] was typed; token=[removed:token] psk: [removed:preshared-key]",
  );
});

test("url-credentials-are-redacted-in-every-string-of-a-json-value-and-nothing-else-changes", () => {
  const value = {
    telemetry: {
      export: { endpoint: "https://c.example/v1?token=t0k", lastError: "POST https://u:p@c.example failed" },
    },
    list: ["https://x.example/?sig=zz", 3, null, true],
    ["https://k:v@key.example"]: "key",
    plain: "no url",
  };
  assert.deepEqual(redactUrlsDeep(value), {
    telemetry: {
      export: {
        endpoint: "https://c.example/v1?token=[redacted]",
        lastError: "POST https://[redacted]@c.example failed",
      },
    },
    list: ["https://x.example/?sig=[redacted]", 3, null, true],
    ["https://[redacted]@key.example"]: "key",
    plain: "no url",
  });
});
