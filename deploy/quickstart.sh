#!/usr/bin/env bash
# Try spamgate on a bare Debian box: installs Python's venv support if needed, installs
# spamgate into ./.venv and runs it on the embedded default config: an mx listener on
# 127.0.0.1:2525 that delivers into ./spamgate-maildir (no MTA needed).
# Send it a message with e.g. `swaks --server 127.0.0.1:2525 --to you@example.com`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q && apt-get install -y -q python3-venv
    else
        echo "python3-venv is missing: sudo apt-get install python3-venv" >&2; exit 1
    fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check .
exec .venv/bin/spamgate run "$@"
