#!/usr/bin/env bash
# Builds the test node from Go modules and Debian packages, once per version, into a cache
# outside the checkout:
#   ${PINGONE_NODE_CACHE:-$XDG_CACHE_HOME/pingone-operator/node}/<k8s>-<containerd>-<digest>/
#     bin/     kubelet, kube-scheduler (the control plane's k8s.io/kubernetes version, from
#              ../controlplane/go.mod), containerd, containerd-shim-runc-v2, ctr (go.mod here)
#     images/  busybox.tar and pause.tar: OCI image archives made here from Debian's
#              busybox-static and ./pause, imported into containerd by the test harness
# Prints that bin directory on stdout. Nothing is downloaded but Go modules; runc, the CNI
# plugins (containernetworking-plugins) and busybox-static come from Debian (.ci/run).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

k8s_version=$(grep -oE 'k8s.io/kubernetes v[0-9.]+' ../controlplane/go.mod | head -1 | cut -d' ' -f2)
containerd_version=$(grep -oE 'github.com/containerd/containerd/v2 v[0-9.]+' go.mod | head -1 | cut -d' ' -f2)
major=$(echo "${k8s_version#v}" | cut -d. -f1)
minor=$(echo "${k8s_version#v}" | cut -d. -f2)
digest=$(cat ../controlplane/go.mod ../controlplane/go.sum go.mod go.sum pause/main.go build.sh | sha256sum | cut -c1-12)

cache_root=${PINGONE_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pingone-operator/node}
top="$cache_root/${k8s_version}-${containerd_version}-${digest}"
bin="$top/bin"
images="$top/images"
tools=(kubelet kube-scheduler containerd containerd-shim-runc-v2 ctr)

complete=1
for t in "${tools[@]}"; do [ -x "$bin/$t" ] || complete=0; done
for i in busybox pause; do [ -f "$images/$i.tar" ] || complete=0; done
if [ "$complete" = 1 ]; then
  echo "$bin"
  exit 0
fi

for cmd in runc /usr/lib/cni/bridge /bin/busybox; do
  command -v "$cmd" >/dev/null || {
    echo "missing $cmd: install the Debian packages runc, containernetworking-plugins and busybox-static (.ci/run does)" >&2
    exit 1
  }
done

mkdir -p "$bin" "$images"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "building the test node (kubelet $k8s_version, containerd $containerd_version) into $top (first time only)" >&2
export CGO_ENABLED=0 GOFLAGS=-mod=mod

if [ ! -x "$bin/kubelet" ] || [ ! -x "$bin/kube-scheduler" ]; then
  # The control plane's module graph, copied so that its go.mod and go.sum stay untouched.
  mkdir -p "$tmp/kube"
  cp ../controlplane/go.mod ../controlplane/go.sum "$tmp/kube/"
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  (cd "$tmp/kube" && go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler) >&2
fi
if [ ! -x "$bin/containerd" ] || [ ! -x "$bin/containerd-shim-runc-v2" ] || [ ! -x "$bin/ctr" ] \
  || [ ! -f "$images/pause.tar" ]; then
  # No cgo: the btrfs, devmapper and zfs snapshotters are left out; overlayfs is used.
  go build -trimpath -tags no_btrfs,no_devmapper,no_zfs \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version" \
    -o "$tmp/" github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr ./pause >&2
fi

arch=$(go env GOARCH)
# oci_image NAME REF ROOTFS ENTRYPOINT_JSON: an OCI image layout archive with one layer.
oci_image() {
  local name=$1 ref=$2 rootfs=$3 entrypoint=$4 dir="$tmp/oci-$1"
  mkdir -p "$dir/blobs/sha256"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$dir/layer.tar" .
  local ldig lsize
  ldig=$(sha256sum "$dir/layer.tar" | cut -c1-64)
  lsize=$(stat -c %s "$dir/layer.tar")
  mv "$dir/layer.tar" "$dir/blobs/sha256/$ldig"
  blob() { # stores stdin as a blob, prints "digest size"
    cat >"$dir/blob"
    local d
    d=$(sha256sum "$dir/blob" | cut -c1-64)
    echo "$d $(stat -c %s "$dir/blob")"
    mv "$dir/blob" "$dir/blobs/sha256/$d"
  }
  local config manifest
  config=$(printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":%s,"Env":["PATH=/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$entrypoint" "$ldig" | blob)
  manifest=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    ${config} "$ldig" "$lsize" | blob)
  set -- $manifest
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$1" "$2" "$arch" "$ref" "${ref##*:}" >"$dir/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" -cf "$tmp/$name.tar" oci-layout index.json blobs
}

# busybox: Debian's static busybox and a link for each applet it has.
mkdir -p "$tmp/rootfs-busybox/bin" "$tmp/rootfs-busybox/tmp" "$tmp/rootfs-busybox/etc"
cp /bin/busybox "$tmp/rootfs-busybox/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$tmp/rootfs-busybox/bin/$applet"
done
echo 'nobody:x:65534:65534:nobody:/:/bin/sh' >"$tmp/rootfs-busybox/etc/passwd"
oci_image busybox pingone.local/busybox:1 "$tmp/rootfs-busybox" '["/bin/sh"]'
# pause: the sandbox process of every pod.
mkdir -p "$tmp/rootfs-pause"
if [ -x "$tmp/pause" ]; then cp "$tmp/pause" "$tmp/rootfs-pause/pause"; else
  (go build -trimpath -ldflags "-s -w" -o "$tmp/rootfs-pause/pause" ./pause) >&2
fi
oci_image pause pingone.local/pause:1 "$tmp/rootfs-pause" '["/pause"]'

for t in "${tools[@]}"; do [ -x "$tmp/$t" ] && mv "$tmp/$t" "$bin/$t"; done
mv "$tmp/busybox.tar" "$tmp/pause.tar" "$images/"
echo "test node built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
