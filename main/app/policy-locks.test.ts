import assert from "node:assert/strict";
import { test } from "node:test";
import { DaemonPolicyLocks, locksFromPrefs } from "./policy-locks.ts";
import { memoryStore, Settings } from "./settings-model.ts";

const PREFS = {
  organisation: "Example Corp",
  entries: [
    { key: "autoConnect" as const, value: true, source: "policy" as const, locked: true, scope: "user" as const },
    { key: "lockdown" as const, value: true, source: "policy" as const, locked: true, scope: "user" as const },
    {
      key: "race.staggerMs" as const,
      value: 250,
      source: "default" as const,
      locked: false,
      scope: "managed" as const,
    },
  ],
};

test("a-policy-locked-autoConnect-locks-connect-on-launch-with-who-manages-it", () => {
  assert.deepEqual(locksFromPrefs(PREFS), [
    { key: "connectOnLaunch", value: true, managedBy: "Example Corp's policy" },
  ]);
  const unlocked = {
    organisation: null,
    entries: [
      { key: "autoConnect" as const, value: false, source: "user" as const, locked: false, scope: "user" as const },
    ],
  };
  assert.deepEqual(locksFromPrefs(unlocked), []);
  const src = new DaemonPolicyLocks();
  src.update(PREFS);
  assert.equal(src.locks().length, 1);
  src.update(null);
  assert.deepEqual(src.locks(), []);
});

test("settings-show-the-daemon-keys-the-policy-sets-read-only-and-none-when-detourd-reports-no-prefs", () => {
  const src = new DaemonPolicyLocks();
  const settings = new Settings(memoryStore({ connectOnLaunch: false }), src);
  assert.equal(settings.view().managed, null, "before detourd answers");
  src.update(PREFS);
  const v = settings.view();
  assert.deepEqual(v.managed, {
    managedBy: "Example Corp's policy",
    settings: [
      { key: "autoConnect", label: "Connect when the Detour service starts", value: "On" },
      { key: "lockdown", label: "Block traffic while disconnected (lockdown)", value: "On" },
    ],
  });
  assert.deepEqual(
    v.settings.find((s) => s.key === "connectOnLaunch"),
    { key: "connectOnLaunch", value: true, locked: true, managedBy: "Example Corp's policy" },
  );
  const refused = settings.set("connectOnLaunch", false);
  assert.equal(!refused.ok && refused.code, "locked");
  src.update(null);
  assert.equal(settings.view().managed, null);
});
