#!/usr/bin/env bash
# Installs (if missing), starts and stops the tansu broker used by the tests.
#   scripts/broker.sh install
#   scripts/broker.sh start [PORT]   # prints the address; pid in target/tansu-PORT.pid
#   scripts/broker.sh stop [PORT]
# One broker per port: a `make bench` beside a `make test` (another
# BROKER_PORT) leaves the other's broker alone.
set -euo pipefail
cd "$(dirname "$0")/.."
TANSU_VERSION=0.6.0
PORT=${2:-${BROKER_PORT:-19092}}
PIDFILE=target/tansu-$PORT.pid
LOG=target/tansu-$PORT.log

# Our own install, with the storage engines the tests use: memory (dynostore)
# and SQLite files (libsql, for the broker-restart test, whose data must
# survive the broker).
TANSU_ROOT=${TANSU_ROOT:-$HOME/.local/onejourney/tansu-$TANSU_VERSION}

tansu_bin() {
  echo "$TANSU_ROOT/bin/tansu"
}

install() {
  local bin
  bin=$(tansu_bin)
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  echo "installing tansu $TANSU_VERSION with memory and SQLite storage into $TANSU_ROOT (a Kafka-compatible broker; about 11 minutes on 2 cores)" >&2
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql --root "$TANSU_ROOT" >&2
}

start() {
  install
  mkdir -p target
  stop >/dev/null 2>&1 || true
  "$(tansu_bin)" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine memory://tansu/ >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      echo "127.0.0.1:$PORT"
      return 0
    fi
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "tansu exited; its log:" >&2
      cat "$LOG" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "tansu did not listen on 127.0.0.1:$PORT within 30 s" >&2
  return 1
}

stop() {
  if [ -f "$PIDFILE" ]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
}

case "${1:-}" in
  install) install ;;
  path) install; tansu_bin ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start [PORT]|stop" >&2; exit 2 ;;
esac
