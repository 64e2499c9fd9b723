/**
 * The loopback dev/test bridge: serves the renderer's static bundle to a browser and carries the page's API over
 * HTTP (calls) and a WebSocket (updates), so the very same UI runs outside Electron against a real detourd.
 *
 * It lives in main/app, not main/client, because it plays the Electron main process's part for a browser: it
 * hosts the page, runs the same AppHost and validates every call with the same ipc-contract. main/client stays
 * the plain socket client the CLI uses, without HTTP or WebSocket code.
 *
 * Who may use it: it listens on 127.0.0.1 only, and every request, the WebSocket upgrade included, must carry the
 * per-launch random token (Authorization: Bearer, the HttpOnly SameSite=Strict cookie set when the page is first
 * opened with ?token=, or ?token=), compared in constant time. The Host header must name the loopback address
 * (no DNS rebinding), a cross-origin Origin is refused, and calls must be JSON (no form posts from other sites).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { extname, join } from "node:path";
import { WebSocketServer, type WebSocket } from "ws";
import type { AppUpdate } from "../core/protocol/app-api.ts";
import { BodyTooLargeError, readBoundedBody } from "../shared/bounded-body.ts";
import { TimeoutError, withTimeout } from "../shared/with-timeout.ts";
import { invokeCall, type AppHostApi } from "./ipc-contract.ts";

/** Largest call body: a setting or a path is a few hundred bytes; 64 KiB bounds what a client can make us hold. */
const MAX_BODY_BYTES = 64 * 1024;
/** A local client sends its body at once; one that dribbles for 5 s is stuck or hostile. */
const BODY_TIMEOUT_MS = 5000;
/** Bytes queued to one WebSocket that it has not read: a stopped page is dropped rather than buffered forever. */
const MAX_WS_BUFFER_BYTES = 4 * 1024 * 1024;
const COOKIE = "detour-token";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".map": "application/json",
};

export interface BridgeHost extends AppHostApi {
  onUpdate(listener: (u: AppUpdate) => void): () => void;
}

export interface BridgeOptions {
  host: BridgeHost;
  /** The renderer's built bundle (index.html and its assets). */
  staticDir: string;
  /** 0 picks a free port. */
  port?: number;
  /** Fixed token (tests); random per launch by default. */
  token?: string;
}

