#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from the Go
# modules pinned in go.mod, once per version, into a cache outside the checkout:
#   ${PINGONE_CONTROLPLANE_CACHE:-$XDG_CACHE_HOME/pingone-operator/controlplane}/<version>-<go.sum digest>/
# Prints that bin directory on stdout. Nothing is downloaded but Go modules.
# Another Kubernetes version is built from its own module directory, named (relative to this one)
# by the first argument or $PINGONE_CONTROLPLANE_MODULE, e.g. versions/v1.30 for
# `make test-versions`; its cache key is computed the same way from that directory's files.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
module=${1:-${PINGONE_CONTROLPLANE_MODULE:-.}}
case $module in /*) ;; *) module=$here/$module ;; esac
[ -f "$module/go.mod" ] || { echo "no go.mod in $module" >&2; exit 1; }
cd "$module"

k8s_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' go.mod)
[ -n "$k8s_version" ] || k8s_version=$(grep -oE 'k8s.io/kubernetes v[0-9.]+' go.mod | head -1 | cut -d' ' -f2)
major=$(echo "${k8s_version#v}" | cut -d. -f1)
minor=$(echo "${k8s_version#v}" | cut -d. -f2)
digest=$(cat go.mod go.sum | sha256sum | cut -c1-12)

cache_root=${PINGONE_CONTROLPLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pingone-operator/controlplane}
bin="$cache_root/${k8s_version}-${digest}/bin"
tools=(kube-apiserver kube-controller-manager kubectl etcd)

complete=1
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || complete=0; done
if [ "$complete" = 1 ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
start=$(date +%s)
echo "building control plane $k8s_version into $bin (first time only; about 15-25 minutes on 2 cores)" >&2
export CGO_ENABLED=0 GOFLAGS=-mod=mod
go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kubectl >&2
go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3 >&2
for t in "${tools[@]}"; do mv "$tmp/$t" "$bin/$t"; done
echo "control plane built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
