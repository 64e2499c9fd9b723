#!/usr/bin/env bash
# The whole test suite, as the README and CI run it: setup (first use installs everything), the static
# checks (types, lint, import rules), then every unit and lab test in one run of Node's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run -s check
node scripts/run-tests.mjs all
