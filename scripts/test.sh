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

# Browser tests drive Debian's Chromium with Playwright (never `playwright install`).
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium is missing and cannot be installed; browser tests will fail" >&2
  fi
fi

# Tracking-server tests start a real PostgreSQL (tests/servers.py finds /usr/lib/postgresql/<version>/bin).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "warning: PostgreSQL (initdb) is missing and cannot be installed; tracking-server tests will fail" >&2
  fi
fi

.venv/bin/ruff check .
exec .venv/bin/python -m pytest ${FAST[@]+"${FAST[@]}"} "$@"
