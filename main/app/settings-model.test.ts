import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_PREFERENCES, memoryStore, parseLocks, readPreferences, Settings } from "./settings-model.ts";

const LOCKS = parseLocks([{ key: "startAtLogin", value: true, managedBy: "Example Corp IT" }]).locks;

test("stored-preferences-are-checked-and-bad-values-fall-back-to-defaults", () => {
  assert.deepEqual(readPreferences({}), DEFAULT_PREFERENCES);
  assert.deepEqual(readPreferences({ theme: "dark", notifications: "loud", startAtLogin: "yes" }), {
    ...DEFAULT_PREFERENCES,
    theme: "dark",
  });
});

test("a-locked-setting-shows-the-policy-value-and-who-manages-it-and-refuses-changes", () => {
  const store = memoryStore({ startAtLogin: false });
  const s = new Settings(store, { locks: () => LOCKS, managed: () => null });
  const v = s.view().settings.find((x) => x.key === "startAtLogin");
  assert.deepEqual(v, { key: "startAtLogin", value: true, locked: true, managedBy: "Example Corp IT" });
  const r = s.set("startAtLogin", false);
  assert.equal(r.ok, false);
  assert.equal(r.code, "locked");
  assert.match(r.message, /managed by Example Corp IT/);
  assert.equal(store.read().startAtLogin, false, "the store is untouched");
  assert.equal(s.current().startAtLogin, true);
});

test("an-unlocked-setting-is-saved-and-a-bad-value-is-refused", () => {
  const store = memoryStore();
  const s = new Settings(store, { locks: () => LOCKS, managed: () => null });
  const ok = s.set("notifications", "errors");
  assert.ok(ok.ok);
  assert.equal(store.read().notifications, "errors");
  const bad = s.set("theme", "neon");
  assert.equal(!bad.ok && bad.code, "invalid");
});

test("a-policy-lock-that-does-not-fit-its-key-is-dropped-with-a-reason", () => {
  const r = parseLocks([
    { key: "theme", value: "neon", managedBy: "IT" },
    { key: "nope", value: 1, managedBy: "IT" },
    { key: "theme", value: "dark", managedBy: "IT" },
    { key: "theme", value: "light", managedBy: "IT" },
  ]);
  assert.deepEqual(r.locks, [{ key: "theme", value: "dark", managedBy: "IT" }]);
  assert.equal(r.problems.length, 3);
  assert.deepEqual(parseLocks({}).problems, ["expected a list of locks"]);
});
