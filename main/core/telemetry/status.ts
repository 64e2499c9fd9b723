/** What `detour status` shows of telemetry: the active tunnel's numbers and how the export is doing. */

export interface ReachabilityResult {
  target: string;
  ok: boolean;
  latencyMs: number | null;
  status: number | null;
  error: string | null;
}

export interface TelemetryExportStatus {
  endpoint: string;
  deviceId: string;
  policyHash: string;
  /** Records spooled and not yet delivered. */
  pending: number;
  /** Records the spool's bound pushed out unsent, since the spool was created. */
  dropped: number;
  /** Records the collector refused as malformed. */
  rejected: number;
  delivered: number;
  lastDeliveredAt: number | null;
  lastError: string | null;
  nextAttemptAt: number | null;
}

export interface TelemetryStatus {
  /** Median RTT of the active tunnel over the health window (ms); null when not connected. */
  rttMs: number | null;
  rttP95Ms: number | null;
  jitterMs: number | null;
  /** Loss over the health window, in percent. */
  lossPct: number | null;
  /** Settled probes the loss figure is computed over. */
  samples: number;
  /** Null when no collector is configured. */
  export: TelemetryExportStatus | null;
  reachability: ReachabilityResult[];
}
