# syntax=docker/dockerfile:1
# Build stage: release binary from the locked dependency set.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY emulator ./emulator
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin aos-audit-export \
 && strip target/release/aos-audit-export

# Runtime stage: slim Debian with CA certificates, non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/aos-audit-export --create-home aos
COPY --from=build /src/target/release/aos-audit-export /usr/local/bin/aos-audit-export
COPY config/example.toml /etc/aos-audit-export/example.toml
USER 10001:10001
WORKDIR /var/lib/aos-audit-export
ENV AOS_EXPORT_STATE__PATH=/var/lib/aos-audit-export/state/aos-audit-export.db
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/aos-audit-export"]
CMD ["run"]
