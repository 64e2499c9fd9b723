/**
 * The machine runs on the daemon's monotonic clock; people read wall time. These shift every instant of what
 * leaves the daemon (status, events, the flight recorder, logs, telemetry) by the clocks' offset, wall minus
 * monotonic, read once by the caller, to whole milliseconds as epoch times are read. Durations stay as they are.
 */
import type {
  ConnectionEvent,
  ConnectionSnapshot,
  FailoverRecord,
  HealthVerdict,
  LegRecord,
  RaceRecord,
} from "./types.ts";

const at = (t: number, offset: number): number => Math.round(t + offset);
const atOrNull = (t: number | null, offset: number): number | null => (t === null ? null : at(t, offset));

export function legRecordAtWall(l: LegRecord, offset: number): LegRecord {
  return { ...l, startedAt: atOrNull(l.startedAt, offset), endedAt: atOrNull(l.endedAt, offset) };
}

export function raceAtWall(r: RaceRecord, offset: number): RaceRecord {
  return {
    ...r,
    startedAt: at(r.startedAt, offset),
    endedAt: atOrNull(r.endedAt, offset),
    legs: r.legs.map((l) => legRecordAtWall(l, offset)),
  };
}

export function failoverAtWall(f: FailoverRecord, offset: number): FailoverRecord {
  return {
    ...f,
    lastReplyAt: at(f.lastReplyAt, offset),
    detectedAt: at(f.detectedAt, offset),
    restoredAt: atOrNull(f.restoredAt, offset),
  };
}

function verdictAtWall(v: HealthVerdict, offset: number): HealthVerdict {
  return v.state === "healthy" ? v : { ...v, lastReplyAt: at(v.lastReplyAt, offset) };
}

/** A machine event in wall time. Drill events come from the daemon's drill runner, which reports in wall time already. */
export function eventAtWall(e: ConnectionEvent, offset: number): ConnectionEvent {
  switch (e.type) {
    case "state":
    case "race-started":
      return { ...e, at: at(e.at, offset) };
    case "leg":
      return { ...e, at: at(e.at, offset), record: legRecordAtWall(e.record, offset) };
    case "race-ended":
      return { ...e, at: at(e.at, offset), race: raceAtWall(e.race, offset) };
    case "failover":
      return { ...e, at: at(e.at, offset), failover: failoverAtWall(e.failover, offset) };
    case "health":
      return { ...e, at: at(e.at, offset), verdict: verdictAtWall(e.verdict, offset) };
    case "drill":
    case "kill-switch":
    case "path-mtu":
    case "crash-protection":
      return e;
  }
}

/** A snapshot in wall time; the candidates' probe times are the daemon's own wall times already. */
export function snapshotAtWall(s: ConnectionSnapshot, offset: number): ConnectionSnapshot {
  return {
    ...s,
    since: atOrNull(s.since, offset),
    standby: s.standby === null ? null : { ...s.standby, lastReplyAt: atOrNull(s.standby.lastReplyAt, offset) },
    lastRace: s.lastRace === null ? null : raceAtWall(s.lastRace, offset),
    lastFailover: s.lastFailover === null ? null : failoverAtWall(s.lastFailover, offset),
    error: s.error === null ? null : { ...s.error, nextRetryAt: atOrNull(s.error.nextRetryAt, offset) },
  };
}
