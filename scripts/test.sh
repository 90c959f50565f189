#!/usr/bin/env bash
# Installs what the tests need (the package, the real Jina peer venvs, system packages), then runs
# ruff and the whole test suite. This is the command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/fetch_compose_schema.sh
bash scripts/setup_peer.sh legacy
bash scripts/setup_peer.sh v2
if [ -f scripts/setup_system.sh ]; then
    bash scripts/setup_system.sh
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
