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
      name: "native-not-upward",
      comment: "native/ is the OS and engine boundary; it serves the agent and must not depend on it, the app or the UI",
      severity: "error",
      from: { path: "^native/" },
      to: { path: ["^main/agent/", "^main/app/", "^main/cli/", "^main/client/", "^renderer/", "^electron$", "node_modules/electron/"] },
    },
    {
      name: "agent-no-ui",
      comment: "the privileged daemon never loads UI or CLI code",
      severity: "error",
      from: { path: "^main/agent/" },
      to: { path: ["^main/app/", "^main/cli/", "^main/preload/", "^renderer/", "node_modules/electron/"] },
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
      name: "renderer-isolated",
      comment: "the renderer runs in a sandboxed page; it may only use type-only imports of the core protocol",
      severity: "error",
      from: { path: "^renderer/", pathNot: "\\.test\\.ts$" },
      to: { pathNot: ["^renderer/", "^main/core/"] },
    },
    {
      name: "renderer-types-only",
      comment: "a value import from main/core would pull daemon logic into the page",
      severity: "error",
      from: { path: "^renderer/", pathNot: "\\.test\\.ts$" },
      to: { path: "^main/core/", dependencyTypesNot: ["type-only"] },
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
    exclude: { path: "^(node_modules|\\.build|\\.git|bench-out|test-artifacts)/|^eslint\\.config\\.js$" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.node.json" },
    enhancedResolveOptions: { exportsFields: ["exports"], conditionNames: ["import", "require", "node", "default"], extensions: [".ts", ".js", ".mjs", ".cjs", ".json"] },
  },
};
