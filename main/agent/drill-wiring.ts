/**
 * Wires failover drills (drill.ts) into the daemon: the drill reads status and candidates, watches the
 * machine's events as they happen, blocks through the platform's firewall, and its result joins the flight
 * recorder and the event stream.
 */
import type { DetourConfig } from "../core/config/schema.ts";
import type { Candidate, ConnectionSnapshot } from "../core/connection/types.ts";
import type { DrillBlock } from "../../native/platform/platform.ts";
import type { Clock } from "./clock.ts";
import type { ConnectionEvents } from "./connection-events.ts";
import { DrillRunner } from "./drill.ts";
import type { Logger } from "./log.ts";

export interface DrillWiring {
  config(): DetourConfig;
  /** The connection snapshot, in wall time. */
  snapshot(): ConnectionSnapshot;
  candidates(): Candidate[];
  events: ConnectionEvents;
  block: DrillBlock;
  clock: Clock;
  log: Logger;
  /** Tells the machine the tunnel is in use (the probes' fast pace) as the drill blocks the gateway. */
  inUse?(): void;
}

export function createDrills(w: DrillWiring): DrillRunner {
  return new DrillRunner(
    {
      // The configuration in force when the drill runs (a policy may have changed it since start-up).
      get config() {
        return w.config();
      },
      log: w.log,
      status: () => w.snapshot(),
      candidates: () => w.candidates(),
      subscribe: (listener) => w.events.watch(listener),
      record: (event) => {
        w.events.announce(event);
      },
    },
    {
      block: {
        apply: (gateway, endpoints) => {
          w.inUse?.();
          return w.block.apply(gateway, endpoints);
        },
        remove: () => w.block.remove(),
        present: () => w.block.present(),
      },
      clock: w.clock,
    },
  );
}
