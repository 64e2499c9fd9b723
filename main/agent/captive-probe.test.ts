import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { networkCaptiveProbe } from "./captive-probe.ts";

test("the-check-reads-status-and-location-without-following-the-redirect-and-times-out-on-silence", async () => {
  const hosts: string[] = [];
  const server = createServer((req, res) => {
    hosts.push(req.headers.host ?? "");
    if (req.url === "/generate_204") res.writeHead(302, { location: "http://portal.example/signin" }).end("moved");
    else if (req.url === "/ok") res.writeHead(204).end();
    // /silent: never answers
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  try {
    const probe = networkCaptiveProbe();
    const redirect = await probe.fetch(new URL(`http://check.example:${String(port)}/generate_204`), "127.0.0.1", 2000);
    assert.deepEqual(redirect, { status: 302, location: "http://portal.example/signin", bodyBytes: 5 });
    assert.equal(hosts[0], `check.example:${String(port)}`, "the check host's name goes in the Host header");
    const ok = await probe.fetch(new URL(`http://check.example:${String(port)}/ok`), "127.0.0.1", 2000);
    assert.deepEqual(ok, { status: 204, location: null, bodyBytes: 0 });
    await assert.rejects(
      probe.fetch(new URL(`http://check.example:${String(port)}/silent`), "127.0.0.1", 200),
      /no answer within 200 ms/,
    );
  } finally {
    server.closeAllConnections();
    await new Promise<void>((r) =>
      server.close(() => {
        r();
      }),
    );
  }
});
