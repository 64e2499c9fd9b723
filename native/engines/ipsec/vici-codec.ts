/**
 * strongSwan's VICI wire format, pure (no I/O): packet framing, the message element tree and an incremental
 * decoder for a byte stream. Bad input of any kind ends in a typed ViciError, never a crash or a hang.
 *
 * Frame:   uint32be length | uint8 type | (named types) uint8 name length + name | message
 * Message: a sequence of elements: SECTION_START(name) SECTION_END KEY_VALUE(name, uint16be length + value)
 *          LIST_START(name) LIST_ITEM(uint16be length + value) LIST_END; sections nest, lists hold items only.
 */

/** charon refuses frames above 512 KiB (its VICI_MESSAGE_SIZE_MAX); a bigger length is a broken stream. */
export const MAX_FRAME_BYTES = 512 * 1024;
/** charon's deepest tree (list-sas: IKE_SA > child-sas > CHILD_SA) has 3 levels; 32 leaves room and bounds recursion. */
export const MAX_DEPTH = 32;
const MAX_NAME_BYTES = 0xff;
const MAX_VALUE_BYTES = 0xffff;
const LENGTH_BYTES = 4;

export type ViciErrorCode =
  /** the bytes end before the element or packet they announce */
  | "truncated"
  /** structure is wrong: unbalanced sections, items outside lists, duplicate keys, trailing bytes */
  | "malformed"
  /** a frame longer than MAX_FRAME_BYTES */
  | "oversized"
  /** sections nested deeper than MAX_DEPTH */
  | "too-deep"
  /** an unknown packet or element type byte */
  | "bad-type"
  /** a value this side was asked to encode cannot be expressed in VICI (name or value too long, ...) */
  | "unencodable";

export class ViciError extends Error {
  constructor(
    readonly code: ViciErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "ViciError";
  }
}

export function isViciError(e: unknown): e is ViciError {
  return e instanceof ViciError;
}

/** A VICI value: a string, a list of strings, or a nested section. */
export type ViciValue = string | readonly string[] | ViciSection;
/** A section keeps its keys in wire order: charon gives meaning to the order of some subsections. */
export type ViciSection = ReadonlyMap<string, ViciValue>;

/** Plain-object form for building requests; keys that look like integers would be reordered, so avoid them. */
export interface ViciObject {
  readonly [key: string]: string | readonly string[] | ViciObject;
}

export const EMPTY_SECTION: ViciSection = new Map();

/** Converts a plain object (e.g. a request literal) to a section, keeping its key order. */
export function viciSection(obj: ViciObject): ViciSection {
  const out = new Map<string, ViciValue>();
  for (const [k, v] of Object.entries(obj)) {
    out.set(k, typeof v === "string" || Array.isArray(v) ? v : viciSection(v as ViciObject));
  }
  return out;
}

export type ViciPacket =
  | { type: "cmd-request"; name: string; message: ViciSection }
  | { type: "cmd-response"; message: ViciSection }
  | { type: "cmd-unknown" }
  | { type: "event-register"; name: string }
  | { type: "event-unregister"; name: string }
  | { type: "event-confirm" }
  | { type: "event-unknown" }
  | { type: "event"; name: string; message: ViciSection };

export type ViciPacketType = ViciPacket["type"];

const PACKET_CODES: Record<ViciPacketType, number> = {
  "cmd-request": 0,
  "cmd-response": 1,
  "cmd-unknown": 2,
  "event-register": 3,
  "event-unregister": 4,
  "event-confirm": 5,
  "event-unknown": 6,
  event: 7,
};
const PACKET_TYPES: readonly ViciPacketType[] = [
  "cmd-request",
  "cmd-response",
  "cmd-unknown",
  "event-register",
  "event-unregister",
  "event-confirm",
  "event-unknown",
  "event",
];

const SECTION_START = 1;
const SECTION_END = 2;
const KEY_VALUE = 3;
const LIST_START = 4;
const LIST_ITEM = 5;
const LIST_END = 6;

// ---------------------------------------------------------------------------------------------- encoding

class Writer {
  readonly #parts: Buffer[] = [];
  #size = 0;

  byte(b: number): void {
    this.#push(Buffer.from([b]));
  }

  name(s: string, what: string): void {
    const b = Buffer.from(s, "utf8");
    if (b.length > MAX_NAME_BYTES)
      throw new ViciError(
        "unencodable",
        `${what} "${s.slice(0, 40)}…" is ${b.length} bytes; VICI names are at most ${MAX_NAME_BYTES}`,
      );
    this.byte(b.length);
    this.#push(b);
  }

