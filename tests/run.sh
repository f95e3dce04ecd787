#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine: installs the real components the
# integration tests start (Postfix, spamd, NSD, Prometheus, Dovecot, clamd, Redis, HAProxy,
# Chromium, nmap, swaks), creates a virtualenv with spamgate and its test tools, then runs
# ruff, the import-layering contracts, mypy --strict and pytest.
# Extra arguments go to pytest, e.g. `./tests/run.sh -k relay`.
set -euo pipefail
cd "$(dirname "$0")/.."

DEB_PACKAGES=(postfix spamassassin spamd spamc swaks nsd prometheus dovecot-core openssl ca-certificates publicsuffix nmap
              clamav-daemon redis-server haproxy
              systemd chromium iproute2
              python3-venv)

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    echo "== apt-get: ${DEB_PACKAGES[*]}"
    apt-get update -q >/dev/null
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string spamgate.test" | debconf-set-selections
    apt-get install -y -q --no-install-recommends "${DEB_PACKAGES[@]}" >/dev/null
else
    echo "== not root or no apt-get: assuming ${DEB_PACKAGES[*]} are installed"
fi

# Postfix's postlogd takes every log line of a test Postfix on one unix datagram socket. With the
# kernel's own queue length (10; systemd's sysctl defaults raise it to 512 on a booted Debian) a
# burst at start-up fills it while postlogd logs to itself, and the whole instance blocks for
# good (seen in CI: `postfix stop` never returned).
qlen=$(cat /proc/sys/net/unix/max_dgram_qlen 2>/dev/null || echo 512)
if [ "$qlen" -lt 512 ] && [ "$(id -u)" = 0 ]; then
    echo "== net.unix.max_dgram_qlen $qlen -> 512 (as systemd sets it)"
    echo 512 > /proc/sys/net/unix/max_dgram_qlen
fi

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv "$VENV"
fi
echo "== pip install -e .[test]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
"$VENV/bin/ruff" check proxy filters tests
echo "== import contracts (import-linter)"
"$VENV/bin/lint-imports"
echo "== mypy --strict"
# mypy finds the packages by their installed names (spamgate.proxy, spamgate.filters) here.
mkdir -p build/typecheck/spamgate
ln -sfn ../../../proxy build/typecheck/spamgate/proxy
ln -sfn ../../../filters build/typecheck/spamgate/filters
"$VENV/bin/mypy"
echo "== pytest"
exec "$VENV/bin/pytest" "$@"
