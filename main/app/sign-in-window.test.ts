import assert from "node:assert/strict";
import { test } from "node:test";
import { SIGN_IN_PARTITION, SignInNavigation, signInWindowOptions, webOrigin } from "./sign-in-window.ts";

test("the-sign-in-window-has-no-preload-a-sandbox-and-a-session-of-its-own", () => {
  const o = signInWindowOptions();
  assert.equal("preload" in o.webPreferences, false, "no bridge to the app's API");
  assert.equal(o.webPreferences.sandbox, true);
  assert.equal(o.webPreferences.contextIsolation, true);
  assert.equal(o.webPreferences.nodeIntegration, false);
  assert.equal(o.webPreferences.webviewTag, false);
  assert.equal(o.webPreferences.partition, SIGN_IN_PARTITION);
  assert.equal(SIGN_IN_PARTITION.startsWith("persist:"), false, "nothing the portal sets outlives the window");
});

test("navigation-stays-on-the-portal-and-where-the-portal-redirected", () => {
  const nav = SignInNavigation.for("http://198.18.205.1/signin");
  assert.ok(nav !== null);
  assert.equal(nav.mayNavigate("http://198.18.205.1/terms"), true);
  assert.equal(nav.mayNavigate("https://evil.example/"), false, "a link elsewhere is refused");
  assert.equal(nav.mayNavigate("file:///etc/passwd"), false);
  assert.equal(nav.mayNavigate("javascript:alert(1)"), false);
  assert.equal(nav.followRedirect("http://198.18.205.1/signin", "https://pay.hotel.example/checkout"), true);
  assert.equal(nav.mayNavigate("https://pay.hotel.example/done"), true, "the redirect's origin is the portal's too");
  assert.equal(
    nav.followRedirect("https://evil.example/", "https://more.example/"),
    false,
    "only from an allowed page",
  );
  assert.equal(nav.followRedirect(null, "file:///etc/passwd"), false);
  assert.deepEqual(nav.origins(), ["http://198.18.205.1", "https://pay.hotel.example"]);
});

test("no-window-for-a-portal-url-that-is-not-http", () => {
  assert.equal(SignInNavigation.for("javascript:alert(1)"), null);
  assert.equal(SignInNavigation.for("file:///etc/passwd"), null);
  assert.equal(webOrigin("http://user:pw@portal.example/"), null);
});
