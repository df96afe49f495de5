#!/usr/bin/env bash
# The whole kaa-rs vs Mosquitto comparison in one command (BENCHMARKS.md):
#   scripts/bench.sh                 # 3 rounds, every target and scenario (~15 min)
#   scripts/bench.sh --quick         # a smoke run: one round, tiny loads
#   scripts/bench.sh --rounds 5 --targets up,peer --scenarios reqresp-qos1
# It builds kaa, kaa-load, kaa-responder and kaa-bench with the `profiling` profile (release code
# plus line tables), then runs kaa-bench, which writes bench-results/results.{md,json}.
# Needs: mosquitto (Debian package; not started as a service here, kaa-bench runs its own on a
# free loopback port) and, for the cluster target, nats-server (scripts/test-deps.sh installs it
# into .test-env).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -d .test-env/bin ]; then PATH="$PWD/.test-env/bin:$PATH"; fi
mosquitto="${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}"
if [ ! -x "$mosquitto" ]; then
  echo "bench: mosquitto is missing (apt-get install mosquitto)" >&2
  exit 1
fi
export MOSQUITTO="$mosquitto"
if ! command -v nats-server >/dev/null; then
  echo "bench: nats-server is not on PATH (scripts/test-deps.sh), needed for the cluster target" >&2
fi

cargo build --profile profiling -p kaa -p kaa-e2e \
  --bin kaa --bin kaa-load --bin kaa-responder --bin kaa-bench
out="${CARGO_TARGET_DIR:-target}/profiling"
KAA_BIN="$out/kaa" exec "$out/kaa-bench" "$@"
