# pingone-operator: build, test, demo.
# The integration tests need a local control plane (etcd, kube-apiserver,
# kube-controller-manager, kubectl) built from Go modules; `controlplane` builds
# it once and caches it under ~/.cache/pingone-operator (see tests/controlplane). The tests
# of pods on a real node need containerd, the kubelet and kube-scheduler, built the same way by
# `node` (see tests/node), and Debian's runc, containernetworking-plugins and busybox-static.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all build image controlplane node test lint fmt crds chart-docs demo bench soak clean

all: build

build:
	$(CARGO) build --release --bin pingone-operator

## The operator image as an OCI archive, built without a container engine from the recipe the
## Dockerfile uses too (deploy/image/rootfs.sh); prints its path. Load it with
## `docker load -i`, `podman load -i`, `ctr images import` or push it with `crane push`.
image:
	@bash deploy/image/build.sh

controlplane:
	@bash tests/controlplane/build.sh

node:
	@bash tests/node/build.sh

## Every test: unit, CRD, stand-in, control plane and operator integration tests, and the
## operator image (make image) run as pods from the chart and the kustomize base.
## The integration tests mostly wait (for renewals, for a ten-minute backoff window), so they
## run many at a time; each has its own namespace, stand-in and operator.
TEST_THREADS ?= 24
test:
	@bin=$$(bash tests/controlplane/build.sh) && tools=$$(bash tests/tools/build.sh) && \
	  node=$$(bash tests/node/build.sh) && image=$$(bash deploy/image/build.sh) && \
	  PINGONE_CONTROLPLANE_BIN=$$bin PINGONE_TOOLS_BIN=$$tools PINGONE_NODE_BIN=$$node \
	  PINGONE_OPERATOR_IMAGE=$$image RUST_TEST_THREADS=$(TEST_THREADS) \
	  $(CARGO) test --workspace --all-targets --locked

## The operator integration tests (cargo test --test operator) against the oldest and the newest
## Kubernetes minor versions the project supports with everything it ships (1.30: the guard rails
## are admissionregistration.k8s.io/v1 ValidatingAdmissionPolicies; see
## tests/controlplane/versions/v1.30/go.mod), each control plane built from Go modules by
## tests/controlplane/build.sh from its own module directory (TEST_VERSIONS, relative to
## tests/controlplane; "." is the default version of `make test`). The tests that need the test
## node (node::, installed::) are skipped for every version: its kubelet and containerd are built
## for the default version only (tests/node), and `make test` runs them. Logs go to
## target/test-versions/; prints each version's result line and time, and fails if any failed.
TEST_VERSIONS ?= versions/v1.30 .
.PHONY: test-versions
test-versions:
	@set -o pipefail; tools=$$(bash tests/tools/build.sh) && node=$$(bash tests/node/build.sh) && \
	  $(CARGO) test --locked --test operator --no-run && \
	  logs=$${CARGO_TARGET_DIR:-target}/test-versions && mkdir -p $$logs && summary= && failed= && \
	  for v in $(TEST_VERSIONS); do \
	    start=$$(date +%s); \
	    if ! bin=$$(bash tests/controlplane/build.sh "$$v"); then failed="$$failed $$v"; \
	      summary="$$summary$$v: control plane build failed\n"; continue; fi; \
	    built=$$(date +%s); k8s=$$("$$bin/kube-apiserver" --version | awk '{print $$2}'); \
	    echo "=== operator tests against Kubernetes $$k8s ($$v)"; \
	    PINGONE_CONTROLPLANE_BIN=$$bin PINGONE_TOOLS_BIN=$$tools PINGONE_NODE_BIN=$$node \
	      RUST_TEST_THREADS=$(TEST_THREADS) $(CARGO) test --locked --test operator -- \
	      --skip node:: --skip installed:: 2>&1 | tee $$logs/$$k8s.log || failed="$$failed $$k8s"; \
	    result=$$(grep -E '^test result:' $$logs/$$k8s.log | tail -1); \
	    summary="$$summary$$k8s: $${result:-no result line} (build $$((built - start))s, tests $$(( $$(date +%s) - built ))s)\n"; \
	  done; \
	  printf "=== test-versions\n%b" "$$summary"; [ -z "$$failed" ] || { echo "failed:$$failed" >&2; exit 1; }

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

