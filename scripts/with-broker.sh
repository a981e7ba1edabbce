#!/usr/bin/env bash
# Runs a command with a fresh tansu broker on loopback, exported to it as
# ONEJOURNEY_TEST_BROKERS, and stops the broker afterwards, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
addr=$(scripts/broker.sh start)
trap 'scripts/broker.sh stop' EXIT
echo "tansu broker on $addr" >&2
# Tests that need a broker of their own (stopped and restarted) start this binary.
ONEJOURNEY_TANSU="$(scripts/broker.sh path)" ONEJOURNEY_TEST_BROKERS="$addr" "$@"
