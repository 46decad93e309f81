# syntax=docker/dockerfile:1
#
# The production image of aos-audit-export: the binary built WITHOUT the `emulator` feature, on a
# slim Debian with CA certificates, running as uid 10001 on a read-only root filesystem.
#
# The image sets no AOS_EXPORT_* variable: environment variables beat the configuration file, so
# any value set here would silently override the ConfigMap of deploy/ (state.path did once).
# Everything the program writes goes to the directory of state.path (the SQLite database, its
# -wal/-shm/.lock files and the object-storage spool) and to the output; mount a volume for both.
# `.ci/deploy-contract` runs the binary exactly as this file and deploy/ describe it.

# Build stage: release binary from the locked dependency set.
# Build and runtime stages use the same Debian release (bookworm), so the glibc matches.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Cargo.toml names tests/it/main.rs and benches/*.rs as targets and the emulator as a workspace
# member: they must be present for cargo to read the manifest, even though nothing of them is built.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY emulator ./emulator
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --no-default-features --bin aos-audit-export \
 && strip target/release/aos-audit-export

# Runtime stage.
FROM debian:bookworm-slim
# ca-certificates is pinned (hadolint DL3008) to the version bookworm(-security) serves today;
# when a build fails because Debian has replaced it, take the new one from
# `apt-cache policy ca-certificates` in a debian:bookworm-slim container.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20250419~deb12u2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 aos \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /state \
      --shell /usr/sbin/nologin aos \
 && install -d -o 10001 -g 10001 -m 0770 /state
COPY --from=build /src/target/release/aos-audit-export /usr/local/bin/aos-audit-export
# Reference only (every key with its default); the deployment mounts its own configuration.
COPY config/example.toml /usr/share/doc/aos-audit-export/example.toml
USER 10001:10001
# Relative paths (the defaults ./state/… and ./out) land on the volume mounted here, never on the
# read-only root. deploy/ mounts its PersistentVolumeClaim at /state.
WORKDIR /state
# daemon mode: /healthz, /readyz, /metrics (daemon.listen).
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/aos-audit-export"]
CMD ["run"]
