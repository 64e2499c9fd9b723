/**
 * The real captive-network probe: the check host looked up with the network's own resolvers (not the tunnel's),
 * and one plain HTTP GET of the check URL to the address found, redirects not followed, at most a few kilobytes
 * read. Both leave on the underlay, never into a tunnel (a full tunnel routes everything there): their sockets are
 * bound to the address `path` gives for them (the platform's bindCaptiveCheck; captive-path.linux.ts says how that
 * holds whatever detourd's routes are), and the binding is released when each is done. detourd runs in its own
 * group, so the kill switch lets exactly this out while it blocks.
 */
import { isIP } from "node:net";
import { request } from "node:http";
import { Resolver } from "node:dns/promises";
import type { CheckAnswer } from "../core/captive.ts";
import type { CaptiveTarget } from "../../native/platform/platform.ts";
import type { CaptiveProbe } from "./captive.ts";

/** A portal's page is small; anything beyond this is not read (only its presence matters). */
const MAX_BODY_BYTES = 16 * 1024;
const DNS_PORT = 53;

/** Binds the check's sockets to the underlay toward these destinations until released. */
export interface UnderlayPath {
  bind(targets: readonly CaptiveTarget[]): Promise<{ source: string; release(): Promise<void> }>;
}

/** Runs `f` with the check bound to the underlay toward `targets` (unbound without a path), then releases it. */
async function bound<T>(
  path: UnderlayPath | undefined,
  targets: readonly CaptiveTarget[],
  f: (source: string | undefined) => Promise<T>,
): Promise<T> {
  if (path === undefined || targets.length === 0) return f(undefined);
  const lease = await path.bind(targets);
  try {
    return await f(lease.source);
  } finally {
    await lease.release();
  }
}

export function networkCaptiveProbe(path?: UnderlayPath): CaptiveProbe {
  return {
    resolve(host, servers, timeoutMs) {
      const r = new Resolver({ timeout: timeoutMs, tries: 1 });
      // The network's resolvers over the underlay: one family at a time (the lookups leave from one source).
      const four = servers.filter((s) => isIP(s) === 4);
      const via = four.length > 0 ? four : servers.filter((s) => isIP(s) === 6);
      if (servers.length > 0) r.setServers(path === undefined ? [...servers] : via);
      const targets = via.flatMap((address) => [
        { address, protocol: "udp" as const, port: DNS_PORT },
        { address, protocol: "tcp" as const, port: DNS_PORT },
      ]);
      return bound(path, targets, async (source) => {
        if (source !== undefined) {
          if (four.length > 0) r.setLocalAddress(source);
          else r.setLocalAddress("0.0.0.0", source);
        }
        const [v4, v6] = await Promise.allSettled([r.resolve4(host), r.resolve6(host)]);
        return [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])];
      });
    },
    fetch(url, address, timeoutMs) {
      const port = url.port === "" ? 80 : Number(url.port);
      return bound(path, [{ address, protocol: "tcp", port }], (localAddress) =>
        get(url, address, port, localAddress, timeoutMs),
      );
    },
  };
}

/** One GET of `url` from `address`, from `localAddress` when given; redirects not followed. */
function get(
  url: URL,
  address: string,
  port: number,
  localAddress: string | undefined,
  timeoutMs: number,
): Promise<CheckAnswer> {
  return new Promise<CheckAnswer>((resolve, reject) => {
    const req = request({
      host: address,
      port,
      ...(localAddress === undefined ? {} : { localAddress }),
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
}
