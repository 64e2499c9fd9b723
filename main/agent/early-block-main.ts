/**
 * `early-block.mjs --state-dir <dir>`: the process the early systemd unit runs (see early-block.ts). A second entry
 * point beside detourd.ts, kept small so it starts fast at boot: it loads only the kill switch's nftables code.
 * Exit 0: blocked, or nothing to block; 1: a block was due and nft refused it (systemd reports the unit failed);
 * 2: bad arguments.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { LOCKDOWN_STATE_FILE } from "../core/lockdown-state.ts";
import { applyKillSwitch } from "../../native/platform/firewall.linux.ts";
import { earlyBlock } from "./early-block.ts";
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
  try {
    await earlyBlock({ statePath: join(stateDir, LOCKDOWN_STATE_FILE), apply: (r) => applyKillSwitch(r), log });
    return 0;
  } catch (err) {
    log.error("early block: the blocking table could not be applied", { err });
    return 1;
  }
}

process.exitCode = await main();
