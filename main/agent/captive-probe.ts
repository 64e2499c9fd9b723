/**
 * The real captive-network probe: the check host looked up with the network's own resolvers (not the tunnel's),
 * and one plain HTTP GET of the check URL to the address found, redirects not followed, at most a few kilobytes
 * read. detourd runs in its own group, so the kill switch lets exactly this out while it blocks.
 */
import { request } from "node:http";
import { Resolver } from "node:dns/promises";
import type { CheckAnswer } from "../core/captive.ts";
import type { CaptiveProbe } from "./captive.ts";

/** A portal's page is small; anything beyond this is not read (only its presence matters). */
const MAX_BODY_BYTES = 16 * 1024;

export function networkCaptiveProbe(): CaptiveProbe {
  return {
    async resolve(host, servers, timeoutMs) {
      const r = new Resolver({ timeout: timeoutMs, tries: 1 });
      if (servers.length > 0) r.setServers([...servers]);
      const [v4, v6] = await Promise.allSettled([r.resolve4(host), r.resolve6(host)]);
      return [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])];
    },
    fetch(url, address, timeoutMs) {
      return new Promise<CheckAnswer>((resolve, reject) => {
        const req = request({
          host: address,
          port: url.port === "" ? 80 : Number(url.port),
          path: `${url.pathname}${url.search}`,
          method: "GET",
          headers: { Host: url.host, "User-Agent": "detourd captive check", Connection: "close" },
          timeout: timeoutMs,
        });
        const timer = setTimeout(() => req.destroy(new Error(`no answer within ${String(timeoutMs)} ms`)), timeoutMs);
        req.on("timeout", () => req.destroy(new Error(`no answer within ${String(timeoutMs)} ms`)));
        req.on("error", (err) => {
          clearTimeout(timer);
          reject(err);
        });
        req.on("response", (res) => {
          let bodyBytes = 0;
          const done = (): void => {
            clearTimeout(timer);
            const loc = res.headers.location;
            resolve({ status: res.statusCode ?? 0, location: loc ?? null, bodyBytes });
            res.destroy();
          };
          res.on("data", (chunk: Buffer) => {
            bodyBytes += chunk.length;
            if (bodyBytes >= MAX_BODY_BYTES) done();
          });
          res.on("end", done);
          res.on("error", done);
        });
        req.end();
      });
    },
  };
}
