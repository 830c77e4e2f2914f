#!/usr/bin/env bash
# The test command of the README: installs the broker if missing (once, ~12 minutes), then
# runs every test of the workspace. End-to-end tests start their own broker on free
# loopback ports; nothing leaves 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

OMNIFOLD_NISSHI="$(deploy/install-broker.sh | tail -n 1)"
export OMNIFOLD_NISSHI
echo "using broker $OMNIFOLD_NISSHI" >&2

cargo test --workspace --locked "$@"
