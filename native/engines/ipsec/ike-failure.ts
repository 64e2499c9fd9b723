/**
 * Why an IKEv2 start failed, decided from charon's own words (its log lines and the VICI errmsg): the one
 * place that maps strongSwan's messages to the engine error codes a user ends up seeing.
 */
import type { EngineErrorCode } from "../../../main/core/tunnel/engine-types.ts";

export interface IkeFailureInput {
  /** errmsg of the failed `initiate`, or "" */
  errmsg: string;
  /** charon's log lines from the attempt (control-log events and its stderr), oldest first */
  lines: readonly string[];
  /** the driver's own deadline ran out before charon reached a verdict */
  deadlineHit: boolean;
  /** the identity the gateway was pinned to */
  remoteId: string;
}

export interface IkeFailure {
  code: Exclude<EngineErrorCode, "cancelled">;
  message: string;
  /** the lines the verdict rests on, for the error's engineOutput */
  evidence: string[];
}

interface Rule {
  re: RegExp;
  verdict: (m: RegExpExecArray, input: IkeFailureInput) => { code: IkeFailure["code"]; message: string } | null;
}

/**
 * Checked in order; the first rule with a verdict wins. Identity first: it is the most specific finding.
 *
 * With PSK authentication an initiator sends the pinned identity as IDr, so a gateway with another identity
 * finds no matching config and answers AUTHENTICATION_FAILED before proving anything: charon then cannot tell
 * a wrong pin from a wrong key, and the honest code is auth-failed. identity-mismatch is reported when the
 * gateway did present another identity (a constraint check failed, or charon looked for a key for it).
 */
const RULES: readonly Rule[] = [
  {
    re: /constraint check failed: identity '([^']*)' required/,
    verdict: (m) => ({
      code: "identity-mismatch",
      message: `the gateway did not prove the pinned identity ${m[1] ?? ""}`,
    }),
  },
  {
    re: /no shared key found for '([^']*)' - '([^']*)'/,
    // charon names (own id, peer id); a peer id other than the pin means the gateway presented another identity
    verdict: (m, input) =>
      m[2] !== undefined && m[2] !== input.remoteId
        ? {
            code: "identity-mismatch",
            message: `the gateway presented the identity ${m[2]}, not the pinned ${input.remoteId}`,
          }
        : { code: "bad-config", message: "charon has no pre-shared key for this pair of identities" },
  },
  {
    re: /received AUTHENTICATION_FAILED notify error/,
    verdict: (_m, input) => ({
      code: "auth-failed",
      message: `the gateway refused authentication (wrong PSK or local identity, or it is not ${input.remoteId}: with PSK, IKEv2 cannot tell these apart)`,
    }),
  },
  {
    re: /authentication of '([^']*)' with pre-shared key failed|tried \d+ shared keys? for '[^']*' - '[^']*', but MAC mismatched/,
    verdict: () => ({ code: "auth-failed", message: "the gateway's proof did not match our PSK" }),
  },
  {
    re: /received (NO_PROPOSAL_CHOSEN|TS_UNACCEPTABLE|INVALID_SYNTAX) notify error|no acceptable proposal found|no proposal chosen/,
    verdict: (m) => ({
      code: "bad-config",
      message: `the gateway refused our offer (${m[1] ?? "no acceptable proposal"})`,
    }),
  },
  {
    re: /giving up after \d+ retransmits|peer not responding/,
    verdict: () => ({
      code: "unreachable",
      message: "the gateway did not answer IKE (charon gave up after its retransmits)",
    }),
  },
  {
    re: /(Connection refused|Network is unreachable|No route to host)/,
    verdict: (m) => ({ code: "unreachable", message: `the gateway cannot be reached: ${m[1] ?? ""}` }),
  },
];

const HEARD_FROM_PEER = /received packet: from /;

export function classifyIkeFailure(input: IkeFailureInput): IkeFailure {
  const all = [...input.lines, input.errmsg].filter((l) => l !== "");
  for (const rule of RULES) {
    for (const line of all) {
      const m = rule.re.exec(line);
      if (m === null) continue;
      const v = rule.verdict(m, input);
      if (v !== null) return { ...v, evidence: evidenceFor(all, line) };
    }
  }
  const heard = all.some((l) => HEARD_FROM_PEER.test(l));
  if (input.deadlineHit || /not established after \d+ms/.test(input.errmsg)) {
    return {
      code: "timeout",
      message: heard
        ? "the tunnel was not established before the deadline"
        : "no answer from the gateway before the deadline",
      evidence: evidenceFor(all, input.errmsg),
    };
  }
  return {
    code: "engine-crashed",
    message: `charon could not establish the tunnel${input.errmsg === "" ? "" : `: ${input.errmsg}`}`,
    evidence: evidenceFor(all, input.errmsg),
  };
}

/** How many lines of context go with a verdict: enough to see the exchange that failed. */
const EVIDENCE_LINES = 12;

function evidenceFor(all: readonly string[], line: string): string[] {
  const at = all.lastIndexOf(line);
  const end = at < 0 ? all.length : at + 1;
  return all.slice(Math.max(0, end - EVIDENCE_LINES), end);
}
