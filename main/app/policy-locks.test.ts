import assert from "node:assert/strict";
import { test } from "node:test";
import { DaemonPolicyLocks, locksFromPrefs } from "./policy-locks.ts";

test("a-policy-locked-autoConnect-locks-connect-on-launch-with-who-manages-it", () => {
  const prefs = {
    organisation: "Example Corp",
    entries: [
      { key: "autoConnect" as const, value: true, source: "policy" as const, locked: true, scope: "user" as const },
      { key: "lockdown" as const, value: true, source: "policy" as const, locked: true, scope: "user" as const },
    ],
  };
  assert.deepEqual(locksFromPrefs(prefs), [{ key: "connectOnLaunch", value: true, managedBy: "Example Corp's policy" }]);
  const unlocked = { organisation: null, entries: [{ key: "autoConnect" as const, value: false, source: "user" as const, locked: false, scope: "user" as const }] };
  assert.deepEqual(locksFromPrefs(unlocked), []);
  const src = new DaemonPolicyLocks();
  src.update(prefs);
  assert.equal(src.locks().length, 1);
  src.update(null);
  assert.deepEqual(src.locks(), []);
});
