#!/usr/bin/env bash
# Set up (first time) and run the whole test suite: lint, type check, unit, page and browser tests.
# Fails when any test fails or when no test was collected (pytest exit code 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
# A real browser for the end-to-end test: Debian's chromium (Playwright cannot download browsers here).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
.venv/bin/python -m ruff check .
# Type hints of core/ stay true: mypy, settings in pyproject.toml ([tool.mypy]).
.venv/bin/python -m mypy
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m pytest -q --timeout=900 "$@"
