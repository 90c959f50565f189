#!/usr/bin/env bash
# Install the Debian packages that the test suite needs beside Python: Prometheus (scrapes the relay's
# and the load tester's metrics in end-to-end tests) and Chromium with ChromeDriver (browser clients).
#
# Usage: scripts/setup_system.sh
#
# Idempotent: packages whose binary is already on PATH are skipped, and when nothing is missing apt is not
# touched at all. Needs root (or sudo). Package daemons are not started by the install: tests start their
# own instances on loopback.
set -euo pipefail

# binary on PATH -> Debian package providing it
binaries=(prometheus chromium chromedriver)
packages=(prometheus chromium chromium-driver)

missing=()
for i in "${!binaries[@]}"; do
    if ! command -v "${binaries[$i]}" >/dev/null 2>&1; then
        missing+=("${packages[$i]}")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "setup_system: already installed: ${binaries[*]}"
    exit 0
fi

sudo=()
if ((EUID != 0)); then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "setup_system: need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
    sudo=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-qq -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)

# The prometheus package would otherwise start a system-wide server on :9090 from its postinst. A
# policy-rc.d that answers 101 ("action forbidden") stops that; only ever remove one we created.
policy=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
    if ((own_policy)); then
        "${sudo[@]}" rm -f "$policy"
    fi
}
trap cleanup EXIT
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    own_policy=1
fi

echo "setup_system: installing ${missing[*]}"
"${sudo[@]}" apt-get "${apt_opts[@]}" update >/dev/null
"${sudo[@]}" apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null

for b in "${binaries[@]}"; do
    if ! command -v "$b" >/dev/null 2>&1; then
        echo "setup_system: $b still not on PATH after installing ${missing[*]}" >&2
        exit 1
    fi
done
echo "setup_system: installed ${missing[*]}"
