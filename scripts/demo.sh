#!/usr/bin/env bash
# The README's main job: the lab with real gateways, detourd racing WireGuard, IKEv2 and AnyConnect legs,
# a gateway killed under it and the failover measured; everything stays up for a look around.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
node --import tsx test/lab/demo.ts
