import assert from "node:assert/strict";
import { test } from "node:test";
import { status } from "./fixtures.test-helper.ts";
import {
  TRAY_STATES,
  trayIconFile,
  trayMenu,
  trayState,
  traySentence,
  trayTooltip,
  type MenuItemModel,
} from "./tray-model.ts";

test("connected-says-where-over-what-and-how-fast", () => {
  assert.equal(traySentence(status()), "Connected to Frankfurt over WireGuard, 18 ms");
  assert.equal(trayState(status()), "connected");
});

test("a-lossy-or-slow-tunnel-is-degraded-and-says-why", () => {
  const lossy = status({
    telemetry: { rttMs: 20, rttP95Ms: 30, jitterMs: 2, lossPct: 12.4, samples: 100, export: null, reachability: [] },
  });
  assert.equal(trayState(lossy), "degraded");
  assert.equal(traySentence(lossy), "Connected to Frankfurt over WireGuard, but slow (12 % loss)");
  const brownout = status({ summary: "Connected to Frankfurt over WireGuard, degraded (loss 30 %)" });
  assert.equal(trayState(brownout), "degraded");
  assert.equal(traySentence(brownout), "Connected to Frankfurt over WireGuard, degraded (loss 30 %)");
});

test("reconnecting-uses-the-daemons-sentence-naming-the-cause-and-the-next-gateway", () => {
  const s = status({ state: "failing-over", summary: "Reconnecting: Frankfurt stopped answering, trying Paris" });
  assert.equal(traySentence(s), "Reconnecting: Frankfurt stopped answering, trying Paris");
  assert.equal(trayState(s), "connecting");
});

test("each-state-has-its-icon-and-a-missing-daemon-is-an-error", () => {
  assert.equal(trayState(status({ state: "disconnected", gateway: null, protocol: null })), "disconnected");
  assert.equal(trayState(status({ state: "racing" })), "connecting");
  assert.equal(
    trayState(status({ state: "error", error: { reason: "No gateway reachable", nextRetryAt: 5 } })),
    "error",
  );
  assert.equal(trayState(null), "error");
  assert.equal(traySentence(null), "Detour's service is not running");
  assert.match(traySentence(null, { code: "permission-denied", message: "" }), /not allowed/);
  assert.deepEqual(TRAY_STATES.map(trayIconFile), [
    "disconnected.png",
    "connecting.png",
    "connected.png",
    "degraded.png",
    "error.png",
  ]);
});

test("the-tooltip-fits-windows-127-characters", () => {
  const long = status({
    state: "racing",
    summary: "Connecting: trying " + "gateway-with-a-long-name over WireGuard, ".repeat(8),
  });
  assert.ok(trayTooltip(long).length <= 127);
  assert.ok(trayTooltip(long).endsWith("..."));
});

function find(items: MenuItemModel[], label: string): MenuItemModel | undefined {
  for (const i of items) {
    if ("label" in i && i.label === label) return i;
    if (i.kind === "submenu") {
      const f = find(i.items, label);
      if (f !== undefined) return f;
    }
  }
  return undefined;
}

test("the-menu-offers-what-the-state-allows-and-marks-the-gateway-choice", () => {
  const m = trayMenu(status({ gatewayChoice: "Paris" }));
  assert.deepEqual(m[0], { kind: "label", label: "Connected to Frankfurt over WireGuard, 18 ms" });
  assert.equal((find(m, "Connect") as { enabled: boolean }).enabled, false);
  assert.equal((find(m, "Disconnect") as { enabled: boolean }).enabled, true);
  assert.deepEqual(find(m, "Paris (eu-west)"), {
    kind: "radio",
    label: "Paris (eu-west)",
    checked: true,
    enabled: true,
    action: { type: "set-gateway", gateway: "Paris" },
  });
  assert.equal((find(m, "Automatic (best gateway)") as { checked: boolean }).checked, false);
  for (const label of ["Open Detour", "Create diagnostic bundle", "Quit Detour"]) assert.ok(find(m, label), label);
  const idle = trayMenu(status({ state: "disconnected", gateway: null, protocol: null }));
  assert.equal((find(idle, "Connect") as { enabled: boolean }).enabled, true);
  assert.equal((find(idle, "Disconnect") as { enabled: boolean }).enabled, false);
  const down = trayMenu(null);
  assert.equal((find(down, "Connect") as { enabled: boolean }).enabled, false);
  assert.equal((find(down, "Quit Detour") as { enabled: boolean }).enabled, true);
});

