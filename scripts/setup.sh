#!/usr/bin/env bash
# Create .venv (if missing) and install what is missing. Usage: scripts/setup.sh [dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
req=requirements.txt
[ "${1:-}" = "dev" ] && req=requirements-dev.txt
stamp=".venv/.installed-$(sha256sum requirements.txt requirements-dev.txt requirements-nodeps.txt | sha256sum | cut -c1-16)-$(basename $req .txt)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$req"
  # panoptica's metadata caps sit below our pins; it runs on them (see requirements-nodeps.txt)
  .venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
  touch "$stamp"
fi
