# syntax=docker/dockerfile:1
#
# xecm-bridge container image.
#   docker build -t xecm-bridge:dev .
#   docker run --rm -p 8080:8080 -v "$PWD/config.toml:/etc/xecm-bridge/config.toml:ro" \
#     -v xecm-data:/data -e XECM_BRIDGE__OPENTEXT__PASSWORD=… xecm-bridge:dev
#
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

# Base images are pinned by digest (the tag only documents it), so a rebuild uses the bytes that
# were reviewed. To move on: `docker buildx imagetools inspect <image>:<tag>`, then update both.
ARG BUILD_IMAGE=rust:1.95-slim-bookworm@sha256:d7482085ff5b415f84dba5647ae71606650bdef00db7aeb69f4b3d170c3e4082
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f

# --- build -------------------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Compile-time checked SQL reads the prepared query data in .sqlx/, not a live database.
ENV SQLX_OFFLINE=true CARGO_TERM_COLOR=never

# `--no-default-features` leaves the simulators and `demo` out of the production binary; the
# release profile strips it.
# Dependency caching: the cargo registry and the target directory are BuildKit cache mounts that
# survive between builds, so a source change recompiles the crate, not its dependencies. (No
# stub-crate layer: it breaks as soon as Cargo.toml names explicit bench or test targets.)
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --no-default-features --bin xecm-bridge \
    && install -D -m 0755 target/release/xecm-bridge /out/xecm-bridge \
    && install -d -m 0750 /out/data

# --- runtime -----------------------------------------------------------------------------------
# Distroless: glibc, CA certificates (the system trust store the upstream clients use, besides
# any configured ca_file) and tzdata; no shell, no package manager. Runs as uid 65532.
FROM ${RUNTIME_IMAGE} AS runtime

LABEL org.opencontainers.image.title="xecm-bridge" \
      org.opencontainers.image.description="Connects 4ALLPORTAL with OpenText Extended ECM Business Workspaces" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/xecm-bridge /usr/local/bin/xecm-bridge
# The embedded SQLite store defaults to data/bridge.db below the working directory.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /

# Inside a container the server must listen on all interfaces (the built-in default is loopback).
ENV XECM_BRIDGE__SERVER__LISTEN=0.0.0.0:8080
USER 65532:65532
EXPOSE 8080
VOLUME ["/data"]

# No curl in the image: the binary checks its own /healthz. It reads only server.listen (from
# the environment above), so it works without the configuration file or any secret.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/xecm-bridge", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/xecm-bridge"]
CMD ["serve", "--config", "/etc/xecm-bridge/config.toml"]
