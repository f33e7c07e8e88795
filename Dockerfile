# syntax=docker/dockerfile:1
# Portcullis container image: build with `docker build -t portcullis .` (BuildKit).
#
# Runs as uid 65532 (distroless "nonroot") and writes only under /data: the SQLite
# database, its master key (unless PORTCULLIS_MASTER_KEY_FILE points elsewhere) and the
# mail outbox. The root filesystem can be read-only. One port, 8080, serves gRPC (h2c)
# and HTTP/1.1.

# ---- build ---------------------------------------------------------------------------
# rustc 1.85+ is required (edition 2024); the image's gcc compiles the bundled SQLite.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Everything cargo needs to parse the manifest (the bench targets are declared in
# Cargo.toml) and to run build.rs (proto/, third_party/) and the include_str!'d migrations.
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo ./.cargo
COPY src ./src
COPY proto ./proto
COPY migrations ./migrations
COPY third_party ./third_party
COPY benches ./benches

# The registry caches survive between builds; target/ does not, so the binary stays in
# this layer for the runtime stage to copy.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo build --release --locked --bin portcullis

# distroless has no shell to mkdir with: make the volume's folder here, owned by nonroot
# when copied below, so a fresh named volume starts out writable by uid 65532.
RUN mkdir -p /rootfs/data/mail-outbox

# ---- runtime -------------------------------------------------------------------------
# glibc and libgcc, nothing else; "nonroot" is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /src/target/release/portcullis /usr/local/bin/portcullis
COPY --from=build --chown=65532:65532 /rootfs/data /data

ENV PORTCULLIS_LISTEN=0.0.0.0:8080 \
    PORTCULLIS_DATABASE_URL=sqlite:///data/portcullis.db \
    PORTCULLIS_MAIL_OUTBOX=/data/mail-outbox \
    PORTCULLIS_LOG_FORMAT=json

VOLUME /data
EXPOSE 8080
USER 65532:65532

# gRPC health (service "") on PORTCULLIS_LISTEN's port: exit 0 when SERVING, 1 otherwise
# (the database is unreachable, or the server is draining after SIGTERM).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/portcullis", "healthcheck"]

# SIGTERM (docker stop): not ready at once, serves PORTCULLIS_SHUTDOWN_GRACE (5 s) more,
# then in-flight calls get PORTCULLIS_SHUTDOWN_TIMEOUT (30 s): use `docker stop -t 40`.
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve"]
