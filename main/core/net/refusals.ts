/**
 * What detourd refused to take from the network (a gateway address from DNS or the portal, a route or a resolver
 * a gateway pushed), kept for `detour status` so helpdesk sees why a gateway was not used or a push ignored.
 * Bounded: the newest distinct refusals, each with when it was last seen and how often.
 */

export type RefusedKind = "gateway-address" | "pushed-route" | "pushed-dns";

export interface RefusedInput {
  kind: RefusedKind;
  /** Where it came from: "dns", "portal", or the gateway that pushed it. */
  source: string;
  /** The gateway it concerns. */
  gateway: string;
  /** The address or prefix refused. */
  value: string;
  reason: string;
  /** Wall time (epoch ms) it was last refused. */
  at: number;
  count: number;
}

/** Distinct refusals kept: a hostile network repeats the same few answers, a longer list helps nobody. */
export const MAX_REFUSALS = 32;

export class Refusals {
  #list: RefusedInput[] = [];

  /** Records a refusal; true when it is new (the caller logs it once), false when it repeats a known one. */
  record(r: Omit<RefusedInput, "count">): boolean {
    const i = this.#list.findIndex(
      (x) =>
        x.kind === r.kind &&
        x.source === r.source &&
        x.gateway === r.gateway &&
        x.value === r.value &&
        x.reason === r.reason,
    );
    const known = this.#list[i];
    if (known !== undefined) {
      this.#list.splice(i, 1);
      this.#list.push({ ...known, at: r.at, count: known.count + 1 });
      return false;
    }
    this.#list.push({ ...r, count: 1 });
    if (this.#list.length > MAX_REFUSALS) this.#list.splice(0, this.#list.length - MAX_REFUSALS);
    return true;
  }

  /** Oldest first. */
  list(): RefusedInput[] {
    return this.#list.map((x) => ({ ...x }));
  }
}
