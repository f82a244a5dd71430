# syntax=docker/dockerfile:1
# A Golem node image: golem-daemon, golem-provider, both exe units and gftp.
# Build: docker build -t golem-node .   (needs a registry for the base images)
# Run:   see "Run a provider node as a service" in the README.

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked \
        -p golem-daemon -p golem-provider -p exe-unit-wasm -p exe-unit-vm -p golem-gftp \
    && mkdir -p /out \
    && cp target/dist/golem-daemon target/dist/golem-provider \
          target/dist/exe-unit-wasm target/dist/exe-unit-vm target/dist/gftp /out/

# --- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*
# golem-provider looks for the exe units beside itself.
COPY --from=build /out/ /usr/local/bin/
# The daemon's and the agent's data dirs: mount a volume on /var/lib/golem.
ENV GOLEM_DATA_DIR=/var/lib/golem/daemon \
    GOLEM_PROVIDER_DATA_DIR=/var/lib/golem/provider \
    GOLEM_BUS_SOCKET=/var/lib/golem/daemon/bus.sock \
    YAGNA_API_URL=http://127.0.0.1:7465
VOLUME /var/lib/golem
# libp2p; the REST API stays on the container's loopback unless
# GOLEM_API_ADDR=0.0.0.0:7465 is set (it still needs an app-key).
EXPOSE 11500
ENTRYPOINT ["/usr/bin/tini", "--"]
# The daemon by default (as root: the agent beside it needs the engine's
# socket and mounts); run `golem-provider run` in a second container
# sharing this one's network and volume (README).
CMD ["golem-daemon", "run"]
