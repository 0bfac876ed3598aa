#!/usr/bin/env bash
# Set up (first time) and start the viewer on the bundled demo data and the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m streamlit run serve.py "$@"  # Home.py's pages behind core.app.base_url (see serve.py)
