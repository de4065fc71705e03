# syntax=docker/dockerfile:1
#
# The atoll operator image: ghcr.io/atoll-dev/atoll:<version>.
#
#   docker build -t ghcr.io/atoll-dev/atoll:0.1.0 .
#
# NOT BUILT IN THIS REPOSITORY'S CI: the development machines have no Docker
# engine (nor container registry access), so this file is checked by review
# only. Keep it in step with the build: `cargo build -p atoll` runs
# host/build.rs, which builds the built-in plugins for wasm32-wasip2 with the
# `plugin` profile and embeds them, so the builder needs that target and the
# whole workspace (every member's Cargo.toml, plugins/, guest-sdk/, wit/ and
# xtask/src/wasm_build.rs).

# The workspace's rust-version. Debian 12 (bookworm) on both sides, so the
# binary's glibc matches the runtime image's.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
# Caches persist between builds on the same builder; the binary is copied out
# of the cached target directory in the same step. Profile `dist`: release
# with whole-program optimisation (Cargo.toml).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p atoll \
    && install -D -m 0755 target/dist/atoll /out/atoll

# glibc and libgcc (what a Rust binary links dynamically), CA certificates,
# no shell; runs as uid/gid 65532 ("nonroot"), the user deploy/ expects.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/atoll /usr/local/bin/atoll
USER 65532:65532
# 8080: /metrics, /healthz, /readyz; 5679: gRPC API.
EXPOSE 8080 5679
ENTRYPOINT ["/usr/local/bin/atoll"]
CMD ["run"]
