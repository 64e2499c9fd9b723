#!/usr/bin/env bash
# The README's main job: bring up the lab with its real gateways, prove it with the selftest, and say how to
# look around and take it down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
lab() { node --import tsx test/lab/cli.ts "$@"; }
if [ -f /run/detour-lab/lab/state.json ]; then
  echo "demo: a lab is already up; taking it down first"
  lab down
fi
lab up
lab selftest
cat <<'TXT'

The lab is still up. Look around:
  npm run lab -- status                      namespaces, engines, addresses, impairments
  npm run lab -- exec client -- ping -c3 198.18.1.2
  npm run lab -- impair gw1 delay 50         then: npm run lab -- heal
Take it all down:
  npm run lab -- down
TXT