  value(s: string, key: string): void {
    const b = Buffer.from(s, "utf8");
    if (b.length > MAX_VALUE_BYTES)
      throw new ViciError(
        "unencodable",
        `value of "${key}" is ${b.length} bytes; VICI values are at most ${MAX_VALUE_BYTES}`,
      );
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    this.#push(len);
    this.#push(b);
  }

  #push(b: Buffer): void {
    this.#size += b.length;
    if (this.#size > MAX_FRAME_BYTES) throw new ViciError("unencodable", `message exceeds ${MAX_FRAME_BYTES} bytes`);
    this.#parts.push(b);
  }

  bytes(): Buffer {
    return Buffer.concat(this.#parts, this.#size);
  }
}

function writeSection(w: Writer, section: ViciSection, depth: number): void {
  if (depth > MAX_DEPTH) throw new ViciError("unencodable", `sections nest deeper than ${MAX_DEPTH}`);
  for (const [key, value] of section) {
    if (typeof value === "string") {
      w.byte(KEY_VALUE);
      w.name(key, "key");
      w.value(value, key);
    } else if (isList(value)) {
      w.byte(LIST_START);
      w.name(key, "list name");
      for (const item of value) {
        if (typeof item !== "string") throw new ViciError("unencodable", `list "${key}" holds a non-string item`);
        w.byte(LIST_ITEM);
        w.value(item, key);
      }
      w.byte(LIST_END);
    } else if (value instanceof Map) {
      w.byte(SECTION_START);
      w.name(key, "section name");
      writeSection(w, value, depth + 1);
      w.byte(SECTION_END);
    } else {
      throw new ViciError("unencodable", `"${key}" is neither a string, a list nor a section`);
    }
  }
}

function isList(v: ViciValue): v is readonly string[] {
  return Array.isArray(v);
}

/** Encodes a message tree (the part after the packet header). */
export function encodeMessage(section: ViciSection): Buffer {
  const w = new Writer();
  writeSection(w, section, 1);
  return w.bytes();
}

/** Encodes a whole frame: length prefix, type, name and message. */
export function encodePacket(p: ViciPacket): Buffer {
  const w = new Writer();
  w.byte(PACKET_CODES[p.type]);
  switch (p.type) {
    case "cmd-request":
    case "event":
      if (p.name === "") throw new ViciError("unencodable", `${p.type} needs a name`);
      w.name(p.name, `${p.type} name`);
      writeSection(w, p.message, 1);
      break;
    case "event-register":
    case "event-unregister":
      if (p.name === "") throw new ViciError("unencodable", `${p.type} needs a name`);
      w.name(p.name, `${p.type} name`);
      break;
    case "cmd-response":
      writeSection(w, p.message, 1);
      break;
    case "cmd-unknown":
    case "event-confirm":
    case "event-unknown":
      break;
  }
  const body = w.bytes();
  const frame = Buffer.alloc(LENGTH_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, LENGTH_BYTES);
  return frame;
}

// ---------------------------------------------------------------------------------------------- decoding

class Reader {
  #pos = 0;

  constructor(
    readonly buf: Buffer,
    readonly what: string,
  ) {}

  get done(): boolean {
    return this.#pos >= this.buf.length;
  }

  get pos(): number {
    return this.#pos;
  }

