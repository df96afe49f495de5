# The commands CI and developers run. `make test` is the one the README names.
.PHONY: test build fmt lint run generate

# Everything: installs test dependencies, builds the binary, runs every test.
test:
	@bin="$$(scripts/test-deps.sh)" && cargo build -p kaa && \
	PATH="$$bin:$$PATH" cargo nextest run --workspace --no-fail-fast

build:
	cargo build --release -p kaa

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --workspace --all-targets -- -D warnings

run:
	cargo run -p kaa -- up

# Checked-in generated files: the Blueprint CRD (operator/tests/crd.rs fails when it drifts).
generate:
	cargo run -q -p kaa-operator -- crd > crds/blueprint.yaml
