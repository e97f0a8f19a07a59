#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: venv, pinned requirements, Chromium for browser tests,
# PostgreSQL for the tracking-server tests.
# Usage: scripts/test.sh [--fast] [pytest args...]
#   --fast   local iteration: skip the browser tests (headless Chromium against a real server); CI runs everything
set -euo pipefail
cd "$(dirname "$0")/.."

FAST=()
if [ "${1:-}" = "--fast" ]; then
  shift
  FAST=(-m "not browser")
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import tlcore.models, streamlit, mlflow, playwright" 2>/dev/null \
   || ! cmp -s requirements.txt .venv/.requirements.installed; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  cp requirements.txt .venv/.requirements.installed
fi

# apt_install PACKAGE WHAT: a Debian package the tests need, as root or through sudo; a warning when neither works.
apt_install() {
  local run=()
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null; then run=(sudo); else
      echo "warning: $1 is missing and cannot be installed; $2 will fail" >&2
      return 0
    fi
  fi
  "${run[@]}" apt-get update -qq && "${run[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# Browser tests drive Debian's Chromium with Playwright (never `playwright install`).
[ -x /usr/bin/chromium ] || apt_install chromium "browser tests"
# Tracking-server tests start a real PostgreSQL (tests/servers.py finds /usr/lib/postgresql/<version>/bin).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql "tracking-server tests"

.venv/bin/ruff check .
exec .venv/bin/python -m pytest ${FAST[@]+"${FAST[@]}"} "$@"
