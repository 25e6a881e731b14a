# syntax=docker/dockerfile:1
# The nexingest worker for an ECS task (SQS consumer). Multi-stage: build with the Rust
# toolchain and the NetCDF/HDF5 headers, run on a slim Debian with only the shared libraries,
# as an unprivileged user. The binary is PID 1 (exec-form ENTRYPOINT, no shell), so the
# SIGTERM ECS sends on stop / spot interruption reaches it and starts the drain.

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetcdf-dev libhdf5-dev pkg-config clang \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p worker \
 && install -m 0755 target/release/nexingest /usr/local/bin/nexingest

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnetcdf19 libhdf5-103-1 libhdf5-hl-100 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin nexingest \
 && mkdir -p /work && chown nexingest /work
COPY --from=build /usr/local/bin/nexingest /usr/local/bin/nexingest
USER 10001:10001
WORKDIR /work
# Downloads go to /work (mount a task volume there for large files); JSON logs for CloudWatch.
ENV NEXINGEST_WORK_DIR=/work \
    NEXINGEST_LOG_FORMAT=json \
    NEXINGEST_DRAIN_TIMEOUT=90
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/nexingest"]
CMD ["run"]
