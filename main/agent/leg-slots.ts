/**
 * The legs' policy-routing slots: each slot is one routing table and one rule preference, owned by one leg from
 * its start until its teardown has finished, so a leg coming up can never take a live leg's table or delete its
 * source rule. Slots are handed out round-robin: a slot released a moment ago is the last one reused, which keeps
 * a late removal of the previous owner's rule (it is removed by address, table and preference) harmless.
 */

/** Policy-routing tables and rule preferences for legs: below kernel-libipsec's 220, above the main rules. */
export const LEG_TABLE_BASE = 5100;
export const LEG_RULE_PREF_BASE = 100;
/**
 * How many legs may exist at once (each racing, up, standby or still tearing down): 90 keeps every preference
 * below the protected rule's 200 (routes.linux.ts PROTECTED_RULE_PREF) with room to spare; a race has a dozen
 * legs at most.
 */
export const LEG_SLOTS = 90;

export interface LegSlot {
  readonly index: number;
  readonly table: number;
  readonly pref: number;
}

export class LegSlots {
  readonly #owners = new Map<number, string>();
  readonly #size: number;
  #next = 0;

  constructor(size = LEG_SLOTS) {
    if (!Number.isInteger(size) || size < 1 || size > LEG_SLOTS)
      throw new Error(`leg slot count ${String(size)} must be 1-${String(LEG_SLOTS)}`);
    this.#size = size;
  }

  /** A free slot for `owner`, or null when every slot is owned (the caller fails that leg). */
  acquire(owner: string): LegSlot | null {
    for (let i = 0; i < this.#size; i++) {
      const index = (this.#next + i) % this.#size;
      if (this.#owners.has(index)) continue;
      this.#owners.set(index, owner);
      this.#next = (index + 1) % this.#size;
      return { index, table: LEG_TABLE_BASE + index, pref: LEG_RULE_PREF_BASE + index };
    }
    return null;
  }

  /** Gives the slot back; only its owner can (a second release is a no-op). */
  release(slot: LegSlot, owner: string): void {
    if (this.#owners.get(slot.index) === owner) this.#owners.delete(slot.index);
  }

  get inUse(): number {
    return this.#owners.size;
  }

  get capacity(): number {
    return this.#size;
  }
}
