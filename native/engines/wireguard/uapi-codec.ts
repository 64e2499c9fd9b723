/**
 * The wireguard-go UAPI wire format, without I/O: a `set=1` transaction from a typed desired configuration, and
 * a `get=1` or `set=1` reply parsed into typed values. Secrets never leave it readable: the transaction comes
 * back wrapped in a Secret, the dump's private and preshared keys are dropped while parsing, and no error
 * message quotes a value from the wire.
 */
import { Secret } from "../../../main/core/secret.ts";

/**
 * Upper bound on a reply. A dump costs about 400 bytes per peer plus one line per allowed IP, so 1 MiB holds
 * thousands of peers; anything larger is a broken or hostile peer on the socket, not a real device.
 */
export const MAX_REPLY_BYTES = 1024 * 1024;

/**
 * Stable reasons a UAPI exchange failed. The codec raises malformed, truncated, too-large, invalid-value and
 * errno; the socket client adds the transport ones (no-socket, refused, timeout, cancelled, io).
 */
export type UapiErrorCode =
  | "malformed"
  | "truncated"
  | "too-large"
  | "invalid-value"
  | "errno"
  | "no-socket"
  | "refused"
  | "timeout"
  | "cancelled"
  | "io";

export class UapiError extends Error {
  constructor(
    readonly code: UapiErrorCode,
    message: string,
    /** wireguard-go's errno trailer when code is "errno" (it sends negative errno values, e.g. -22). */
    readonly errno: number | null = null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "UapiError";
  }
}

export interface UapiPeerConfig {
  /** The gateway's public key, base64 as in `wg` and the configuration. */
  publicKey: string;
  /** "a.b.c.d:port" or "[v6]:port". */
  endpoint: string;
  persistentKeepaliveSec: number;
  allowedIps: readonly string[];
}

export interface UapiSetConfig {
  /** Base64 private key; written only into the transaction, which is itself a Secret. */
  privateKey: Secret;
  /** Omitted: wireguard-go picks a random port, which is what a client wants. */
  listenPort?: number;
  peer: UapiPeerConfig;
}

export interface UapiPeer {
  /** Base64, as users and configurations spell keys. */
  publicKey: string;
  /** The preshared key itself is dropped; only whether one is set is kept. */
  hasPresharedKey: boolean;
  protocolVersion: number | null;
  endpoint: string | null;
  /** Wall-clock seconds of the last completed handshake; 0 until the first one. */
  lastHandshakeTimeSec: number;
  lastHandshakeTimeNsec: number;
  rxBytes: number;
  txBytes: number;
  persistentKeepaliveInterval: number;
  allowedIps: string[];
  /** Keys this codec does not know, in order, so a newer wireguard-go does not break the driver. */
  extra: [string, string][];
}

export interface UapiDump {
  /** The private key is dropped while parsing; only whether the device has one is kept. */
  hasPrivateKey: boolean;
  listenPort: number | null;
  fwmark: number | null;
  peers: UapiPeer[];
  extra: [string, string][];
}

const HEX_KEY_RE = /^[0-9a-f]{64}$/;
/** 32 bytes are 43 base64 characters and one '=' of padding. */
const BASE64_KEY_RE = /^[A-Za-z0-9+/]{43}=$/;
const KEY_NAME_RE = /^[a-z0-9_]{1,64}$/;
const UNSIGNED_RE = /^[0-9]{1,20}$/;
const SIGNED_RE = /^-?[0-9]{1,20}$/;
/**
 * An unknown line holding a long hex or base64 run may be a key under a name this codec does not know (or a
 * corrupted private_key line); its text is replaced so a secret cannot slip out through `extra`.
 */
const KEY_LIKE_RE = /[0-9a-fA-F]{16}|[A-Za-z0-9+/]{24}/;
const REDACTED = "[redacted]";

/** Base64 key (as `wg genkey` prints it) to the 64 hex characters UAPI takes. `what` names it in errors. */
export function keyToHex(base64: string, what: string): string {
  if (!BASE64_KEY_RE.test(base64)) throw new UapiError("invalid-value", `${what} is not a base64-encoded 32-byte key`);
  const bytes = Buffer.from(base64, "base64");
  // Node's decoder ignores non-canonical trailing bits; re-encoding catches keys that are not exactly 32 bytes.
  if (bytes.length !== 32 || bytes.toString("base64") !== base64)
    throw new UapiError("invalid-value", `${what} is not a base64-encoded 32-byte key`);
  return bytes.toString("hex");
}

/** 64 hex characters from UAPI to base64. */
export function keyFromHex(hex: string, what: string): string {
  if (!HEX_KEY_RE.test(hex)) throw new UapiError("invalid-value", `${what} is not 64 lowercase hex characters`);
  return Buffer.from(hex, "hex").toString("base64");
}

function isIpv4(s: string): boolean {
  const parts = s.split(".");
  return parts.length === 4 && parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255);
}

