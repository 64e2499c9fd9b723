/**
 * `early-block.mjs --state-dir <dir>`: the process the early systemd unit runs (see early-block.ts). A second entry
 * point beside detourd.ts, kept small so it starts fast at boot: it loads only the kill switch's nftables code.
 * What it did goes to the journal and to its report beside the state (detourd shows it in `detour status`).
 * Exit 0: blocked, or nothing to block; 1: a block was due and nft refused it (systemd reports the unit failed);
 * 2: bad arguments.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { EARLY_BLOCK_REPORT_FILE, LOCKDOWN_STATE_FILE, type EarlyBlockReport } from "../core/lockdown-state.ts";
import { applyKillSwitch } from "../../native/platform/firewall.linux.ts";
import { writeFileAtomicSync } from "../shared/atomic-write.ts";
import { earlyBlock } from "./early-block.ts";
import { currentBootId } from "./lockdown-state-store.ts";
import { createLogger } from "./log.ts";

const USAGE = "usage: early-block --state-dir <dir> (detourd's state folder, /var/lib/detour)";

async function main(): Promise<number> {
  let stateDir: string;
  try {
    const { values } = parseArgs({ options: { "state-dir": { type: "string", default: "/var/lib/detour" } } });
    stateDir = values["state-dir"];
  } catch (e) {
    process.stderr.write(`early-block: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const log = createLogger({ level: "info" });
  let outcome: Pick<EarlyBlockReport, "action" | "reason" | "failClosed">;
  let code = 0;
  try {
    const d = await earlyBlock({
      statePath: join(stateDir, LOCKDOWN_STATE_FILE),
      apply: (r) => applyKillSwitch(r),
      log,
    });
    outcome = { action: d.action, reason: d.reason, failClosed: d.action === "block" && d.failClosed };
  } catch (err) {
    log.error("early block: the blocking table could not be applied", { err });
    outcome = {
      action: "failed",
      reason: `the blocking table could not be applied: ${err instanceof Error ? err.message : String(err)}`,
      failClosed: false,
    };
    code = 1;
  }
  const report: EarlyBlockReport = { bootId: currentBootId(), at: new Date().toISOString(), ...outcome };
  try {
    writeFileAtomicSync(join(stateDir, EARLY_BLOCK_REPORT_FILE), JSON.stringify(report) + "\n");
  } catch (err) {
    // The journal still has it; the state folder is missing before detourd's first run.
    log.warn("early block: cannot write its report for detourd", { err });
  }
  return code;
}

process.exitCode = await main();