  byte(): number {
    const b = this.buf[this.#pos];
    if (b === undefined) throw new ViciError("truncated", `${this.what} ends inside an element`);
    this.#pos += 1;
    return b;
  }

  take(n: number, of: string): Buffer {
    if (this.#pos + n > this.buf.length) {
      throw new ViciError(
        "truncated",
        `${this.what}: ${of} announces ${n} bytes but only ${this.buf.length - this.#pos} remain`,
      );
    }
    const out = this.buf.subarray(this.#pos, this.#pos + n);
    this.#pos += n;
    return out;
  }

  name(of: string): string {
    return this.take(this.byte(), of).toString("utf8");
  }

  value(of: string): string {
    const hi = this.byte();
    const lo = this.byte();
    return this.take((hi << 8) | lo, of).toString("utf8");
  }
}

/** Decodes a message tree; the whole buffer must be one balanced message. */
export function decodeMessage(buf: Buffer): ViciSection {
  return readMessage(new Reader(buf, "message"));
}

function readMessage(r: Reader): ViciSection {
  const root = new Map<string, ViciValue>();
  // The open sections, innermost last; iteration instead of recursion keeps hostile nesting off the stack.
  const stack: { section: Map<string, ViciValue>; name: string }[] = [{ section: root, name: "" }];
  let list: { name: string; items: string[]; into: Map<string, ViciValue> } | null = null;
  const add = (into: Map<string, ViciValue>, key: string, value: ViciValue): void => {
    if (into.has(key)) throw new ViciError("malformed", `duplicate key "${key}" in one section`);
    into.set(key, value);
  };
  while (!r.done) {
    const type = r.byte();
    const top = stack[stack.length - 1];
    if (top === undefined) throw new ViciError("malformed", "element after the root section was closed");
    if (list !== null && type !== LIST_ITEM && type !== LIST_END) {
      throw new ViciError("malformed", `list "${list.name}" holds an element of type ${type}; lists hold items only`);
    }
    switch (type) {
      case SECTION_START: {
        const name = r.name("section name");
        if (stack.length > MAX_DEPTH) throw new ViciError("too-deep", `sections nest deeper than ${MAX_DEPTH}`);
        const section = new Map<string, ViciValue>();
        add(top.section, name, section);
        stack.push({ section, name });
        break;
      }
      case SECTION_END:
        if (stack.length === 1) throw new ViciError("malformed", "SECTION_END without an open section");
        stack.pop();
        break;
      case KEY_VALUE: {
        const key = r.name("key");
        add(top.section, key, r.value(`value of "${key}"`));
        break;
      }
      case LIST_START:
        list = { name: r.name("list name"), items: [], into: top.section };
        break;
      case LIST_ITEM:
        if (list === null) throw new ViciError("malformed", "LIST_ITEM outside a list");
        list.items.push(r.value(`item of list "${list.name}"`));
        break;
      case LIST_END:
        if (list === null) throw new ViciError("malformed", "LIST_END without an open list");
        add(list.into, list.name, list.items);
        list = null;
        break;
      default:
        throw new ViciError("bad-type", `unknown message element type ${type}`);
    }
  }
  if (list !== null) throw new ViciError("truncated", `message ends inside list "${list.name}"`);
  if (stack.length > 1)
    throw new ViciError("truncated", `message ends inside section "${stack[stack.length - 1]?.name ?? ""}"`);
  return root;
}

/** Decodes one packet: the bytes after the length prefix. */
export function decodePacket(body: Buffer): ViciPacket {
  const r = new Reader(body, "packet");
  if (body.length === 0) throw new ViciError("malformed", "empty packet (no type byte)");
  const code = r.byte();
  const type = PACKET_TYPES[code];
  if (type === undefined) throw new ViciError("bad-type", `unknown packet type ${code}`);
  const packetName = (): string => {
    const n = r.name(`${type} name`);
    if (n === "") throw new ViciError("malformed", `${type} with an empty name`);
    return n;
  };
  const nothingMore = (): void => {
    if (!r.done) throw new ViciError("malformed", `${type} carries unexpected trailing bytes`);
  };
  const rest = (): ViciSection => readMessage(new Reader(body.subarray(r.pos), `${type} message`));
  switch (type) {
    case "cmd-request":
    case "event": {
      const name = packetName();
      return { type, name, message: rest() };
    }
    case "cmd-response":
      return { type, message: rest() };
    case "event-register":
    case "event-unregister": {
      const name = packetName();
      nothingMore();
      return { type, name };
    }
    case "cmd-unknown":
    case "event-confirm":
    case "event-unknown":
      nothingMore();
      return { type };
  }
}

/**
 * Splits a byte stream into packets. Frames may arrive split across chunks or several in one chunk. After a
 * ViciError the stream has lost its framing, so every later push throws the same error.
 */
export class ViciFrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #failed: ViciError | null = null;

  constructor(readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  get buffered(): number {
    return this.#buffered;
  }

  push(chunk: Uint8Array): ViciPacket[] {
    if (this.#failed !== null) throw this.#failed;
    try {
      return this.#push(chunk);
    } catch (e) {
      if (e instanceof ViciError) {
        this.#failed = e;
        this.#chunks = [];
        this.#buffered = 0;
      }
      throw e;
    }
  }

  #push(chunk: Uint8Array): ViciPacket[] {
    if (chunk.length > 0) {
      this.#chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.#buffered += chunk.length;
    }
    const out: ViciPacket[] = [];
    for (;;) {
      if (this.#buffered < LENGTH_BYTES) return out;
      const all = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks, this.#buffered);
      this.#chunks = [all];
      const length = all.readUInt32BE(0);
      if (length > this.maxFrameBytes)
        throw new ViciError("oversized", `frame of ${length} bytes exceeds ${this.maxFrameBytes}`);
      if (length === 0) throw new ViciError("malformed", "zero-length frame");
      if (this.#buffered < LENGTH_BYTES + length) return out;
      // copy the frame out, so a retained packet does not pin the whole receive buffer
      const body = Buffer.from(all.subarray(LENGTH_BYTES, LENGTH_BYTES + length));
      const rest = all.subarray(LENGTH_BYTES + length);
      this.#chunks = rest.length > 0 ? [rest] : [];
      this.#buffered = rest.length;
      out.push(decodePacket(body));
    }
  }
}
