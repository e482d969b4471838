#!/usr/bin/env bash
# Builds the test tools named by the `tool` directives of go.mod (helm, helm-docs, crane, and kstatus/,
# a small evaluator of kstatus rules of our own) from Go modules, once per go.mod+go.sum, into a
# cache outside the checkout:
#   ${PINGONE_TOOLS_CACHE:-$XDG_CACHE_HOME/pingone-operator/tools}/<go.mod+go.sum digest>/bin
# Prints that bin directory on stdout. Nothing is downloaded but Go modules.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

digest=$(cat go.mod go.sum | sha256sum | cut -c1-12)
cache_root=${PINGONE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pingone-operator/tools}
bin="$cache_root/${digest}/bin"
tools=(crane helm helm-docs kstatus)

complete=1
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || complete=0; done
if [ "$complete" = 1 ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
helm_version=$(awk '$1 == "helm.sh/helm/v3" {print $2; exit}' go.mod)
# helm's default Kubernetes version (capabilities of `helm template`, deprecation checks of
# `helm lint`) follows the client-go it is built with, as helm's own Makefile does: v0.37 -> 1.37.
client_go=$(awk '$1 == "k8s.io/client-go" {print $2; exit}' go.mod)
k8s_minor=$(echo "${client_go#v}" | cut -d. -f2)
start=$(date +%s)
echo "building test tools (helm $helm_version, helm-docs, kstatus, crane) into $bin (first time only; a few minutes on 2 cores)" >&2
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
# Stamp helm's exact release (a module build otherwise reports only "v3.22") and Kubernetes
# version (otherwise 1.20).
h=helm.sh/helm/v3
ldflags="-s -w -X $h/internal/version.version=$helm_version -X $h/internal/version.gitTreeState=clean"
for p in pkg/chartutil pkg/lint/rules; do
  ldflags="$ldflags -X $h/$p.k8sVersionMajor=1 -X $h/$p.k8sVersionMinor=$k8s_minor"
done
# Low priority: the first test that needs the tools builds them while other tests run.
nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/" tool >&2
for t in "${tools[@]}"; do mv "$tmp/$t" "$bin/$t"; done
echo "test tools built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
