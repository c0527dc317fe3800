#!/bin/bash
# Set up a Debian 12 machine (as root) for failberry: Debian packages, then a venv in .venv
# that uses Debian's python3 and its python3-* libraries (the versions the Pi image ships).
#   bash scripts/setup.sh          what `failberry build` needs
#   bash scripts/setup.sh --test   also what the tests need
# FAILBERRY_SKIP_APT=1 skips apt-get (for a machine already set up).
set -euo pipefail
cd "$(dirname "$0")/.."

lists=(scripts/apt/runtime.txt scripts/apt/build.txt)
with_tests=0
if [[ "${1:-}" == "--test" ]]; then
    with_tests=1
    lists=(scripts/apt/*.txt)
fi

if [[ "${FAILBERRY_SKIP_APT:-0}" != 1 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup.sh: run as root (it installs Debian packages)" >&2
        exit 2
    fi
    mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^\s*$/d' "${lists[@]}" | sort -u)
    echo "setup: apt-get install ${#pkgs[@]} packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import iptc, pyroute2' 2>/dev/null; then
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
if [[ $with_tests == 1 ]]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
fi
echo "setup: ready; run .venv/bin/failberry" >&2