## Regenerate the CRD YAML from the Rust types, and the Helm chart's copy of it.
crds:
	$(CARGO) run -q --bin pingone-operator -- crd > crds/pingoneconnections.pingone.tokenops.dev.yaml
	cp crds/pingoneconnections.pingone.tokenops.dev.yaml deploy/helm/pingone-operator/files/crds/

## Regenerate the Helm chart's README (its values table) from values.yaml and README.md.gotmpl
## with helm-docs, built from Go modules by tests/tools/build.sh.
chart-docs:
	@tools=$$(bash tests/tools/build.sh) && "$$tools/helm-docs" --chart-search-root=deploy/helm/pingone-operator \
	  --sort-values-order=file --log-level=warning

## The main job end to end: local control plane, PingOne stand-in, the operator binary and
## examples/; prints the Ready condition, the token Secret and metrics; when a node can run here
## (root, runc, CNI plugins), what a pod read from the mounted token Secret before and after a
## rotation; then stops cleanly.
demo:
	$(CARGO) build --release --locked --bin pingone-operator -p pingone-operator
	$(CARGO) build --release --locked -p pingone-testbed --bin pingone-demo
	@bin=$$(bash tests/controlplane/build.sh) && node=$$(bash tests/node/build.sh || true) && \
	  PINGONE_CONTROLPLANE_BIN=$$bin PINGONE_NODE_BIN=$${node:-/nonexistent} \
	  $${CARGO_TARGET_DIR:-target}/release/pingone-demo

## The seeded fault soak (docs/reliability.md, "Seeded fault soak"): the operator binary, two
## replicas with leader election, 200 connections, faults of every class on a schedule drawn
## from a seed, the promises checked every second by an independent checker. 30 minutes by
## default; e.g. `make soak SOAK_ARGS="--seed 42 --duration 5m"` (see `pingone-soak --help`).
## Exits 1 on a violation; the seed it prints re-runs the same schedule. Logs: target/soak.
SOAK_ARGS ?=
soak:
	$(CARGO) build --locked --bin pingone-operator -p pingone-operator
	$(CARGO) build --locked -p pingone-testbed --bin pingone-soak
	@bin=$$(bash tests/controlplane/build.sh) && \
	  PINGONE_CONTROLPLANE_BIN=$$bin $${CARGO_TARGET_DIR:-target}/debug/pingone-soak \
	    --out $${CARGO_TARGET_DIR:-target}/soak $(SOAK_ARGS)

## The scale benchmark (issues 6 and 12, docs/performance.md): the release operator binary (the
## glibc build the image ships) against the local control plane and the PingOne stand-in, each
## figure against a floor measured in the same run; prints one table (also written to
## target/bench-results.md). The issue-12 scenarios alone take about 45 minutes on 2 cores (the
## 10,000-connection start runs three times, about 29 of them);
## pass flags with e.g. `make bench BENCH_ARGS=--quick` or
## `BENCH_ARGS=--scenarios=cold-start,memory` (see `pingone-bench --help`). Exits 2 when a goal is
## missed, 1 on an error (a figure that cannot be read is one).
BENCH_ARGS ?=
bench:
	$(CARGO) build --release --locked --bin pingone-operator -p pingone-operator
	$(CARGO) build --release --locked -p pingone-testbed --bin pingone-bench
	@bin=$$(bash tests/controlplane/build.sh) && \
	  PINGONE_CONTROLPLANE_BIN=$$bin $${CARGO_TARGET_DIR:-target}/release/pingone-bench \
	    --markdown $${CARGO_TARGET_DIR:-target}/bench-results.md $(BENCH_ARGS)

## Release artifacts of VERSION into dist/VERSION/ (docs/releasing.md): the image archive and its
## SBOM, the Helm chart, the kubectl plugin archive, its krew manifest and SHA256SUMS, the same
## bytes for the same commit. VERSION must equal the version in Cargo.toml.
.PHONY: dist
dist:
	@VERSION="$(VERSION)" bash tools/release/dist.sh
