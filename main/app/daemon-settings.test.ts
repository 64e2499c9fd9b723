import assert from "node:assert/strict";
import { test } from "node:test";
import { SETTING_KEY_LIST } from "../core/policy/settings.ts";
import type { PrefEntry } from "../core/policy/status.ts";
import { DAEMON_SETTINGS, daemonValueText, managedSection, millis } from "./daemon-settings.ts";

const entry = (key: PrefEntry["key"], value: unknown, locked: boolean): PrefEntry => ({
  key,
  value,
  source: locked ? "policy" : "default",
  locked,
  scope: "managed",
});

test("every-daemon-setting-has-its-own-human-label", () => {
  const labels = SETTING_KEY_LIST.map((k) => DAEMON_SETTINGS[k].label);
  assert.equal(new Set(labels).size, SETTING_KEY_LIST.length, "no two keys share a label");
  for (const [i, l] of labels.entries())
    assert.doesNotMatch(l, /[.A-Z]{2}|Ms$/, `${String(SETTING_KEY_LIST[i])} reads like a key: ${l}`);
});

test("enforced-values-read-the-way-a-person-says-them", () => {
  assert.equal(daemonValueText("standby.mode", "on"), "On");
  assert.equal(daemonValueText("lockdown", false), "Off");
  assert.equal(daemonValueText("autoConnect", true), "On");
  assert.equal(daemonValueText("preferredGateway", null), "Automatic");
  assert.equal(daemonValueText("allowedGateways", ["gw2", "gw3"]), "gw2, gw3");
  assert.equal(
    daemonValueText("allowedProtocols", ["wireguard", "ikev2", "anyconnect"]),
    "WireGuard, IKEv2, AnyConnect",
  );
  assert.equal(daemonValueText("race.order", ["anyconnect-tls", "wireguard"]), "AnyConnect (TLS), WireGuard");
  assert.equal(daemonValueText("race.staggerMs", 250), "250 ms");
  assert.equal(daemonValueText("retry.maxMs", 120_000), "2 min");
  assert.equal(daemonValueText("race.legDeadlineMs", 1500), "1.5 s");
  assert.equal(daemonValueText("race.maxGateways", 3), "3");
  assert.equal(daemonValueText("telemetry.endpoint", "https://collector.example.com"), "https://collector.example.com");
  assert.equal(millis(5000), "5 s");
});

test("a-value-of-an-unexpected-type-is-shown-not-hidden", () => {
  assert.equal(daemonValueText("lockdown", "strict"), '"strict"');
  assert.equal(daemonValueText("race.staggerMs", { ms: 250 }), '{"ms":250}');
  assert.equal(daemonValueText("allowedGateways", null), "null");
});

test("the-managed-section-lists-every-key-the-policy-sets-and-who-manages-them", () => {
  const prefs = {
    organisation: "Example Corp",
    entries: [
      entry("autoConnect", true, true),
      entry("lockdown", false, false),
      entry("allowedProtocols", ["wireguard", "anyconnect"], true),
      entry("standby.mode", "on", true),
    ],
  };
  assert.deepEqual(managedSection(prefs), {
    managedBy: "Example Corp's policy",
    settings: [
      { key: "autoConnect", label: "Connect when the Detour service starts", value: "On" },
      { key: "allowedProtocols", label: "Allowed protocols", value: "WireGuard, AnyConnect" },
      { key: "standby.mode", label: "Warm standby", value: "On" },
    ],
  });
  assert.equal(
    managedSection({ organisation: null, entries: [entry("lockdown", true, false)] }),
    null,
    "no policy in force: no section",
  );
});
