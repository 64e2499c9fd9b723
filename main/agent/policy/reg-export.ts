/**
 * A reader for the text `reg export` writes ("Windows Registry Editor Version 5.00", UTF-16LE with a BOM, or
 * the older REGEDIT4 in ANSI): sections per key, and per value `"Name"="string"`, `dword:`, `qword`/`hex(b):`,
 * `hex(2):` (REG_EXPAND_SZ), `hex(7):` (REG_MULTI_SZ), `hex:` (REG_BINARY), with `\` line continuations.
 * The daemon reads the policy key this way on Windows (`reg export HKLM\SOFTWARE\Policies\Detour <file> /y`),
 * so no native registry binding is needed.
 */

export type RegValue =
  | { type: "sz"; value: string }
  | { type: "expand-sz"; value: string }
  | { type: "multi-sz"; value: string[] }
  | { type: "dword"; value: number }
  | { type: "qword"; value: bigint }
  | { type: "binary"; value: Uint8Array };

export class RegExportError extends Error {
  override readonly name = "RegExportError";
}

/** Decodes the file's bytes: UTF-16LE when it has the BOM (what `reg export` writes), else UTF-8/ANSI. */
export function decodeRegFile(bytes: Uint8Array): string {
  const b = Buffer.from(bytes);
  if (b[0] === 0xff && b[1] === 0xfe) return b.subarray(2).toString("utf16le");
  if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) return b.subarray(3).toString("utf8");
  return b.toString("utf8");
}

function hexBytes(list: string, line: number): Buffer {
  const parts = list
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "");
  if (!parts.every((p) => /^[0-9a-fA-F]{1,2}$/.test(p)))
    throw new RegExportError(`line ${line}: expected comma-separated hex bytes`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

function utf16z(buf: Buffer): string {
  const s = buf.subarray(0, buf.length - (buf.length % 2)).toString("utf16le");
  return s.replace(/\0+$/, "");
}

/** Reads a quoted string starting at s[i] === '"'; returns the text and the index after the closing quote. */
function quoted(s: string, i: number, line: number): { text: string; end: number } {
  let out = "";
  for (let k = i + 1; k < s.length; k++) {
    const c = s[k];
    if (c === "\\") {
      const n = s[k + 1];
      if (n === undefined) break;
      out += n;
      k++;
    } else if (c === '"') {
      return { text: out, end: k + 1 };
    } else if (c !== undefined) {
      out += c;
    }
  }
  throw new RegExportError(`line ${line}: unterminated string`);
}

function parseData(data: string, line: number): RegValue | null {
  if (data === "-") return null;
  if (data.startsWith('"')) {
    const q = quoted(data, 0, line);
    if (data.slice(q.end).trim() !== "") throw new RegExportError(`line ${line}: text after the string`);
    return { type: "sz", value: q.text };
  }
  const dw = /^dword:([0-9a-fA-F]{1,8})$/.exec(data);
  if (dw !== null) return { type: "dword", value: parseInt(dw[1] ?? "0", 16) };
  const hx = /^hex(?:\(([0-9a-fA-F]+)\))?:(.*)$/.exec(data);
  if (hx === null) throw new RegExportError(`line ${line}: unreadable value data "${data.slice(0, 30)}"`);
  const kind = hx[1] === undefined ? 3 : parseInt(hx[1], 16);
  const bytes = hexBytes(hx[2] ?? "", line);
  switch (kind) {
    case 1:
      return { type: "sz", value: utf16z(bytes) };
    case 2:
      return { type: "expand-sz", value: utf16z(bytes) };
    case 7: {
      const parts = bytes
        .subarray(0, bytes.length - (bytes.length % 2))
        .toString("utf16le")
        .split("\0");
      while (parts.length > 0 && parts[parts.length - 1] === "") parts.pop();
      return { type: "multi-sz", value: parts };
    }
    case 4:
      if (bytes.length !== 4) throw new RegExportError(`line ${line}: a DWORD needs 4 bytes`);
      return { type: "dword", value: bytes.readUInt32LE(0) };
    case 0xb:
      if (bytes.length !== 8) throw new RegExportError(`line ${line}: a QWORD needs 8 bytes`);
      return { type: "qword", value: bytes.readBigUInt64LE(0) };
    default:
      return { type: "binary", value: Uint8Array.from(bytes) };
  }
}

/** Keys (as written, e.g. `HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Detour`) to their values; `@` is the default value. */
export function parseRegExport(text: string): Map<string, Map<string, RegValue>> {
  const raw = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  const header = raw[0]?.trim();
  if (header !== "Windows Registry Editor Version 5.00" && header !== "REGEDIT4")
    throw new RegExportError('line 1: expected "Windows Registry Editor Version 5.00" (a `reg export` file)');
  const keys = new Map<string, Map<string, RegValue>>();
  let current: Map<string, RegValue> | null = null;
  for (let i = 1; i < raw.length; i++) {
    const lineNo = i + 1;
    let line = raw[i] ?? "";
    // Long values continue on the next line after a trailing backslash (hex lists only).
    while (/,\\\s*$/.test(line) && i + 1 < raw.length) line = line.replace(/\\\s*$/, "") + (raw[++i] ?? "").trim();
    const t = line.trim();
    if (t === "" || t.startsWith(";")) continue;
    if (t.startsWith("[")) {
      if (!t.endsWith("]")) throw new RegExportError(`line ${lineNo}: unterminated key name`);
      const name = t.slice(1, -1);
      if (name.startsWith("-")) {
        current = null;
        continue;
      }
      current = keys.get(name) ?? new Map<string, RegValue>();
      keys.set(name, current);
      continue;
    }
    if (current === null) throw new RegExportError(`line ${lineNo}: a value before any [key]`);
    let name: string;
    let rest: string;
    if (t.startsWith("@=")) {
      name = "@";
      rest = t.slice(2);
    } else if (t.startsWith('"')) {
      const q = quoted(t, 0, lineNo);
      if (t[q.end] !== "=") throw new RegExportError(`line ${lineNo}: expected = after the value name`);
      name = q.text;
      rest = t.slice(q.end + 1);
    } else {
      throw new RegExportError(`line ${lineNo}: expected "Name"=data`);
    }
    const v = parseData(rest.trim(), lineNo);
    if (v === null) current.delete(name);
    else current.set(name, v);
  }
  return keys;
}
