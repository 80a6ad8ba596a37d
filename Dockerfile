# syntax=docker/dockerfile:1
#
# One image for every container platform: Fly.io, Cloud Run, Railway and Render
# build this file, Heroku's container stack builds it through heroku.yml, and
# docker-compose.yml and the Kubernetes manifests run it.
#
#   docker build -t portbound .
#   docker run --rm -p 8080:8080 portbound
#
# Three build stages use cargo-chef so that the dependency graph (the slow part
# of a Rust build) is compiled in its own layer, keyed only on Cargo.toml and
# Cargo.lock. Editing src/ then rebuilds just this crate, not the ~200 crates
# under it. Fly's own Rust generator uses the same cargo-chef layout.

# The cargo-chef image is the official rust:*-slim-bookworm image with
# cargo-chef preinstalled. Both versions are pinned: the Rust minor version is
# the one in rust-toolchain.toml, and bookworm matches the distroless
# cc-debian12 runtime below, so the binary links against the same glibc it was
# built with.
FROM lukemathwalker/cargo-chef:0.1.73-rust-1.95-slim-bookworm AS chef
WORKDIR /app

# Stage 1: reduce the workspace to recipe.json, a description of the
# dependencies only. Its contents change only when the dependencies do, which
# is what lets Docker reuse the "cook" layer below.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# Stage 2: build the dependencies, then the application.
FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# --locked: build exactly the versions in Cargo.lock, and fail rather than
# silently resolve new ones, so the image matches what CI tested.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin portbound

# Stage 3: the runtime. distroless/cc has glibc, libgcc and CA certificates
# and nothing else: no shell, no package manager, no curl. That is why the
# health check below runs the binary's own `healthcheck` subcommand.
# The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

COPY --from=builder /app/target/release/portbound /usr/local/bin/portbound

# Cloud Run injects PORT=8080 and Fly routes to internal_port, 8080 by
# default (PLATFORMS.md). Baking the same value in means the image works
# unchanged where nothing injects PORT (plain `docker run`, Fly, Kubernetes).
# Platforms that do inject PORT (Heroku, Railway, Render) override this at
# run time, and the binary binds whatever PORT says; 8080 is only the default.
ENV PORT=8080
# Documentation only: Docker does not publish it, and Heroku ignores EXPOSE
# altogether (PLATFORMS.md). It must match ENV PORT.
EXPOSE 8080

# 65532:65532 is distroless's "nonroot" user and group. The tag already implies
# it; saying it again keeps the image non-root even if someone swaps the base
# for a tag that defaults to root. It is numeric, not `nonroot:nonroot`, because
# Kubernetes' runAsNonRoot can only verify a numeric uid (a name makes the pod
# fail with CreateContainerConfigError), and a name may not resolve outside the
# image (hadolint DL3066).
USER 65532:65532

# SIGTERM is what Docker, Kubernetes, Cloud Run, Heroku, Railway and Render
# send, and it starts the app's graceful drain. (The app drains on SIGINT too,
# because Fly's default kill_signal is SIGINT; fly.toml sets SIGTERM anyway.)
STOPSIGNAL SIGTERM

# Used by `docker run` and docker compose only; Heroku, Cloud Run, Fly and
# Kubernetes ignore HEALTHCHECK and use their own probes.
# `portbound healthcheck` GETs http://127.0.0.1:$PORT/healthz and exits 0/1;
# it runs inside the container, so it sees the same PORT as the server.
#   --interval=10s     often enough for compose's depends_on to start
#                      dependants quickly, rare enough to be noise-free
#   --timeout=3s       /healthz does no I/O; 3 s only trips on a wedged process
#   --start-period=5s  a Rust binary binds in milliseconds; 5 s absorbs a slow
#                      host without reporting "unhealthy" at boot
#   --retries=3        one dropped probe must not mark the container unhealthy
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/portbound", "healthcheck"]

# Exec form, so portbound itself is PID 1 and receives SIGTERM directly. The
# shell form (ENTRYPOINT portbound) would make /bin/sh PID 1 -- and this image
# has no /bin/sh at all -- and a shell does not forward SIGTERM, so the app
# would never drain and would be SIGKILLed at the end of the grace period.
# ENTRYPOINT rather than CMD so `docker run IMAGE healthcheck` and
# `docker run IMAGE openapi` run the subcommands.
ENTRYPOINT ["/usr/local/bin/portbound"]
