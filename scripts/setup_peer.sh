#!/usr/bin/env bash
# Build (or find) the virtual environment that runs the real Jina 3.34 reference Flow.
#
# Usage: scripts/setup_peer.sh [legacy|v2]      (default: legacy)
#
# Jina pins old libraries (pydantic 1, grpcio <= 1.68, old fastapi) that clash with the project's own
# dependencies, so it gets a venv of its own, kept in a cache outside the repository so that repeated CI
# runs on one machine reuse it:
#   ${FLOWRELAY_CACHE:-$HOME/.cache/flowrelay}/jina-peer-<flavour>-<first 12 hex of sha256(requirements)>
# The requirements files live in ${FLOWRELAY_SHARED:-<parent of the repo>/shared}/jina-peer/.
# tests/jina_peer.py derives the same path; keep the two in step.
#
# Idempotent: a venv whose marker file exists is reused as is. A build happens in a temporary directory
# that is renamed into place only after `import jina` worked, so a half-built venv is never picked up.
# The last line printed is the venv's path.
set -euo pipefail

flavour="${1:-legacy}"
case "$flavour" in
    legacy | v2) ;;
    *)
        echo "usage: $0 [legacy|v2]" >&2
        exit 2
        ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${FLOWRELAY_SHARED:-$(dirname "$repo")/shared}"
cache="${FLOWRELAY_CACHE:-$HOME/.cache/flowrelay}"
python="${FLOWRELAY_PEER_BASE_PYTHON:-python3}"
req="$shared/jina-peer/requirements-$flavour.txt"
marker_name=".flowrelay-peer-ok"

if [[ ! -f "$req" ]]; then
    echo "setup_peer: requirements file not found: $req (set FLOWRELAY_SHARED?)" >&2
    exit 1
fi

digest="$(sha256sum "$req" | cut -c1-12)"
venv="$cache/jina-peer-$flavour-$digest"

if [[ -f "$venv/$marker_name" ]]; then
    echo "setup_peer: $flavour peer venv already built" >&2
    echo "$venv"
    exit 0
fi

mkdir -p "$cache"
# Two CI jobs (or a developer and CI) may start this at once on the same machine: serialise them, and
# let the second one find the finished venv instead of building a second copy.
exec 9>"$cache/.jina-peer-$flavour-$digest.lock"
flock -w 1800 9 || {
    echo "setup_peer: timed out waiting for another build of $venv" >&2
    exit 1
}
if [[ -f "$venv/$marker_name" ]]; then
    echo "setup_peer: $flavour peer venv built by a concurrent run" >&2
    echo "$venv"
    exit 0
fi

# Leftovers of an interrupted build, or a directory without a marker, are not trusted.
rm -rf "$venv" "$venv".tmp.*

tmp="$venv.tmp.$$"
log="$tmp.log"
trap 'rm -rf "$tmp" "$log"' EXIT

# pip's own chatter (and this machine's index warnings) would bury CI logs: keep it in a file and show it
# only when a step fails.
quiet() {
    if ! "$@" >>"$log" 2>&1; then
        echo "setup_peer: failed: $*" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
}

started=$SECONDS
echo "setup_peer: building $flavour peer venv in $venv (python: $("$python" --version 2>&1))" >&2
quiet "$python" -m venv "$tmp"
# The pip bundled with Python 3.11 cannot resolve this pinned set; a current pip can.
quiet "$tmp/bin/python" -m pip install --no-input --disable-pip-version-check -U pip
# setuptools >= 81 no longer ships pkg_resources, which `import jina` still needs.
quiet "$tmp/bin/python" -m pip install --no-input --disable-pip-version-check -r "$req" 'setuptools<81'

# Telemetry off before jina is imported, even for an import check: nothing may leave the machine.
quiet env JINA_OPTOUT_TELEMETRY=1 JINA_DEFAULT_HOST=127.0.0.1 \
    "$tmp/bin/python" -c 'import jina; print("jina", jina.__version__, "imports")'

# bin/python is a symlink and finds its venv from its own location, so it survives the rename; the
# console scripts (pip, jina, ...) and activate scripts embed the build path: point them at the final one.
while IFS= read -r -d '' f; do
    if grep -Iq -- "$tmp" "$f"; then
        sed -i "s#$tmp#$venv#g" "$f"
    fi
done < <(find "$tmp/bin" -maxdepth 1 -type f -print0)

{
    echo "flavour=$flavour"
    echo "requirements=$req"
    echo "requirements_sha256=$(sha256sum "$req" | cut -d' ' -f1)"
    echo "python=$("$tmp/bin/python" --version 2>&1)"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "seconds=$((SECONDS - started))"
} >"$tmp/$marker_name"

mv -T "$tmp" "$venv"
trap - EXIT
rm -f "$log"
echo "setup_peer: built in $((SECONDS - started)) s" >&2
echo "$venv"
