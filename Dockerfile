# syntax=docker/dockerfile:1
# pingone-operator: the glibc build on a root filesystem of its own, running as non-root.
#
#   docker build --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/tokenops/pingone-operator:0.1.0 .
#
# Without a container engine, deploy/image/build.sh (make image) builds the same image from the
# same recipe as an OCI archive.
#
# Why glibc and not a static musl binary: the image ships the very build that `make bench`
# measures (`cargo build --release` for the host's GNU target, glibc's allocator), so the
# memory and CPU figures in docs/performance.md are the image's. A musl build uses musl's
# allocator, which behaves differently under many small allocations, and cannot be measured on
# the bench machine. The libraries in the image are the builder's own (Debian 12), so the binary
# never needs a newer glibc than the image has.
#
# The deploy/base Deployment runs it with a read-only root filesystem and no capabilities; the
# binary needs neither a shell nor writable paths.

ARG RUST_VERSION=1

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# Dependencies first, in a layer of their own that is rebuilt only when the manifests or the
# lock file change: build them against stub sources. (Every workspace member's manifest must be
# present; if a manifest gains targets with explicit paths, add stubs for them here.)
COPY Cargo.toml Cargo.lock ./
COPY tests/testbed/Cargo.toml tests/testbed/Cargo.toml
COPY tools/kubectl-pingone/Cargo.toml tools/kubectl-pingone/Cargo.toml
RUN mkdir -p src tests/testbed/src tools/kubectl-pingone/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > tools/kubectl-pingone/src/main.rs \
 && touch src/lib.rs tests/testbed/src/lib.rs \
 && cargo build --release --locked --bin pingone-operator \
 && rm -rf src tests tools

# The real sources. Touch the crate roots: COPY keeps the context's modification times, which
# can be older than the stub build, and cargo would then keep the stub binary.
COPY . .
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin pingone-operator \
 && cp target/release/pingone-operator /pingone-operator

# The image's files come from the recipe the local build uses too (deploy/image/rootfs.sh, run
# by deploy/image/build.sh without a container engine): the binary, the loader and libraries it
# links from Debian's libc6 and libgcc-s1, Debian's CA certificates, and passwd/group entries for
# nonroot (65532). Nothing else: no shell, no package manager.
RUN deploy/image/rootfs.sh /pingone-operator /rootfs

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="pingone-operator" \
      org.opencontainers.image.description="Keeps a PingOne worker application's OAuth 2 access token fresh in a Kubernetes Secret" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/tokenops/pingone-operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=builder /rootfs /
USER 65532:65532
# One glibc malloc arena: the operator's threads (two runtime workers, the Secret watch's
# thread) are mostly waiting, and with an arena each, memory freed on one thread stayed with
# its arena: a burst of 1,000 connections peaked at 34.3 MiB with an arena per thread and at
# 27.7 MiB with one (make bench, docs/performance.md). The bench runs the operator with the same.
ENV PATH=/usr/local/bin:/usr/bin:/bin MALLOC_ARENA_MAX=1
EXPOSE 8080
ENTRYPOINT ["/pingone-operator"]
CMD ["run"]
