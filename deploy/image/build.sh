#!/usr/bin/env bash
# Builds the operator image without a container engine: the release binary, the root
# filesystem of deploy/image/rootfs.sh (the recipe the Dockerfile's last stage runs too), one
# gzip layer, an OCI image config and an OCI image layout archive that `ctr images import`,
# `docker load`, `podman load` and `crane push` take. Beside it: a CycloneDX SBOM (the Rust
# crates in the binary, from Cargo.lock, and the Debian packages in the image).
#
#   deploy/image/build.sh [--version V] [--revision R] [--binary PATH]
#
#   --version   the image's version label and tag (default: Cargo.toml's package version)
#   --revision  the source revision label (default: git rev-parse HEAD)
#   --binary    use this operator binary instead of building one (cargo build --release, paths
#               remapped, in $CARGO_TARGET_DIR/release-dist)
#
# The result is cached by content (binary, recipe, versions, Debian packages) in
#   ${PINGONE_IMAGE_CACHE:-$XDG_CACHE_HOME/pingone-operator/image}/<digest>/
#     pingone-operator.oci.tar  sbom.cdx.json  packages.tsv  image.env
# and the archive's path is printed on stdout. Every timestamp is SOURCE_DATE_EPOCH (default:
# the commit's time), so the same inputs give the same bytes.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"

version="" revision="" binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --version) version=$2; shift 2 ;;
    --revision) revision=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$version" ] || version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
[ -n "$revision" ] || revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
repository=${IMAGE_REPOSITORY:-ghcr.io/tokenops/pingone-operator}
ref="$repository:$version"
source_url=https://github.com/tokenops/pingone-operator

host=$(rustc -vV | sed -n 's/^host: //p')
if [ -z "$binary" ]; then
  # Built as tools/release/dist.sh builds the plugin, in the same target directory (they share
  # their dependencies' builds): the checkout's, Cargo's and the target directory's paths
  # remapped, so the binary, and so the image, is the same wherever the checkout lies. Its own
  # target directory: the remapping changes the compiler flags, which would otherwise rebuild
  # the other release builds (make bench's) each time either ran.
  for var in $(compgen -e); do # what a parent cargo (a test) says of its own package
    case $var in
      CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_NAME | CARGO_BIN_NAME | CARGO_PRIMARY_PACKAGE | \
        CARGO_TARGET_TMPDIR | OUT_DIR) unset "$var" ;;
    esac
  done
  target_root=${CARGO_TARGET_DIR:-$repo/target}
  mkdir -p "$target_root"
  target=$(cd "$target_root" && pwd)/release-dist
  cargo_home=${CARGO_HOME:-$HOME/.cargo}
  sep=$'\x1f'
  rustflags="--remap-path-prefix=$cargo_home=/cargo${sep}--remap-path-prefix=$repo=/src"
  rustflags+="${sep}--remap-path-prefix=$target=/target"
  start=$(date +%s)
  SOURCE_DATE_EPOCH=0 CARGO_ENCODED_RUSTFLAGS="$rustflags" CARGO_TARGET_DIR="$target" \
    cargo build --release --locked --bin pingone-operator -p pingone-operator --target "$host" >&2
  binary="$target/$host/release/pingone-operator"
  echo "image: release binary ready in $(( $(date +%s) - start ))s" >&2
fi
[ -x "$binary" ] || { echo "build.sh: no binary at $binary" >&2; exit 1; }

arch=$(go env GOARCH 2>/dev/null || dpkg --print-architecture)
packages_in() { # the versions of the Debian packages the recipe copies from
  dpkg-query -W -f '${Package} ${Version}\n' libc6 libgcc-s1 ca-certificates 2>/dev/null || true
}
key=$( { sha256sum "$binary" | cut -c1-64; cat "$here/rootfs.sh" "$here/build.sh" "$here/sbom.py";
  echo "$version $revision $epoch $ref $arch"; packages_in; } | sha256sum | cut -c1-16)
cache_root=${PINGONE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pingone-operator/image}
out="$cache_root/$key"
if [ -f "$out/pingone-operator.oci.tar" ] && [ -f "$out/sbom.cdx.json" ]; then
  echo "image: cached $ref ($out)" >&2
  echo "$out/pingone-operator.oci.tar"
  exit 0
