#!/usr/bin/env bash
# Installs flowrelay, its development tools and the docs pages' extra into .venv (created if missing). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
# The pip bundled with Python 3.11 is old; a current one resolves faster and quieter.
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,docs]'
echo "flowrelay installed in $(pwd)/.venv"
