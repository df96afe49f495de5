# syntax=docker/dockerfile:1
# The kaa-rs operator image: `kaa-operator run` (charts/kaa-operator runs it). Build from the
# repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/kaa-rs/kaa-operator:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kaa-operator \
 && install -m 0755 target/release/kaa-operator /usr/local/bin/kaa-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/kaa-operator /usr/local/bin/kaa-operator
USER 65532:65532
# /health and /metrics (`--http-addr`, 0.0.0.0:8080 by default).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kaa-operator"]
CMD ["run"]
