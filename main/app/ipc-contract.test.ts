import assert from "node:assert/strict";
import { test } from "node:test";
import { APP_CHANNELS } from "../core/protocol/app-api.ts";
import { callForChannel, invokeCall, validateCall, type AppHostApi } from "./ipc-contract.ts";
import { memoryStore, Settings } from "./settings-model.ts";

function fakeHost(calls: string[]): AppHostApi {
  const settings = new Settings(memoryStore(), {
    locks: () => [{ key: "theme", value: "dark", managedBy: "IT" }],
    managed: () => null,
  });
  const ok = <T>(name: string, value: T) => {
    calls.push(name);
    return Promise.resolve({ ok: true as const, value });
  };
  return {
    status: () => Promise.reject(new Error("daemon exploded")),
    gateways: () => ok("gateways", { candidates: [] }),
    connect: () => ok("connect", null),
    disconnect: () => ok("disconnect", null),
    history: () => ok("history", []),
    setGateway: (g) => ok(`setGateway ${String(g)}`, g),
    settings: () => ok("settings", settings.view()),
    setSetting: (k, v) => Promise.resolve(settings.set(k, v)),
    createDiagnostics: () => ok("createDiagnostics", { path: "/tmp/x", bytes: 1, createdAt: 1 }),
    uploadDiagnostics: (p) => ok(`upload ${p}`, { reference: "R" }),
    openSignIn: () => ok("openSignIn", null),
  };
}

test("every-channel-maps-to-its-call-and-nothing-else-does", () => {
  for (const [call, channel] of Object.entries(APP_CHANNELS)) assert.equal(callForChannel(channel), call);
  assert.equal(callForChannel("detour:shell"), null);
});

test("arguments-are-checked-before-anything-runs", async () => {
  const calls: string[] = [];
  const host = fakeHost(calls);
  assert.deepEqual(await invokeCall(host, "setGateway", ["gw2"]), { ok: true, value: "gw2" });
  assert.deepEqual(await invokeCall(host, "setGateway", [null]), { ok: true, value: null });
  for (const [call, args] of [
    ["setGateway", []],
    ["setGateway", [42]],
    ["setGateway", ["gw2", "extra"]],
    ["connect", ["now"]],
    ["uploadDiagnostics", [""]],
    ["openSignIn", ["http://attacker.example/"]],
    ["setSetting", ["rootShell", true]],
    ["setSetting", ["startAtLogin", "yes"]],
    ["__proto__", []],
    ["toString", []],
    [42, []],
  ] as [unknown, unknown][]) {
    const r = await invokeCall(host, call, args);
    assert.equal(r.ok, false, JSON.stringify([call, args]));
    assert.equal(r.code, "invalid");
  }
  assert.deepEqual(calls, ["setGateway gw2", "setGateway null"], "no invalid call reached the host");
});

test("a-locked-setting-is-refused-through-the-contract-too", async () => {
  const r = await invokeCall(fakeHost([]), "setSetting", ["theme", "light"]);
  assert.equal(!r.ok && r.code, "locked");
});

test("a-host-that-throws-becomes-an-internal-failure-value", async () => {
  assert.deepEqual(await invokeCall(fakeHost([]), "status", []), {
    ok: false,
    code: "internal",
    message: "daemon exploded",
  });
  assert.equal(validateCall("settings", []).ok, true);
});