export interface Bridge {
  /** The page's address with the token, to open in a browser. */
  url: string;
  origin: string;
  token: string;
  close(): Promise<void>;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

/** Constant-time comparison: both sides are hashed first, so neither the length nor a prefix leaks. */
export function tokenMatches(given: string | null, expected: string): boolean {
  if (given === null) return false;
  return timingSafeEqual(digest(given), digest(expected));
}

function cookieToken(header: string | undefined): string | null {
  for (const part of (header ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === COOKIE) return v.join("=");
  }
  return null;
}

/** The token a request carries, from the Authorization header, the cookie, or the query. */
export function requestToken(req: Pick<IncomingMessage, "headers" | "url">): string | null {
  const auth = req.headers.authorization;
  if (auth?.startsWith("Bearer ") === true) return auth.slice("Bearer ".length);
  const c = cookieToken(req.headers.cookie);
  if (c !== null) return c;
  return new URL(req.url ?? "/", "http://x").searchParams.get("token");
}

function loadStatic(dir: string): Map<string, Buffer> {
  const files = new Map<string, Buffer>();
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (e) {
    throw new Error(`the renderer bundle is missing at ${dir} (run npm run build:renderer): ${(e as Error).message}`, {
      cause: e,
    });
  }
  // Only the bundle's own top-level files are served, read once: no path from a request ever reaches the disk.
  for (const name of names)
    if (Object.hasOwn(TYPES, extname(name))) files.set(`/${name}`, readFileSync(join(dir, name)));
  if (!files.has("/index.html")) throw new Error(`no index.html in ${dir} (run npm run build:renderer)`);
  return files;
}

export async function startBridge(opts: BridgeOptions): Promise<Bridge> {
  const token = opts.token ?? randomBytes(32).toString("base64url");
  const files = loadStatic(opts.staticDir);
  let origin = "";
  let hostHeader = "";
  const sockets = new Set<WebSocket>();

  const headers = (type: string): Record<string, string> => ({
    "content-type": type,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ${origin.replace("http:", "ws:")}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
  });
  const deny = (res: ServerResponse, status: number, message: string): void => {
    res.writeHead(status, headers("text/plain; charset=utf-8")).end(`${message}\n`);
  };
  /** Loopback Host, no foreign Origin, the right token: the checks every request and upgrade passes. */
  const allowed = (req: IncomingMessage): { ok: true } | { ok: false; status: number; message: string } => {
    const host = req.headers.host ?? "";
    if (host !== hostHeader && host !== hostHeader.replace("127.0.0.1", "localhost"))
      return { ok: false, status: 421, message: "wrong host" };
    const o = req.headers.origin;
    if (o !== undefined && o !== origin && o !== origin.replace("127.0.0.1", "localhost"))
      return { ok: false, status: 403, message: "cross-origin requests are refused" };
    if (!tokenMatches(requestToken(req), token))
      return { ok: false, status: 401, message: "a valid token is required" };
    return { ok: true };
  };

  const api = async (req: IncomingMessage, res: ServerResponse, call: string): Promise<void> => {
    if (req.method !== "POST") {
      deny(res, 405, "calls are POST");
      return;
    }
    if (!(req.headers["content-type"] ?? "").startsWith("application/json")) {
      deny(res, 415, "calls are JSON");
      return;
    }
    let args: unknown;
    try {
      const body = (
        await withTimeout(readBoundedBody(req, MAX_BODY_BYTES), BODY_TIMEOUT_MS, "the call's body")
      ).toString("utf8");
      args = body === "" ? [] : ((JSON.parse(body) as { args?: unknown }).args ?? []);
    } catch (e) {
      // A client still dribbling its body after the timeout is stuck or hostile: it gets no answer.
      if (e instanceof TimeoutError) {
        req.destroy();
        return;
      }
      if (e instanceof BodyTooLargeError) res.setHeader("connection", "close");
      deny(res, e instanceof BodyTooLargeError ? 413 : 400, `bad body: ${(e as Error).message}`);
      return;
    }
    const result = await invokeCall(opts.host, call, args);
    res.writeHead(200, headers("application/json")).end(JSON.stringify(result));
  };

  const server: Server = createServer((req, res) => {
    const a = allowed(req);
    if (!a.ok) {
      deny(res, a.status, a.message);
      return;
    }
    const url = new URL(req.url ?? "/", origin);
    if (url.pathname.startsWith("/api/")) {
      void api(req, res, decodeURIComponent(url.pathname.slice("/api/".length))).catch((e: unknown) => {
        if (!res.headersSent) deny(res, 500, (e as Error).message);
      });
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      deny(res, 405, "only GET");
      return;
    }
    const path = url.pathname === "/" ? "/index.html" : url.pathname;
    const body = files.get(path);
    if (body === undefined) {
      deny(res, 404, "not found");
      return;
    }
    const h = headers(TYPES[extname(path)] ?? "application/octet-stream");
    // The page's later requests (scripts, calls, the WebSocket) carry the token in a cookie no script can read.
    if (path === "/index.html") h["set-cookie"] = `${COOKIE}=${token}; HttpOnly; SameSite=Strict; Path=/`;
    res.writeHead(200, h).end(req.method === "HEAD" ? undefined : body);
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 });
  server.on("upgrade", (req, socket, head) => {
    const a = allowed(req);
    if (!a.ok || new URL(req.url ?? "/", origin).pathname !== "/updates") {
      socket.end(`HTTP/1.1 ${a.ok ? 404 : a.status} ${a.ok ? "Not Found" : a.message}\r\nConnection: close\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws);
      const off = opts.host.onUpdate((u) => {
        if (ws.bufferedAmount > MAX_WS_BUFFER_BYTES) {
          ws.terminate();
          return;
        }
        ws.send(JSON.stringify(u));
      });
      ws.on("message", () => {
        ws.close(1008, "this socket only carries updates to the page");
      });
      ws.on("close", () => {
        off();
        sockets.delete(ws);
      });
      ws.on("error", () => {
        off();
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  origin = `http://127.0.0.1:${port}`;
  hostHeader = `127.0.0.1:${port}`;
  return {
    url: `${origin}/?token=${token}`,
    origin,
    token,
    close: () =>
      new Promise<void>((resolve) => {
        for (const ws of sockets) ws.terminate();
        wss.close();
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}
