/**
 * Talks to one wireguard-go device over its UAPI socket: a fresh connection per request, bounded in time and
 * in reply size, with every transport failure mapped to a typed UapiError.
 */
import { connect } from "node:net";
import { join } from "node:path";
import type { Secret } from "../../../main/core/secret.ts";
import { MAX_REPLY_BYTES, UapiError, encodeGet, parseGetReply, parseSetReply, type UapiDump } from "./uapi-codec.ts";

/** Where wireguard-go puts its sockets: one host-wide folder, shared by every network namespace. */
export const UAPI_SOCKET_DIR = "/var/run/wireguard";

/**
 * wireguard-go answers from memory in well under a millisecond; 2 s only catches a wedged daemon and keeps a
 * caller's start deadline meaningful when the socket belongs to a process that stopped reading.
 */
export const UAPI_TIMEOUT_MS = 2000;

export function uapiSocketPath(ifname: string): string {
  return join(UAPI_SOCKET_DIR, `${ifname}.sock`);
}

export interface UapiRequestOptions {
  /** Epoch ms; the request gives up at the earlier of this and UAPI_TIMEOUT_MS from now. */
  deadlineAt?: number;
  signal?: AbortSignal;
}

export interface UapiClientOptions {
  timeoutMs?: number;
  maxReplyBytes?: number;
}

const TERMINATOR = Buffer.from("\n\n");

export class UapiClient {
  readonly #timeoutMs: number;
  readonly #maxReplyBytes: number;

  constructor(
    readonly path: string,
    opts: UapiClientOptions = {},
  ) {
    this.#timeoutMs = opts.timeoutMs ?? UAPI_TIMEOUT_MS;
    this.#maxReplyBytes = opts.maxReplyBytes ?? MAX_REPLY_BYTES;
  }

  /** The device's state; the private and preshared keys are dropped by the codec. */
  async get(opts: UapiRequestOptions = {}): Promise<UapiDump> {
    return parseGetReply(await this.#exchange(encodeGet(), opts));
  }

  /** Applies one `set=1` transaction (from encodeSet); rejects with code "errno" when wireguard-go refuses it. */
  async set(tx: Secret, opts: UapiRequestOptions = {}): Promise<void> {
    parseSetReply(await this.#exchange(tx.reveal(), opts));
  }

  #exchange(request: string, opts: UapiRequestOptions): Promise<string> {
    const budget = Math.min(this.#timeoutMs, opts.deadlineAt === undefined ? Infinity : opts.deadlineAt - Date.now());
    return new Promise<string>((resolve, reject) => {
      if (opts.signal?.aborted === true) {
        reject(new UapiError("cancelled", "UAPI request cancelled before it was sent"));
        return;
      }
      if (budget <= 0) {
        reject(new UapiError("timeout", `no time left for a UAPI request to ${this.path}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const sock = connect({ path: this.path });
      const finish = (err: UapiError | null, reply = ""): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        sock.destroy();
        if (err === null) resolve(reply);
        else reject(err);
      };
      const onAbort = (): void => {
        finish(new UapiError("cancelled", `UAPI request to ${this.path} cancelled`));
      };
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      const timer = setTimeout(() => {
        finish(new UapiError("timeout", `${this.path} did not answer within ${Math.round(budget)} ms`));
      }, budget);
      sock.on("connect", () => {
        sock.write(request);
      });
      sock.on("data", (d: Buffer) => {
        size += d.length;
        if (size > this.#maxReplyBytes) {
          finish(new UapiError("too-large", `reply from ${this.path} is larger than ${this.#maxReplyBytes} bytes`));
          return;
        }
        chunks.push(d);
        const all = Buffer.concat(chunks);
        const end = all.indexOf(TERMINATOR);
        if (end < 0) return;
        if (end + TERMINATOR.length !== all.length) {
          finish(new UapiError("malformed", `${this.path} sent data after the end of its reply`));
          return;
        }
        finish(null, all.toString("utf8"));
      });
      sock.on("end", () => {
        // The codec names what is missing (a reply cut short is "truncated").
        finish(null, Buffer.concat(chunks).toString("utf8"));
      });
      sock.on("error", (e: NodeJS.ErrnoException) => {
        if (e.code === "ENOENT")
          finish(
            new UapiError("no-socket", `${this.path} does not exist (wireguard-go is not running)`, null, { cause: e }),
          );
        else if (e.code === "ECONNREFUSED")
          finish(
            new UapiError(
              "refused",
              `${this.path} refused the connection (stale socket of a dead wireguard-go)`,
              null,
              { cause: e },
            ),
          );
        else finish(new UapiError("io", `UAPI socket ${this.path}: ${e.code ?? e.message}`, null, { cause: e }));
      });
    });
  }
}