const TRUSTED = {
  configured: true,
  policy: "disconnect" as const,
  trusted: true,
  rule: "office",
  reason: 'trusted network "office": DNS matches and 192.168.50.5:443 answered with a pinned key',
  checkedAt: 1,
  heldDown: true,
  alwaysOn: true,
  allowDisconnect: true,
};

test("on-a-trusted-network-the-tray-says-which-rule-keeps-detour-disconnected", () => {
  const s = status({ state: "disconnected", gateway: null, protocol: null, summary: "Disconnected", trusted: TRUSTED });
  assert.equal(traySentence(s), "On trusted network office: Detour stays disconnected here.");
  assert.equal(trayState(s), "disconnected");
});

test("always-on-greys-the-disconnect-item-and-says-why", () => {
  const m = trayMenu(status({ trusted: { ...TRUSTED, trusted: false, rule: null, allowDisconnect: false } }));
  assert.deepEqual(find(m, "Disconnect (not allowed by policy)"), {
    kind: "action",
    label: "Disconnect (not allowed by policy)",
    enabled: false,
    action: { type: "disconnect" },
  });
  assert.equal(find(m, "Disconnect"), undefined);
});

test("waiting-for-a-network-has-its-own-sentence-the-idle-icon-and-disconnect-in-the-menu", () => {
  const s = status({
    state: "waiting-for-network",
    gateway: null,
    protocol: null,
    summary: "Waiting for a network: no route to any gateway",
  });
  assert.equal(trayState(s), "disconnected", "nothing is wrong with Detour: not the error icon");
  assert.equal(traySentence(s), "Waiting for a network: Detour connects by itself when one is back");
  const disconnect = find(trayMenu(s), "Disconnect");
  assert.ok(disconnect?.kind === "action" && disconnect.enabled, "the user can stop waiting");
  // No Connect storm: a connect while offline does nothing detourd is not already doing.
  const connect = find(trayMenu(s), "Connect (connects by itself when a network is back)");
  assert.ok(connect?.kind === "action" && !connect.enabled, "Connect is greyed and says why");
});

test("on-a-trusted-network-connect-is-greyed-unless-policy-allows-connecting-there", () => {
  const down = status({
    state: "disconnected",
    gateway: null,
    protocol: null,
    summary: "Disconnected",
    trusted: TRUSTED,
  });
  const greyed = find(trayMenu(down), "Connect (not on a trusted network)");
  assert.ok(greyed?.kind === "action" && !greyed.enabled, "detourd would refuse the connect: the item says why");
  assert.equal(find(trayMenu(down), "Connect"), undefined);
  const allowed = trayMenu({ ...down, trusted: { ...TRUSTED, policy: "connect" } });
  const anyway = find(allowed, "Connect anyway");
  assert.ok(anyway?.kind === "action" && anyway.enabled);
});

test("a-captive-network-says-sign-in-and-offers-the-sign-in-page", () => {
  const captive = status({
    state: "error",
    gateway: null,
    protocol: null,
    summary: "No gateway reachable",
    captive: {
      state: "sign-in-required",
      reason: "the check URL was redirected to http://198.18.205.1/signin",
      portalUrl: "http://198.18.205.1/signin",
      checkedAt: 1,
      checks: 1,
      exception: {
        state: "open",
        openedAt: 1,
        closesAt: 300_001,
        portalAddresses: ["198.18.205.1"],
        resolvers: ["198.18.53.2"],
        closedReason: null,
        opened: 1,
      },
    },
  });
  assert.match(traySentence(captive), /^Sign in to this network: the check URL was redirected/);
  const item = trayMenu(captive).find((m) => m.kind === "action" && m.label === "Open sign-in page");
  assert.deepEqual(item, {
    kind: "action",
    label: "Open sign-in page",
    enabled: true,
    action: { type: "open-sign-in", url: "http://198.18.205.1/signin" },
  });
  assert.ok(
    find(
      trayMenu(captive, null, (ms) => `T${String(ms)}`),
      "Sign-in allowed until T300001",
    ),
    "the menu says until when the kill switch lets the sign-in through",
  );
  assert.equal(
    trayMenu(status()).some((m) => m.kind === "action" && m.label === "Open sign-in page"),
    false,
    "no sign-in item on an open network",
  );
});
