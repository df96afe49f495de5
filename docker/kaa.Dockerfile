# syntax=docker/dockerfile:1
# The kaa-rs data-plane image: the `kaa` binary. The operator's pods run it as
#   kaa run <kind> --config /etc/kaa/config.json --nats-url ... --http-addr 0.0.0.0:9000
# (command `kaa`, found on PATH). Build from the repository root:
#   docker build -f docker/kaa.Dockerfile -t ghcr.io/kaa-rs/kaa:0.1.0 .

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out of them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kaa \
 && install -m 0755 target/release/kaa /usr/local/bin/kaa

# glibc, libgcc and CA certificates, no shell, no package manager; user 65532 (`nonroot`), the
# user the operator's pods run as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/kaa /usr/local/bin/kaa
USER 65532:65532
# 1883 MQTT, 8883 MQTTS (kpc); 9000 /health and /metrics (every service; `kaa run --http-addr`).
EXPOSE 1883 8883 9000
ENTRYPOINT ["/usr/local/bin/kaa"]
CMD ["--help"]
