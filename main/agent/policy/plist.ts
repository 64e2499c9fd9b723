/**
 * A reader for XML property lists (Apple's plist 1.0 DTD), enough for managed preferences: dict, array, string,
 * integer, real, true, false, date and data. Written here rather than taken from npm because the format is
 * small, the input is privileged (root-owned) but still parsed by a root daemon, and a strict hand-written
 * reader with bounded depth refuses entities, DOCTYPE tricks and anything unexpected instead of guessing.
 * Binary plists are not read: MDM writes managed preferences as XML (`plutil -convert xml1` converts others).
 */

export type PlistValue = string | number | boolean | Date | Uint8Array | PlistValue[] | { [key: string]: PlistValue };

export class PlistError extends Error {
  override readonly name = "PlistError";
}

/** Nesting deeper than this is not a preference file. */
const MAX_DEPTH = 32;

const ENTITIES: Record<string, string> = { "&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&apos;": "'" };

function unescapeXml(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#\d+|[a-z]+);/g, (m, body: string) => {
    if (body.startsWith("#x")) return String.fromCodePoint(parseInt(body.slice(2), 16));
    if (body.startsWith("#")) return String.fromCodePoint(parseInt(body.slice(1), 10));
    const e = ENTITIES[m];
    if (e === undefined) throw new PlistError(`unknown XML entity ${m}`);
    return e;
  });
}

type Token =
  { kind: "open" | "close" | "empty"; name: string; at: number } | { kind: "text"; text: string; at: number };

function tokenize(xml: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf("<", i);
    if (lt === -1) {
      tokens.push({ kind: "text", text: xml.slice(i), at: i });
      break;
    }
    if (lt > i) tokens.push({ kind: "text", text: xml.slice(i, lt), at: i });
    if (xml.startsWith("<?", lt) || xml.startsWith("<!--", lt)) {
      const close = xml.startsWith("<?", lt) ? "?>" : "-->";
      const end = xml.indexOf(close, lt);
      if (end === -1)
        throw new PlistError(`unterminated ${close === "?>" ? "processing instruction" : "comment"} at offset ${lt}`);
      i = end + close.length;
    } else if (xml.startsWith("<!DOCTYPE", lt)) {
      const end = xml.indexOf(">", lt);
      if (end === -1 || xml.slice(lt, end).includes("["))
        throw new PlistError("a DOCTYPE with an internal subset is not allowed in a plist");
      i = end + 1;
    } else {
      const end = xml.indexOf(">", lt);
      if (end === -1) throw new PlistError(`unterminated tag at offset ${lt}`);
      const body = xml.slice(lt + 1, end).trim();
      const m = /^(\/?)([A-Za-z][A-Za-z0-9]*)(\s+[^>]*?)?(\/?)$/.exec(body);
      if (m === null) throw new PlistError(`unreadable tag <${body.slice(0, 40)}> at offset ${lt}`);
      const name = m[2] ?? "";
      tokens.push({ kind: m[1] === "/" ? "close" : m[4] === "/" ? "empty" : "open", name, at: lt });
      i = end + 1;
    }
    if (i <= lt) throw new PlistError(`unterminated markup at offset ${lt}`);
  }
  return tokens.filter((t) => t.kind !== "text" || t.text.trim() !== "");
}

/** Parses an XML plist document; throws PlistError naming what is wrong and where. */
export function parsePlist(xml: string): PlistValue {
  const tokens = tokenize(xml.replace(/^\uFEFF/, ""));
  let pos = 0;
  const next = (): Token => {
    const t = tokens[pos++];
    if (t === undefined) throw new PlistError("the document ends early");
    return t;
  };
  const textUntilClose = (name: string): string => {
    const t = next();
    if (t.kind === "close" && t.name === name) return "";
    if (t.kind !== "text") throw new PlistError(`expected text in <${name}> at offset ${t.at}`);
    const c = next();
    if (c.kind !== "close" || c.name !== name) throw new PlistError(`expected </${name}> at offset ${c.at}`);
    return unescapeXml(t.text);
  };
  const value = (depth: number): PlistValue => {
    if (depth > MAX_DEPTH) throw new PlistError(`nested deeper than ${MAX_DEPTH}`);
    const t = next();
    if (t.kind === "empty") {
      if (t.name === "true") return true;
      if (t.name === "false") return false;
      if (t.name === "string") return "";
      if (t.name === "dict") return {};
      if (t.name === "array") return [];
      throw new PlistError(`unexpected <${t.name}/> at offset ${t.at}`);
    }
    if (t.kind !== "open") throw new PlistError(`expected a value at offset ${t.at}`);
    switch (t.name) {
      case "string":
        return textUntilClose("string");
      case "integer": {
        const s = textUntilClose("integer").trim();
        if (!/^[+-]?\d+$/.test(s)) throw new PlistError(`<integer> holds "${s.slice(0, 20)}" at offset ${t.at}`);
        return Number(s);
      }
      case "real": {
        const n = Number(textUntilClose("real").trim());
        if (!Number.isFinite(n)) throw new PlistError(`<real> is not a number at offset ${t.at}`);
        return n;
      }
      case "date": {
        const d = new Date(textUntilClose("date").trim());
        if (Number.isNaN(d.getTime())) throw new PlistError(`<date> is not an ISO 8601 time at offset ${t.at}`);
        return d;
      }
      case "data": {
        const s = textUntilClose("data").replace(/\s+/g, "");
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s)) throw new PlistError(`<data> is not base64 at offset ${t.at}`);
        return Uint8Array.from(Buffer.from(s, "base64"));
      }
      case "true":
      case "false": {
        const c = next();
        if (c.kind !== "close" || c.name !== t.name) throw new PlistError(`expected </${t.name}> at offset ${c.at}`);
        return t.name === "true";
      }
      case "array": {
        const out: PlistValue[] = [];
        for (;;) {
          const peek = tokens[pos];
          if (peek?.kind === "close" && peek.name === "array") {
            pos++;
            return out;
          }
          out.push(value(depth + 1));
        }
      }
      case "dict": {
        const out: Record<string, PlistValue> = {};
        for (;;) {
          const k = next();
          if (k.kind === "close" && k.name === "dict") return out;
          if (k.kind !== "open" || k.name !== "key") throw new PlistError(`expected <key> in <dict> at offset ${k.at}`);
          const key = textUntilClose("key");
          if (key === "__proto__") throw new PlistError("a <key> named __proto__ is not allowed");
          out[key] = value(depth + 1);
        }
      }
      default:
        throw new PlistError(`unknown element <${t.name}> at offset ${t.at}`);
    }
  };
  const root = next();
  if (root.kind !== "open" || root.name !== "plist") throw new PlistError("expected a <plist> root element");
  const v = value(1);
  const end = next();
  if (end.kind !== "close" || end.name !== "plist") throw new PlistError(`expected </plist> at offset ${end.at}`);
  if (pos !== tokens.length) throw new PlistError("content after </plist>");
  return v;
}
