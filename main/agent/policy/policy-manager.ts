/**
 * The daemon's managed policy and user preferences: reads every policy source (the platform's location, watched,
 * plus an optional URL, polled), verifies each document, keeps the last good policy in force (and on disk, so a
 * restart keeps it), keeps the user's preferences, and hands the layered configuration to the daemon whenever
 * either changes. A refused document changes nothing but the reported rejection.
 */
import { watch, type FSWatcher } from "node:fs";
import { mkdirSync, readFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { DetourConfig } from "../../core/config/schema.ts";
import type { PolicyDocument } from "../../core/policy/document.ts";
import { layer, preferenceRefusal, type Effective } from "../../core/policy/layers.ts";
import {
  flattenSettings,
  isSettingKey,
  parseSettingValue,
  SETTING_KEY_LIST,
  SETTING_KEYS,
  Settings,
  unflattenSettings,
} from "../../core/policy/settings.ts";
import type { PolicyEvent, PolicyRejectionRecord, PolicyStatus, PrefsPayload } from "../../core/policy/status.ts";
import { verifyEnvelope, type Rejection } from "../../core/policy/verify.ts";
import { writeFileAtomicSync } from "../../shared/atomic-write.ts";
import type { Logger } from "../log.ts";
import { loadTrustedKeys } from "./keys.ts";
import type { PolicySource } from "./sources.ts";

/**
 * Editors and `cp` write a file in several steps and fs.watch reports each; reading 200 ms after the last event
 * sees the finished file, and a policy change is not urgent to the millisecond.
 */
export const POLICY_SETTLE_MS = 200;
/**
 * fs.watch misses changes on some file systems (network mounts, a folder replaced under it) and cannot watch a
 * folder that does not exist yet; every 30 s the sources are read again anyway. A read is one small file and an
 * Ed25519 verification (~0.1 ms), so the cost is nil.
 */
export const POLICY_POLL_MS = 30_000;

interface InForce {
  doc: PolicyDocument;
  envelopeText: string;
  policyBase64: string;
  keyId: string;
  source: string;
  appliedAt: number;
}

export interface PolicyManagerOptions {
  /** The configuration file, validated: the bottom layer. */
  base: DetourConfig;
  stateDir: string;
  trustedKeysDir: string;
  /** The platform's source first; a remote URL (with its own schedule) after it. */
  sources: PolicySource[];
  log: Logger;
  now?: () => number;
}

/** Refusal of a preference change, for the control API to answer with "refused". */
export class PrefRefused extends Error {
  override readonly name = "PrefRefused";
}

/** Replaces a state file whole (see writeFileAtomicSync), creating its private folder first. */
function writeState(path: string, text: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileAtomicSync(path, text);
}

export class PolicyManager {
  readonly #opts: PolicyManagerOptions;
  readonly #now: () => number;
  #inForce: InForce | null = null;
  #prefs: Settings = {};
  #effective: Effective;
  #lastRejection: PolicyRejectionRecord | null = null;
  /** Per source, the text last refused: re-reading the same bad file is not a new rejection. */
  #refused = new Map<string, string>();
  #watchers: FSWatcher[] = [];
  #timers = new Set<NodeJS.Timeout>();
  #settle: NodeJS.Timeout | null = null;
  #listeners = new Set<(e: PolicyEvent) => void>();
  #onEffective: ((e: Effective, why: "policy" | "prefs") => boolean) | null = null;
  #stopped = false;
  #chain: Promise<void> = Promise.resolve();

  constructor(opts: PolicyManagerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#prefs = this.#loadPrefs();
    this.#inForce = this.#loadLastGood();
    const r = layer(opts.base, this.#prefs, this.#inForce?.doc ?? null);
    if (r.ok) this.#effective = r.effective;
    else {
      opts.log.warn("the stored policy no longer fits the configuration; it is not in force", {
        rejection: r.rejection,
      });
      this.#inForce = null;
      const plain = layer(opts.base, this.#prefs, null);
      const bare = layer(opts.base, {}, null);
      if (plain.ok) this.#effective = plain.effective;
      else if (bare.ok) this.#effective = bare.effective;
      else throw new Error(`the configuration cannot be layered: ${bare.rejection.message}`);
    }
    for (const i of this.#effective.ignored)
      opts.log.warn("stored preference ignored: it would loosen the configuration", { key: i.key, reason: i.reason });
  }

  #prefsPath(): string {
    return join(this.#opts.stateDir, "prefs.json");
  }

  #lastGoodPath(): string {
    return join(this.#opts.stateDir, "policy", "last-good.json");
  }

  #loadPrefs(): Settings {
    try {
      const r = Settings.safeParse(JSON.parse(readFileSync(this.#prefsPath(), "utf8")));
      if (r.success) return r.data;
      this.#opts.log.warn("stored preferences are invalid; ignoring them", {
        path: this.#prefsPath(),
        issue: r.error.issues[0]?.message,
      });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT")
        this.#opts.log.warn("cannot read the stored preferences", { path: this.#prefsPath(), err: e });
    }
    return {};
  }

  /** The policy that was in force before a restart, re-verified against today's trusted keys. */
  #loadLastGood(): InForce | null {
    let stored: { envelope?: unknown; source?: unknown; appliedAt?: unknown };
    try {
      stored = JSON.parse(readFileSync(this.#lastGoodPath(), "utf8")) as typeof stored;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT")
        this.#opts.log.warn("cannot read the stored policy", { path: this.#lastGoodPath(), err: e });
      return null;
    }
    if (typeof stored.envelope !== "string") return null;
    const keys = loadTrustedKeys(this.#opts.trustedKeysDir).keys;
    const v = verifyEnvelope(stored.envelope, {
      keys,
      current: null,
      now: Number.NEGATIVE_INFINITY,
      organisation: this.#opts.base.organisation,
    });
    if (!v.ok) {
      this.#opts.log.warn("the stored policy does not verify any more; it is not in force", { rejection: v.rejection });
      return null;
    }
    return {
      doc: v.policy,
      envelopeText: stored.envelope,
      policyBase64: v.envelope.policy,
      keyId: v.keyId,
      source: typeof stored.source === "string" ? stored.source : "stored",
      appliedAt: typeof stored.appliedAt === "number" ? stored.appliedAt : this.#now(),
    };
  }

  effective(): Effective {
    return this.#effective;
  }

  /**
   * Starts reading the sources: once now, then on every change of a watched file, every POLICY_POLL_MS, and for a
   * remote source on its own schedule. `onEffective` puts a new layered configuration in force and says whether
   * the tunnel moved. Applied and refused documents are told to `subscribe`rs (control API, telemetry).
   */
  start(onEffective: (e: Effective, why: "policy" | "prefs") => boolean): void {
    this.#onEffective = onEffective;
    for (const source of this.#opts.sources) {
      this.#watch(source);
      const schedule = (source as PolicySource & { nextDelay?: () => number }).nextDelay;
      this.#loop(source, schedule ?? (() => POLICY_POLL_MS));
    }
    this.refresh();
  }

  /** Reads every source now (after a settle delay for file events). */
  refresh(): void {
    for (const s of this.#opts.sources) this.#enqueue(s);
  }

  #loop(source: PolicySource, delay: () => number): void {
    const arm = (): void => {
      if (this.#stopped) return;
      const t = setTimeout(() => {
        this.#timers.delete(t);
        this.#enqueue(source);
        arm();
      }, delay());
      this.#timers.add(t);
    };
    arm();
  }

  #watch(source: PolicySource): void {
    if (source.watchPath === null) return;
    const dir = dirname(source.watchPath);
    const file = basename(source.watchPath);
    try {
      const w = watch(dir, { persistent: false }, (_event, name) => {
        if (name !== null && name !== file && !name.startsWith(`${file}.`)) return;
        if (this.#settle !== null) clearTimeout(this.#settle);
        this.#settle = setTimeout(() => {
          this.#settle = null;
          this.#enqueue(source);
        }, POLICY_SETTLE_MS);
      });
      w.on("error", (err) => {
        this.#opts.log.warn("policy folder watch failed; polling only", { dir, err });
      });
      this.#watchers.push(w);
    } catch (err) {
      this.#opts.log.info("policy folder cannot be watched (yet); polling it", {
        dir,
        code: (err as NodeJS.ErrnoException).code,
      });
    }
  }

  /** Reads run one after another, so two documents are never verified against the same "current" version. */
  #enqueue(source: PolicySource): void {
    this.#chain = this.#chain
      .then(() => this.#readAndApply(source))
      .catch((err: unknown) => {
        this.#opts.log.error("policy check failed", { source: source.name, err });
      });
  }

  /** Waits until every queued read has been handled (tests, shutdown). */
  async settled(): Promise<void> {
    await this.#chain;
  }

  async #readAndApply(source: PolicySource): Promise<void> {
    if (this.#stopped) return;
    let text: string | null;
    try {
      text = await source.read();
    } catch (err) {
      this.#opts.log.warn("policy source unreadable", { source: source.name, err: (err as Error).message });
      return;
    }
    if (text === null) return; // nothing deployed there: whatever is in force stays
    this.offer(source.name, text);
  }

  /** Verifies one document from `sourceName` and puts it in force if it passes. Returns the rejection, if any. */
  offer(sourceName: string, text: string): Rejection | null {
    const trusted = loadTrustedKeys(this.#opts.trustedKeysDir);
    for (const p of trusted.problems) this.#opts.log.warn("trusted key unusable", p);
    const cur = this.#inForce;
    const layered: { effective: Effective | null } = { effective: null };
    const v = verifyEnvelope(text, {
      keys: trusted.keys,
      current: cur === null ? null : { version: cur.doc.version, policyBase64: cur.policyBase64 },
      now: this.#now(),
      organisation: this.#opts.base.organisation,
      check: (doc) => {
        const r = layer(this.#opts.base, this.#prefs, doc);
        if (!r.ok) return r.rejection;
        layered.effective = r.effective;
        return null;
      },
    });
    if (!v.ok) {
      if (this.#refused.get(sourceName) === text) return v.rejection;
      this.#refused.set(sourceName, text);
      const rec: PolicyRejectionRecord = { at: this.#now(), ...v.rejection, source: sourceName };
      this.#lastRejection = rec;
      this.#opts.log.warn("policy rejected", {
        source: sourceName,
        code: rec.code,
        field: rec.field,
        reason: rec.message,
        inForce: cur?.doc.version ?? null,
      });
      this.#emit({
        type: "policy",
        at: rec.at,
        change: "rejected",
        source: sourceName,
        code: rec.code,
        ...(rec.field === undefined ? {} : { field: rec.field }),
        message: rec.message,
      });
      return v.rejection;
    }
    this.#refused.delete(sourceName);
    const next = layered.effective;
    if (v.unchanged || next === null) return null;
    const appliedAt = this.#now();
    this.#inForce = {
      doc: v.policy,
      envelopeText: text,
      policyBase64: v.envelope.policy,
      keyId: v.keyId,
      source: sourceName,
      appliedAt,
    };
    try {
      writeState(this.#lastGoodPath(), JSON.stringify({ source: sourceName, appliedAt, envelope: text }) + "\n");
    } catch (err) {
      this.#opts.log.warn("cannot store the policy; a restart will fall back to the previous one", { err });
    }
    this.#effective = next;
    const moved = this.#onEffective?.(next, "policy") ?? false;
    this.#opts.log.info("policy applied", {
      source: sourceName,
      version: v.policy.version,
      keyId: v.keyId,
      locked: this.#effective.locked,
      moved,
    });
    this.#emit({
      type: "policy",
      at: appliedAt,
      change: "applied",
      version: v.policy.version,
      source: sourceName,
      locked: this.#effective.locked,
      moved,
    });
    return null;
  }

  status(): PolicyStatus {
    const f = this.#inForce;
    return {
      version: f?.doc.version ?? null,
      organisation: f?.doc.organisation ?? null,
      source: f?.source ?? null,
      keyId: f?.keyId ?? null,
      issuedAt: f?.doc.issuedAt ?? null,
      expiresAt: f?.doc.expiresAt ?? null,
      appliedAt: f?.appliedAt ?? null,
      locked: this.#effective.locked,
      lastRejection: this.#lastRejection,
      ignoredPrefs: this.#effective.ignored,
    };
  }

  prefs(): PrefsPayload {
    const e = this.#effective;
    const locked = new Set<string>(e.locked);
    const ignored = new Map(e.ignored.map((i) => [i.key, i.reason]));
    return {
      organisation: this.#inForce?.doc.organisation ?? null,
      entries: SETTING_KEY_LIST.map((key) => ({
        key,
        value: e.values[key] ?? null,
        source: e.sources[key],
        locked: locked.has(key),
        scope: SETTING_KEYS[key],
        ...(ignored.has(key) ? { ignored: ignored.get(key) } : {}),
      })),
    };
  }

  /** Sets (value text) or clears (null) one preference; refuses locked, managed-only and invalid ones with why. */
  setPref(key: string, valueText: string | null): PrefsPayload {
    if (!isSettingKey(key)) throw new PrefRefused(`unknown setting "${key}"; settings: ${SETTING_KEY_LIST.join(", ")}`);
    if (this.#effective.locked.includes(key))
      throw new PrefRefused(`${key} is managed by ${this.#inForce?.doc.organisation ?? "your organisation"}'s policy`);
    if (SETTING_KEYS[key] === "managed")
      throw new PrefRefused(`${key} can only be set by your organisation's policy or configuration`);
    const flat = flattenSettings(this.#prefs);
    if (valueText === null) flat.delete(key);
    else {
      const parsed = parseSettingValue(key, valueText);
      if (!parsed.ok) throw new PrefRefused(`${key}: ${parsed.message}`);
      const loosens = preferenceRefusal(this.#opts.base, key, parsed.value);
      if (loosens !== null) throw new PrefRefused(loosens);
      flat.set(key, parsed.value);
    }
    const prefs = unflattenSettings(flat);
    const r = layer(this.#opts.base, prefs, this.#inForce?.doc ?? null);
    if (!r.ok) throw new PrefRefused(`${key}: ${r.rejection.message}`);
    writeState(this.#prefsPath(), JSON.stringify(prefs, null, 2) + "\n");
    this.#prefs = prefs;
    this.#effective = r.effective;
    this.#onEffective?.(r.effective, "prefs");
    this.#opts.log.info("preference changed", { key, cleared: valueText === null });
    return this.prefs();
  }

  subscribe(listener: (e: PolicyEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(e: PolicyEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // a listener's failure is its own
      }
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const w of this.#watchers) w.close();
    for (const t of this.#timers) clearTimeout(t);
    if (this.#settle !== null) clearTimeout(this.#settle);
    this.#watchers = [];
    this.#timers.clear();
  }
}
