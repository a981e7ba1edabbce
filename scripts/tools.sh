#!/usr/bin/env bash
# Installs the tools `make test` needs besides the Rust toolchain:
# Prometheus and promtool (Debian package `prometheus`), chromium and
# chromedriver (Debian packages `chromium`, `chromium-driver`, for the browser
# test) and the tansu broker.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  echo "installing prometheus and promtool from Debian's packages" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  # For the Customer 360 page's browser test (tests/ui.rs).
  echo "installing chromium and chromium-driver from Debian's packages" >&2
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
scripts/broker.sh install
