import assert from "node:assert/strict";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { atomicWriteFailures, AtomicWriteError, writeFileAtomicSync, type AtomicFs } from "./atomic-write.ts";

const root = fs.mkdtempSync(join(tmpdir(), "detour-atomic-"));
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});
let n = 0;
/** A fresh folder holding state.json with the old content. */
function folder(): { dir: string; file: string } {
  const dir = join(root, String(++n));
  fs.mkdirSync(dir);
  const file = join(dir, "state.json");
  fs.writeFileSync(file, '{"old":true}\n');
  return { dir, file };
}

function errno(code: string, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: simulated, ${syscall}`), { code, syscall });
}

/** node:fs with one call replaced. */
function faulty(overrides: Partial<AtomicFs>): AtomicFs {
  return {
    openSync: fs.openSync,
    writeSync: fs.writeSync,
    fsyncSync: fs.fsyncSync,
    closeSync: fs.closeSync,
    renameSync: fs.renameSync,
    rmSync: fs.rmSync,
    ...overrides,
  };
}

/** Writes with some calls replaced; what a user sees: the error naming file and code, the old file whole, nothing else. */
function assertFailsCleanly(overrides: Partial<AtomicFs>, code: string, data = "new"): void {
  const { dir, file } = folder();
  assert.throws(
    () => {
      writeFileAtomicSync(file, data, { fs: faulty(overrides) });
    },
    (e) => e instanceof AtomicWriteError && e.code === code && e.message.includes(file) && e.message.includes(code),
  );
  assert.equal(fs.readFileSync(file, "utf8"), '{"old":true}\n', "the old state is intact");
  assert.deepEqual(fs.readdirSync(dir), ["state.json"], "no temporary file is left");
}

const failWith = (code: string, syscall: string) => (): never => {
  throw errno(code, syscall);
};

test("a-write-replaces-the-file-whole-privately-and-leaves-nothing-beside-it", () => {
  const { dir, file } = folder();
  writeFileAtomicSync(file, '{"new":true}\n');
  assert.equal(fs.readFileSync(file, "utf8"), '{"new":true}\n');
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dir), ["state.json"]);
  writeFileAtomicSync(join(dir, "public.pem"), Buffer.from("key"), { mode: 0o640 });
  assert.equal(
    fs.statSync(join(dir, "public.pem")).mode & 0o707,
    0o600,
    "the mode asked for, less the umask's group bits at most",
  );
});

test("a-large-write-that-the-system-takes-in-pieces-arrives-whole", () => {
  const { file } = folder();
  const big = Buffer.alloc(300_000, 7);
  // Some file systems take less than asked per call; the rest must follow.
  writeFileAtomicSync(file, big, {
    fs: faulty({
      writeSync: ((fd: number, b: Uint8Array, off: number, len: number) =>
        fs.writeSync(fd, b, off, Math.min(len, 4096))) as AtomicFs["writeSync"],
    }),
  });
  assert.deepEqual(fs.readFileSync(file), big);
});

test("a-full-disk-in-the-middle-of-the-write-throws-enospc-naming-the-file-and-keeps-the-old-state", () => {
  let calls = 0;
  const writeSync = ((fd: number, b: Uint8Array, off: number) => {
    if (++calls > 1) throw errno("ENOSPC", "write");
    return fs.writeSync(fd, b, off, 3);
  }) as AtomicFs["writeSync"];
  const before = atomicWriteFailures().stateWriteFailures;
  assertFailsCleanly({ writeSync }, "ENOSPC", '{"new":"a longer state"}\n');
  assert.equal(atomicWriteFailures().stateWriteFailures, before + 1, "counted for the daemon's status");
  assert.match(atomicWriteFailures().lastStateWriteError ?? "", /ENOSPC/);
});

test("a-folder-the-daemon-may-not-write-throws-eacces-naming-the-file", () => {
  // Root passes permission checks, so the refusal is simulated where the system would give it.
  const openSync = ((p: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode) =>
    String(p).endsWith(".tmp") ? failWith("EACCES", "open")() : fs.openSync(p, flags, mode)) as AtomicFs["openSync"];
  assertFailsCleanly({ openSync }, "EACCES");
});

test("a-failing-fsync-or-a-refused-rename-throws-and-keeps-the-old-state", () => {
  assertFailsCleanly({ fsyncSync: failWith("EIO", "fsync") }, "EIO");
  assertFailsCleanly({ renameSync: failWith("EXDEV", "rename") }, "EXDEV");
});

test("a-target-that-is-a-folder-or-a-missing-folder-fails-with-the-path-and-no-temporary-file", () => {
  const { dir } = folder();
  fs.mkdirSync(join(dir, "taken"));
  fs.writeFileSync(join(dir, "taken", "inside"), "x");
  assert.throws(
    () => {
      writeFileAtomicSync(join(dir, "taken"), "new");
    },
    (e) => e instanceof AtomicWriteError && e.message.includes(join(dir, "taken")),
  );
  assert.deepEqual(fs.readdirSync(dir).sort(), ["state.json", "taken"]);
  assert.throws(
    () => {
      writeFileAtomicSync(join(dir, "missing", "state.json"), "new");
    },
    (e) => e instanceof AtomicWriteError && e.code === "ENOENT",
  );
});

test("a-leftover-of-a-crashed-writer-does-not-stop-the-next-write-or-lend-it-its-mode", () => {
  const { dir, file } = folder();
  const leftover = join(dir, `.state.json.${process.pid}.tmp`);
  fs.writeFileSync(leftover, "torn", { mode: 0o666 });
  fs.chmodSync(leftover, 0o666);
  writeFileAtomicSync(file, "new");
  assert.equal(fs.readFileSync(file, "utf8"), "new");
  assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(fs.readdirSync(dir), ["state.json"]);
});

test("the-data-is-on-disk-before-the-rename-and-the-rename-is-synced-after", () => {
  const { dir, file } = folder();
  const log: string[] = [];
  const name = (p: fs.PathLike): string => (String(p) === dir ? "dir" : String(p) === file ? "file" : "tmp");
  const fds = new Map<number, string>();
  const spy = faulty({
    openSync: ((p: fs.PathLike, flags: fs.OpenMode, mode?: fs.Mode) => {
      const fd = fs.openSync(p, flags, mode);
      fds.set(fd, name(p));
      log.push(`open ${name(p)}`);
      return fd;
    }) as AtomicFs["openSync"],
    fsyncSync: (fd) => {
      log.push(`fsync ${fds.get(fd) ?? "?"}`);
      fs.fsyncSync(fd);
    },
    renameSync: (a, b) => {
      log.push(`rename ${name(a)} -> ${name(b)}`);
      fs.renameSync(a, b);
    },
  });
  writeFileAtomicSync(file, "new", { fs: spy });
  assert.deepEqual(log, ["open tmp", "fsync tmp", "rename tmp -> file", "open dir", "fsync dir"]);
});
