/**
 * Reads a whole HTTP body into memory, but never more than a bound: the one reader for every body Detour must
 * hold at once (discovery's portal list, the remote policy, the collector's requests, the dev bridge's calls), so
 * a peer cannot make any of them hold more than it planned for. A Content-Length over the bound is refused before
 * a byte is read; without one (chunked, or a lying peer) reading stops at the first byte past the bound.
 *
 * Works on both sides of HTTP: a fetch Response (client side; bytes as fetch decodes them) and a node:http
 * IncomingMessage (server side; bytes as sent). Past the bound a Response's body is cancelled; a request's
 * remaining bytes are discarded unread into memory, so the server can still answer 413 (with Connection: close)
 * on the same connection, or destroy it.
 */
import type { IncomingMessage } from "node:http";
import { Readable } from "node:stream";

export class BodyTooLargeError extends Error {
  override readonly name = "BodyTooLargeError";
  constructor(
    readonly limit: number,
    /** The Content-Length the peer declared, when that is what gave it away. */
    readonly declared: number | null,
  ) {
    super(declared === null ? `over the ${limit}-byte limit` : `${declared} bytes, over the ${limit}-byte limit`);
  }
}

/** A Content-Length header's value as a number; null when absent or not a plain decimal. */
export function declaredLength(value: string | null | undefined): number | null {
  if (value == null || !/^\s*\d+\s*$/.test(value)) return null;
  return Number(value);
}

/** The body of `source`, at most `limit` bytes; rejects with a BodyTooLargeError past it. */
export function readBoundedBody(source: Response | IncomingMessage, limit: number): Promise<Buffer> {
  return source instanceof Readable ? readRequest(source, limit) : readResponse(source, limit);
}

async function readResponse(res: Response, limit: number): Promise<Buffer> {
  const declared = declaredLength(res.headers.get("content-length"));
  if (declared !== null && declared > limit) {
    await res.body?.cancel().catch(() => undefined);
    throw new BodyTooLargeError(limit, declared);
  }
  if (res.body === null) return Buffer.alloc(0);
  const reader = res.body.getReader() as ReadableStreamDefaultReader<Uint8Array>;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const next = await reader.read();
    if (next.done) return Buffer.concat(chunks);
    size += next.value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => undefined);
      throw new BodyTooLargeError(limit, null);
    }
    chunks.push(next.value);
  }
}

function readRequest(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = declaredLength(req.headers["content-length"]);
  if (declared !== null && declared > limit) {
    req.resume();
    return Promise.reject(new BodyTooLargeError(limit, declared));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const settle = (f: () => void): void => {
      if (settled) return;
      settled = true;
      f();
    };
    const onData = (c: Buffer): void => {
      size += c.length;
      if (size <= limit) {
        chunks.push(c);
        return;
      }
      req.off("data", onData);
      chunks.length = 0;
      req.resume();
      settle(() => {
        reject(new BodyTooLargeError(limit, null));
      });
    };
    req.on("data", onData);
    req.on("end", () => {
      settle(() => {
        resolve(Buffer.concat(chunks));
      });
    });
    // The listeners stay attached after settling: a late error (the peer resets while the rest is discarded) is
    // then consumed here rather than thrown.
    req.on("error", (e) => {
      settle(() => {
        reject(e);
      });
    });
    req.on("close", () => {
      settle(() => {
        reject(new Error("the connection closed before the body ended"));
      });
    });
  });
}
