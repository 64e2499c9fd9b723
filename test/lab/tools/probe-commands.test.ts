/** Unit tests for the probe agent protocol: every operation parsed, and malformed commands refused by field. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  MAX_COMMAND_LINE_CHARS,
  OPERATION_SLACK_MS,
  STREAM_REPLY_TIMEOUT_MS,
  idKey,
  operationBudgetMs,
  parseCommandLine,
  validateCommand,
  type ParsedCommand,
  type ProbeCommand,
} from "./probe-commands.ts";

function ok(line: string): ProbeCommand {
  const r = parseCommandLine(line);
  if (!r.ok) assert.fail(`expected ${line} to parse, got: ${r.error}`);
  return r.command;
}

function refused(input: string | Record<string, unknown>): Exclude<ParsedCommand, { ok: true }> {
  const r = typeof input === "string" ? parseCommandLine(input) : validateCommand(input);
  if (r.ok) assert.fail(`expected ${JSON.stringify(input)} to be refused`);
  return r;
}

const udp = { id: 1, op: "udp", host: "198.19.0.1", port: 7, count: 500, intervalMs: 5, timeoutMs: 1000 };

void describe("well-formed commands", () => {
  void it("reads each operation as the brief writes it", () => {
    assert.deepEqual(ok(JSON.stringify(udp)), udp);
    assert.deepEqual(ok('{"id":2,"op":"wait-reply","host":"198.19.0.1","port":7,"intervalMs":10,"deadlineMs":5000}'), {
      id: 2,
      op: "wait-reply",
      host: "198.19.0.1",
      port: 7,
      intervalMs: 10,
      deadlineMs: 5000,
    });
    assert.deepEqual(ok('{"id":3,"op":"http","url":"http://198.19.0.1/whoami","timeoutMs":2000}'), {
      id: 3,
      op: "http",
      url: "http://198.19.0.1/whoami",
      timeoutMs: 2000,
    });
    assert.deepEqual(
      ok('{"id":"s","op":"stream","host":"corp.lab.detour.test","port":7,"ratePerSec":50,"durationMs":10000}'),
      {
        id: "s",
        op: "stream",
        host: "corp.lab.detour.test",
        port: 7,
        ratePerSec: 50,
        durationMs: 10000,
        timeoutMs: STREAM_REPLY_TIMEOUT_MS,
      },
    );
    assert.deepEqual(ok('{"op":"cancel","id":4}'), { op: "cancel", id: 4 });
    assert.deepEqual(ok('{"op":"exit"}'), { op: "exit" });
  });

  void it("accepts an interval of 0 (a burst) and fractional intervals for udp", () => {
    assert.ok(parseCommandLine(JSON.stringify({ ...udp, intervalMs: 0 })).ok);
    assert.ok(parseCommandLine(JSON.stringify({ ...udp, intervalMs: 0.5 })).ok);
  });
});

void describe("malformed commands", () => {
  void it("refuses what is not JSON, or not an object", () => {
    assert.match(refused("not json").error, /^command: invalid JSON/);
    assert.match(refused("").error, /^command: invalid JSON/);
    assert.match(refused("[1,2]").error, /^command: expected a JSON object/);
    assert.match(refused("null").error, /^command: expected a JSON object/);
    assert.match(refused('"udp"').error, /^command: expected a JSON object/);
  });

  void it("refuses an overlong line without parsing it", () => {
    const r = refused(`{"id":1,"op":"exit","pad":"${"x".repeat(MAX_COMMAND_LINE_CHARS)}"}`);
    assert.match(r.error, /exceeds/);
  });

  void it("names an unknown or missing op, keeping the id for the sender", () => {
    const r = refused({ id: 9, op: "ping" });
    assert.equal(r.id, 9);
    assert.match(r.error, /^op: expected one of udp, wait-reply, http, stream, cancel, exit, got "ping"/);
    assert.match(refused({ id: 9 }).error, /^op: .*got nothing/);
  });

  void it("needs an id on every operation and on cancel", () => {
    for (const op of ["udp", "wait-reply", "http", "stream", "cancel"]) {
      const r = refused({ op });
      assert.equal(r.id, undefined);
      assert.match(r.error, new RegExp(`^${op}\\.id: `));
    }
    assert.match(refused({ ...udp, id: "" }).error, /^udp\.id: /);
    assert.match(refused({ ...udp, id: null }).error, /^udp\.id: /);
    assert.match(refused({ ...udp, id: {} }).error, /^udp\.id: /);
  });

  void it("names the bad field and echoes the id", () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ ...udp, host: "198.19.0.256" }, /^udp\.host: expected an IPv4 address or a hostname, got "198\.19\.0\.256"/],
      [{ ...udp, host: 5 }, /^udp\.host: /],
      [{ ...udp, port: 0 }, /^udp\.port: expected an integer 1\.\.65535, got 0/],
      [{ ...udp, port: "7" }, /^udp\.port: /],
      [{ ...udp, count: 0 }, /^udp\.count: /],
      [{ ...udp, count: 2.5 }, /^udp\.count: /],
      [{ ...udp, count: 1e9 }, /^udp\.count: /],
      [{ ...udp, intervalMs: -1 }, /^udp\.intervalMs: /],
      [{ ...udp, timeoutMs: 0 }, /^udp\.timeoutMs: expected a number greater than 0/],
      [{ ...udp, count: 100_000, intervalMs: 60_000 }, /^udp\.count: .*longer than/],
      [{ ...udp, intervalMS: 5 }, /^udp\.intervalMS: unknown field/],
      [{ id: 1, op: "wait-reply", host: "h", port: 7, intervalMs: 0, deadlineMs: 100 }, /^wait-reply\.intervalMs: /],
      [{ id: 1, op: "wait-reply", host: "h", port: 7, intervalMs: 10 }, /^wait-reply\.deadlineMs: .*got nothing/],
      [{ id: 1, op: "http", url: "https://198.19.0.1/", timeoutMs: 100 }, /^http\.url: expected an http:\/\/ URL/],
      [{ id: 1, op: "http", url: "not a url", timeoutMs: 100 }, /^http\.url: /],
      [{ id: 1, op: "http", url: "http://198.19.0.1/", timeoutMs: Number.POSITIVE_INFINITY }, /^http\.timeoutMs: /],
      [{ id: 1, op: "stream", host: "h", port: 7, ratePerSec: 0, durationMs: 10 }, /^stream\.ratePerSec: /],
      [{ id: 1, op: "stream", host: "h", port: 7, ratePerSec: 5000, durationMs: 10 }, /^stream\.ratePerSec: /],
      [{ id: 1, op: "stream", host: "h", port: 7, ratePerSec: 50, durationMs: 1e12 }, /^stream\.durationMs: /],
      [{ id: 1, op: "cancel", target: 4 }, /^cancel\.target: unknown field/],
    ];
    for (const [input, expected] of cases) {
      const r = refused(input);
      assert.match(r.error, expected, JSON.stringify(input));
      assert.equal(r.id, 1, JSON.stringify(input));
    }
  });

  void it("refuses a field on exit too, so a typo never passes silently", () => {
    assert.match(refused({ op: "exit", now: true }).error, /^exit\.now: unknown field/);
  });
});

void describe("budgets and ids", () => {
  void it("bounds every operation by its own parameters plus slack", () => {
    assert.equal(
      operationBudgetMs({ op: "udp", id: 1, host: "h", port: 7, count: 500, intervalMs: 5, timeoutMs: 1000 }),
      499 * 5 + 1000 + OPERATION_SLACK_MS,
    );
    assert.equal(
      operationBudgetMs({ op: "wait-reply", id: 1, host: "h", port: 7, intervalMs: 10, deadlineMs: 5000 }),
      5000 + OPERATION_SLACK_MS,
    );
    assert.equal(
      operationBudgetMs({ op: "http", id: 1, url: "http://h/", timeoutMs: 2000 }),
      2000 + OPERATION_SLACK_MS,
    );
    assert.equal(
      operationBudgetMs({
        op: "stream",
        id: 1,
        host: "h",
        port: 7,
        ratePerSec: 50,
        durationMs: 10_000,
        timeoutMs: 1000,
      }),
      11_000 + OPERATION_SLACK_MS,
    );
  });

  void it("keeps numeric and string ids apart", () => {
    assert.notEqual(idKey(4), idKey("4"));
    assert.equal(idKey(4), idKey(4));
  });
});
