// Import rules of ../shared/STYLE.md: each forbidden edge says why it is forbidden.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: "core-stays-pure",
      comment: "main/core is pure logic shared by daemon, CLI and tests: no node:*, no I/O modules, no other layer",
      severity: "error",
      from: { path: "^main/core/", pathNot: "\\.test\\.ts$" },
      // Matched anywhere in the path: in a git worktree node_modules is a symlink that resolves outside the tree.
      to: { pathNot: ["^main/core/", "(^|/)node_modules/zod/"] },
    },
    {
      name: "core-no-node-builtins",
      comment: "main/core gets time and I/O as inputs; a node builtin would hide I/O in it",
      severity: "error",
      from: { path: "^main/core/", pathNot: "\\.test\\.ts$" },
      to: { dependencyTypes: ["core"] },
    },
    {
      name: "shared-is-a-leaf",
      comment:
        "main/shared holds small node-only helpers that the daemon, the app, the CLI, the collector and native/ all use; it imports node:* and main/core only, so using it never pulls one layer into another",
      severity: "error",
      from: { path: "^main/shared/", pathNot: "\\.test\\.ts$" },
      to: { pathNot: ["^main/shared/", "^main/core/"], dependencyTypesNot: ["core"] },
    },
    {
      name: "native-not-upward",
      comment:
        "native/ is the OS and engine boundary; it serves the agent and must not depend on it, the app or the UI",
      severity: "error",
      from: { path: "^native/" },
      to: {
        path: [
          "^main/agent/",
          "^main/app/",
          "^main/cli/",
          "^main/client/",
          "^renderer/",
          "^electron$",
          "node_modules/electron/",
        ],
      },
    },
    {
      name: "agent-no-ui",
      comment: "the privileged daemon never loads UI or CLI code",
      severity: "error",
      from: { path: "^main/agent/" },
      to: { path: ["^main/app/", "^main/cli/", "^main/preload/", "^renderer/", "node_modules/electron/"] },
    },
    {
      name: "agent-through-the-platform",
      comment:
        "the daemon reaches the OS only through the Platform it is given (native/platform/platform.ts), so it runs on a fake one in tests and on other systems; the early-boot entry point loads only the kill switch's nftables code, to start fast at boot",
      severity: "error",
      from: { path: "^main/agent/", pathNot: "^main/agent/early-block-main\\.ts$" },
      to: { path: "^native/.+\\.linux\\.ts$" },
    },
    {
      name: "only-the-entry-point-picks-the-platform",
      comment:
        "detourd.ts builds the system's Platform once and hands it down; a module that built its own would bypass the fakes",
      severity: "error",
      from: { path: "^main/agent/", pathNot: "^main/agent/detourd\\.ts$" },
      to: { path: "^native/platform/linux\\.ts$" },
    },
    {
      name: "client-not-agent",
      comment: "the control-API client talks to the daemon over its socket, never through its internals",
      severity: "error",
      from: { path: "^main/(client|cli|app|preload)/" },
      to: { path: ["^main/agent/", "^native/"] },
    },
    {
      name: "cli-no-electron",
      comment: "the CLI runs without Electron",
      severity: "error",
      from: { path: "^main/cli/" },
      to: { path: ["node_modules/electron/", "^main/app/", "^renderer/"] },
    },
    {
      name: "collector-stands-alone",
      comment:
        "the collector is a server of its own: it shares main/core's telemetry names, never the daemon's internals, the OS boundary or the UI",
      severity: "error",
      from: { path: "^main/collector/", pathNot: "\\.test\\.ts$" },
      to: {
        path: [
          "^main/agent/",
          "^main/app/",
          "^main/cli/",
          "^main/client/",
          "^main/preload/",
          "^native/",
          "^renderer/",
          "node_modules/electron/",
        ],
      },
    },
    {
      name: "nothing-imports-the-collector",
      comment: "the agent reaches the collector over OTLP/HTTP only, so either can be replaced by any OTLP peer",
      severity: "error",
      from: { path: "^(main/(agent|app|cli|client|core|preload)|native|renderer)/" },
      to: { path: "^main/collector/" },
    },
    {
      name: "renderer-isolated",
      comment: "the renderer runs in a sandboxed page; it may only use type-only imports of the core protocol",
      severity: "error",
      from: { path: "^renderer/", pathNot: "\\.test\\.ts$" },
      to: { pathNot: ["^renderer/", "^main/core/"] },
    },
    {
      name: "renderer-types-only",
      comment:
        "a value import from main/core would pull daemon logic into the page; the one exception is status-words.ts, the words the window, the tray and the CLI share (pure, a leaf: see status-words-stays-a-leaf)",
      severity: "error",
      from: { path: "^renderer/", pathNot: "\\.test\\.ts$" },
      to: { path: "^main/core/", pathNot: "^main/core/status-words\\.ts$", dependencyTypesNot: ["type-only"] },
    },
    {
      name: "status-words-stays-a-leaf",
      comment:
        "the page imports main/core/status-words.ts itself; a value import there would pull more of core into the page",
      severity: "error",
      from: { path: "^main/core/status-words\\.ts$" },
      to: { dependencyTypesNot: ["type-only"] },
    },
    {
      name: "app-not-renderer-source",
      comment:
        "the Electron main loads the renderer's built bundle; importing its source would run page code with Node's powers",
      severity: "error",
      from: { path: "^main/(app|preload)/" },
      to: { path: "^renderer/" },
    },
    {
      name: "electron-only-in-the-thin-shells",
      comment:
        "only main/app/main.ts and the preload touch Electron; the app's logic stays plain, unit-tested modules that also run in the dev bridge",
      severity: "error",
      from: { path: "^main/", pathNot: ["^main/app/main\\.ts$", "^main/preload/"] },
      to: { path: ["^electron$", "node_modules/electron/", "node_modules/electron-store/"] },
    },
    {
      name: "preload-exposes-only-the-contract",
      comment:
        "the preload runs next to the page: it may use Electron's IPC and the app-api contract, nothing that could leak Node or daemon access",
      severity: "error",
      from: { path: "^main/preload/" },
      to: {
        pathNot: [
          "^main/core/protocol/app-api\\.ts$",
          "^main/core/connection/types\\.ts$",
          "^main/core/protocol/messages\\.ts$",
          "^main/core/tunnel/",
          "^main/core/telemetry/",
          "node_modules/electron/",
          "^electron$",
        ],
        dependencyTypesNot: ["type-only"],
      },
    },
    {
      name: "production-not-test",
      comment: "shipped code must not depend on the lab, fakes or benchmarks",
      severity: "error",
      from: { path: "^(main|native|renderer)/", pathNot: "\\.test\\.ts$" },
      to: { path: "^test/" },
    },
    {
      name: "no-circular",
      comment: "cycles make layers meaningless and start-up order fragile",
      severity: "error",
      from: {},
      to: { circular: true },
    },
    {
      name: "not-to-unresolvable",
      comment: "an import that does not resolve is a typo or a missing dependency",
      severity: "error",
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(\\.build|\\.git|dist|bench-out|test-artifacts)/|^eslint\\.config\\.js$" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.node.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default"],
      extensions: [".ts", ".js", ".mjs", ".cjs", ".json"],
    },
  },
};