fi

start=$(date +%s)
mkdir -p "$cache_root"
tmp=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$here/rootfs.sh" "$binary" "$tmp/rootfs" "$tmp/packages.tsv"

layout="$tmp/oci"
mkdir -p "$layout/blobs/sha256"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
  -C "$tmp/rootfs" -cf "$tmp/layer.tar" .
diff_id=$(sha256sum "$tmp/layer.tar" | cut -c1-64)
gzip -n -9 <"$tmp/layer.tar" >"$tmp/layer.tar.gz"
rm "$tmp/layer.tar"
blob() { # FILE: moves FILE into the layout; prints "digest size"
  local d s
  d=$(sha256sum "$1" | cut -c1-64)
  s=$(stat -c %s "$1")
  mv "$1" "$layout/blobs/sha256/$d"
  echo "$d $s"
}
read -r layer_digest layer_size < <(blob "$tmp/layer.tar.gz")
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
labels=$(printf '"org.opencontainers.image.%s":"%s",' \
  title pingone-operator \
  description "Keeps a PingOne worker application's OAuth 2 access token fresh in a Kubernetes Secret" \
  licenses Apache-2.0 source "$source_url" version "$version" revision "$revision" created "$created")
# MALLOC_ARENA_MAX=1: see the Dockerfile; the two must agree (a test checks it).
printf '{"architecture":"%s","os":"linux","created":"%s","config":{"User":"65532:65532","Entrypoint":["/pingone-operator"],"Cmd":["run"],"Env":["PATH=/usr/local/bin:/usr/bin:/bin","MALLOC_ARENA_MAX=1"],"ExposedPorts":{"8080/tcp":{}},"WorkingDir":"/","Labels":{%s}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"%s","created_by":"deploy/image/rootfs.sh"}]}' \
  "$arch" "$created" "${labels%,}" "$diff_id" "$created" >"$tmp/config.json"
read -r config_digest config_size < <(blob "$tmp/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}],"annotations":{%s}}' \
  "$config_digest" "$config_size" "$layer_digest" "$layer_size" "${labels%,}" >"$tmp/manifest.json"
read -r manifest_digest manifest_size < <(blob "$tmp/manifest.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest_digest" "$manifest_size" "$arch" "$ref" "$version" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
# docker load (before Docker 25) and crane push read this Docker archive manifest.
printf '[{"Config":"blobs/sha256/%s","RepoTags":["%s"],"Layers":["blobs/sha256/%s"]}]' \
  "$config_digest" "$ref" "$layer_digest" >"$layout/manifest.json"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
  -C "$layout" -cf "$tmp/pingone-operator.oci.tar" oci-layout index.json manifest.json blobs

cargo tree --locked -e normal -p pingone-operator --target "$host" --prefix none \
  --no-dedupe --format '{p}	{l}' | sort -u >"$tmp/crates.tsv"
python3 "$here/sbom.py" --name pingone-operator --version "$version" \
  --image "$ref@sha256:$manifest_digest" --epoch "$epoch" --arch "$arch" \
  --crates "$tmp/crates.tsv" --packages "$tmp/packages.tsv" >"$tmp/sbom.cdx.json"

size=$(stat -c %s "$tmp/pingone-operator.oci.tar")
rootfs_bytes=$(du -sb "$tmp/rootfs" | cut -f1)
printf 'IMAGE_REF=%s\nIMAGE_DIGEST=sha256:%s\nIMAGE_ARCHIVE_BYTES=%s\nIMAGE_LAYER_BYTES=%s\nIMAGE_UNPACKED_BYTES=%s\n' \
  "$ref" "$manifest_digest" "$size" "$layer_size" "$rootfs_bytes" >"$tmp/image.env"
mkdir -p "$out"
mv "$tmp/pingone-operator.oci.tar" "$tmp/sbom.cdx.json" "$tmp/packages.tsv" "$tmp/image.env" "$out/"
echo "image: built $ref sha256:$manifest_digest in $(( $(date +%s) - start ))s:" \
  "archive $size bytes, unpacked $rootfs_bytes bytes, packages: $(cut -f1,2 "$out/packages.tsv" | tr '\t\n' '= ')" >&2
echo "$out/pingone-operator.oci.tar"
