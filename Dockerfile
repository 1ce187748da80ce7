# syntax=docker/dockerfile:1
# A static trae-proxy on an empty image, built from source in a Rust toolchain image:
# `docker build -t trae-proxy .` (or compose) on an amd64 or arm64 host with registry access.
# Dockerfile.dist makes the same image from the binaries in dist/ without pulling anything; that
# is the one CI builds and checks (docker/check-image.sh). See docs/operations.md, "Docker".
# The binary carries Mozilla's root certificates for backend TLS, so the image needs no
# /etc/ssl; DNS uses the resolv.conf and hosts files the engine mounts.

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools file \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Build for the builder's own architecture (amd64 -> x86_64, arm64 -> aarch64).
RUN set -eux; \
    target="$(uname -m)-unknown-linux-musl"; \
    rustup target add "$target"; \
    CC_aarch64_unknown_linux_musl=gcc CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=gcc \
        cargo build --release --locked --target "$target"; \
    cross/is-static.sh "target/$target/release/trae-proxy"; \
    cp "target/$target/release/trae-proxy" /trae-proxy

FROM scratch
COPY --from=build /trae-proxy /trae-proxy
WORKDIR /app
# Not root. Port 443 still binds: container engines let unprivileged processes bind low ports
# inside the container's network namespace (net.ipv4.ip_unprivileged_port_start=0).
USER 65534:65534
EXPOSE 443
VOLUME ["/app/ca"]
ENTRYPOINT ["/trae-proxy", "serve", "--config", "/app/config.yaml"]