function isIpv6(s: string): boolean {
  // Shape check only: hex groups and at most one "::"; wireguard-go parses it for real.
  if (!/^[0-9a-fA-F:.]{2,45}$/.test(s) || s.split("::").length > 2) return false;
  const groups = s.split(":");
  return groups.length >= 3 && groups.length <= 8 && groups.every((g) => /^[0-9a-fA-F]{0,4}$/.test(g) || isIpv4(g));
}

/** "a.b.c.d/n" or "v6/n". */
export function isCidr(s: string): boolean {
  const slash = s.indexOf("/");
  if (slash < 0) return false;
  const addr = s.slice(0, slash);
  const len = s.slice(slash + 1);
  if (!/^(0|[1-9][0-9]{0,2})$/.test(len)) return false;
  if (isIpv4(addr)) return Number(len) <= 32;
  return isIpv6(addr) && Number(len) <= 128;
}

export function isIpAddress(s: string): boolean {
  return isIpv4(s) || isIpv6(s);
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 1 && n <= 65535;
}

export function isEndpoint(s: string): boolean {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(s);
  if (m === null) return false;
  const host = m[1] ?? m[2] ?? "";
  const hostOk = m[1] !== undefined ? isIpv6(host) : isIpv4(host);
  return hostOk && isPort(Number(m[3]));
}

/** `get=1`: asks for the whole device, answered by a dump and `errno=0`. */
export function encodeGet(): string {
  return "get=1\n\n";
}

/**
 * One `set=1` transaction that replaces the device's peers with the given one. The endpoint comes before the
 * keepalive in the same transaction: wireguard-go starts the handshake on the keepalive only if it already
 * knows where to send it, otherwise the first handshake waits for its 5 s retry.
 */
export function encodeSet(cfg: UapiSetConfig): Secret {
  const privateHex = keyToHex(cfg.privateKey.reveal(), "the private key");
  const publicHex = keyToHex(cfg.peer.publicKey, "the peer's public key");
  if (
    cfg.listenPort !== undefined &&
    !(Number.isInteger(cfg.listenPort) && cfg.listenPort >= 0 && cfg.listenPort <= 65535)
  ) {
    throw new UapiError("invalid-value", `listen port ${String(cfg.listenPort)} is not 0-65535`);
  }
  if (!isEndpoint(cfg.peer.endpoint))
    throw new UapiError("invalid-value", `endpoint "${cfg.peer.endpoint.slice(0, 80)}" is not address:port`);
  const ka = cfg.peer.persistentKeepaliveSec;
  if (!(Number.isInteger(ka) && ka >= 0 && ka <= 65535))
    throw new UapiError("invalid-value", `persistent keepalive ${String(ka)} is not 0-65535 seconds`);
  if (cfg.peer.allowedIps.length === 0)
    throw new UapiError("invalid-value", "the peer has no allowed IPs, so no traffic could use it");
  for (const ip of cfg.peer.allowedIps) {
    if (!isCidr(ip))
      throw new UapiError("invalid-value", `allowed IP "${ip.slice(0, 80)}" is not a prefix such as 198.19.0.0/24`);
  }
  const lines = [
    "set=1",
    `private_key=${privateHex}`,
    ...(cfg.listenPort === undefined ? [] : [`listen_port=${String(cfg.listenPort)}`]),
    "replace_peers=true",
    `public_key=${publicHex}`,
    `endpoint=${cfg.peer.endpoint}`,
    `persistent_keepalive_interval=${String(ka)}`,
    "replace_allowed_ips=true",
    ...cfg.peer.allowedIps.map((ip) => `allowed_ip=${ip}`),
  ];
  return new Secret(lines.join("\n") + "\n\n");
}

/**
 * A `set=1` transaction that sets an existing peer's endpoint again (nothing else changes). wireguard-go then
 * forgets the source address and interface it had cached for the peer ("sticky" sockets), so its next packet
 * leaves by the route and source address the kernel picks now: what a move to another network needs, because a
 * send with the old, vanished source fails and is not retried with a fresh one.
 */
export function encodeEndpointUpdate(peerPublicKey: string, endpoint: string): Secret {
  const publicHex = keyToHex(peerPublicKey, "the peer's public key");
  if (!isEndpoint(endpoint))
    throw new UapiError("invalid-value", `endpoint "${endpoint.slice(0, 80)}" is not address:port`);
  return new Secret(
    ["set=1", `public_key=${publicHex}`, "update_only=true", `endpoint=${endpoint}`].join("\n") + "\n\n",
  );
}

interface Line {
  key: string;
  value: string;
  n: number;
}

/**
 * Checks the framing every reply shares (size, terminating blank line, key=value lines, the errno trailer last)
 * and returns the lines before the trailer. Throws UapiError("errno") when the trailer is not 0.
 */
