/** What every view gets and provides: the API, the shared model, and one update per model change. */
import type { ConnectionEvent } from "../../main/core/connection/types.ts";
import type { DetourApi } from "../../main/core/protocol/app-api.ts";
import type { StatusPayload } from "../../main/core/protocol/messages.ts";

export interface Model {
  status: StatusPayload | null;
  /** Why there is no status (detourd not running, bridge gone), shown instead of it. */
  unreachable: string | null;
  now: number;
  /** Latency (ms) and loss (%) samples, one per status update, oldest first; null where there was no number. */
  rtt: (number | null)[];
  loss: (number | null)[];
  /** Connection events since the app started, oldest first. */
  history: ConnectionEvent[];
}

export interface View {
  id: string;
  title: string;
  panel: HTMLElement;
  update(model: Model): void;
  /** Called when the view becomes visible (load fresh data). */
  shown?(): void;
}

export interface ViewContext {
  api: DetourApi;
  /** Asks the app for a fresh status at once (after a command). */
  refresh(): void;
}
