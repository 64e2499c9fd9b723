/**
 * A secret value (key, PSK, password, cookie, token) that cannot leak by accident: it prints, serialises and
 * inspects as "[redacted]"; only `reveal()` gives the value, and only code that hands it to an engine calls it.
 */
const REDACTED = "[redacted]";

export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  /** Node's util.inspect (console.log) looks this symbol up; declared by name so core needs no node types. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return REDACTED;
  }
}