function frame(text: string): Line[] {
  if (Buffer.byteLength(text, "utf8") > MAX_REPLY_BYTES)
    throw new UapiError("too-large", `reply is larger than ${MAX_REPLY_BYTES} bytes`);
  if (!text.endsWith("\n\n")) throw new UapiError("truncated", "reply ended before its terminating blank line");
  const body = text.slice(0, -2);
  if (body === "") throw new UapiError("malformed", "reply is empty (no errno line)");
  const raw = body.split("\n");
  const lines: Line[] = [];
  for (const [i, l] of raw.entries()) {
    const eq = l.indexOf("=");
    const key = eq < 0 ? "" : l.slice(0, eq);
    if (eq < 0 || !KEY_NAME_RE.test(key)) throw new UapiError("malformed", `reply line ${i + 1} is not key=value`);
    lines.push({ key, value: l.slice(eq + 1), n: i + 1 });
  }
  const last = lines.pop();
  if (last?.key !== "errno") throw new UapiError("malformed", "reply does not end with an errno line");
  if (!SIGNED_RE.test(last.value)) throw new UapiError("malformed", `reply line ${last.n}: errno is not an integer`);
  const errno = Number(last.value);
  if (errno !== 0) throw new UapiError("errno", `wireguard-go refused the request (errno=${errno})`, errno);
  const stray = lines.find((l) => l.key === "errno");
  if (stray !== undefined) throw new UapiError("malformed", `reply line ${stray.n}: errno before the end of the reply`);
  return lines;
}

function extraPair(l: Line): [string, string] {
  return [KEY_LIKE_RE.test(l.key) ? REDACTED : l.key, KEY_LIKE_RE.test(l.value) ? REDACTED : l.value];
}

function unsigned(l: Line, max = Number.MAX_SAFE_INTEGER): number {
  const n = UNSIGNED_RE.test(l.value) ? Number(l.value) : NaN;
  if (!(n <= max))
    throw new UapiError("invalid-value", `reply line ${l.n}: ${l.key} is not a whole number up to ${max}`);
  return n;
}

/** A `set=1` reply: nothing but the errno trailer. */
export function parseSetReply(text: string): void {
  const lines = frame(text);
  if (lines.length > 0)
    throw new UapiError("malformed", `set reply has ${lines.length} unexpected line(s) before errno`);
}

/** A `get=1` reply: the device and its peers; each peer starts at its public_key line. */
export function parseGetReply(text: string): UapiDump {
  const dump: UapiDump = { hasPrivateKey: false, listenPort: null, fwmark: null, peers: [], extra: [] };
  let peer: UapiPeer | null = null;
  for (const l of frame(text)) {
    if (l.key === "public_key") {
      peer = {
        publicKey: keyFromHex(l.value, `reply line ${l.n}: public_key`),
        hasPresharedKey: false,
        protocolVersion: null,
        endpoint: null,
        lastHandshakeTimeSec: 0,
        lastHandshakeTimeNsec: 0,
        rxBytes: 0,
        txBytes: 0,
        persistentKeepaliveInterval: 0,
        allowedIps: [],
        extra: [],
      };
      dump.peers.push(peer);
      continue;
    }
    if (peer === null) {
      switch (l.key) {
        case "private_key":
          // Dropped here so no caller, log line or error can ever hold it.
          dump.hasPrivateKey = !/^0*$/.test(l.value);
          break;
        case "listen_port":
          dump.listenPort = unsigned(l, 65535);
          break;
        case "fwmark":
          dump.fwmark = unsigned(l, 0xffffffff);
          break;
        default:
          dump.extra.push(extraPair(l));
      }
      continue;
    }
    switch (l.key) {
      case "preshared_key":
        peer.hasPresharedKey = !/^0*$/.test(l.value);
        break;
      case "protocol_version":
        peer.protocolVersion = unsigned(l, 0xffffffff);
        break;
      case "endpoint":
        if (!isEndpoint(l.value))
          throw new UapiError("invalid-value", `reply line ${l.n}: endpoint is not address:port`);
        peer.endpoint = l.value;
        break;
      case "last_handshake_time_sec":
        peer.lastHandshakeTimeSec = unsigned(l);
        break;
      case "last_handshake_time_nsec":
        peer.lastHandshakeTimeNsec = unsigned(l, 999_999_999);
        break;
      case "rx_bytes":
        peer.rxBytes = unsigned(l);
        break;
      case "tx_bytes":
        peer.txBytes = unsigned(l);
        break;
      case "persistent_keepalive_interval":
        peer.persistentKeepaliveInterval = unsigned(l, 65535);
        break;
      case "allowed_ip":
        if (!isCidr(l.value)) throw new UapiError("invalid-value", `reply line ${l.n}: allowed_ip is not a prefix`);
        peer.allowedIps.push(l.value);
        break;
      default:
        peer.extra.push(extraPair(l));
    }
  }
  return dump;
}

/** Epoch milliseconds of a peer's last handshake, or null before the first one. */
export function lastHandshakeMs(peer: UapiPeer): number | null {
  if (peer.lastHandshakeTimeSec === 0 && peer.lastHandshakeTimeNsec === 0) return null;
  return peer.lastHandshakeTimeSec * 1000 + Math.floor(peer.lastHandshakeTimeNsec / 1e6);
}
