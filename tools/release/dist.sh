#!/usr/bin/env bash
# Builds the release artifacts of one version of pingone-operator into ${DIST_DIR:-dist}/<version>/
# (docs/releasing.md is the procedure around it):
#
#   pingone-operator-<version>-image.oci.tar      the operator image, an OCI archive (deploy/image/build.sh)
#   pingone-operator-<version>.sbom.cdx.json      the image's CycloneDX SBOM
#   pingone-operator-<chart version>.tgz          the Helm chart (its own version), appVersion <version>
#   kubectl-pingone-v<version>-<os>-<arch>.tar.gz the kubectl plugin (binary and LICENSE at the root),
#                                                 for the host's platform only
#   pingone.yaml                                  the krew manifest of those archives
#   SHA256SUMS                                    of every file above (`sha256sum -c SHA256SUMS`)
#
# Usage: tools/release/dist.sh VERSION        (make dist VERSION=x.y.z)
#
# The same commit built with the same Rust toolchain and the same helm (tests/tools/go.mod) gives
# the same bytes: archive entries carry the commit's time (SOURCE_DATE_EPOCH), owner 0/0, fixed
# modes and a fixed order, gzip stores no name or time, and the plugin is compiled with the
# checkout's, Cargo's and the target directory's paths remapped, so where the build ran is not in
# the binary.
#
# Environment:
#   DIST_DIR            where <version>/ goes (default: dist/ in the checkout, git-ignored)
#   PINGONE_TOOLS_BIN   directory with helm (default: the one tests/tools/build.sh builds)
#   CARGO_TARGET_DIR    the plugin is built in $CARGO_TARGET_DIR/release-dist (default target/)
#   DIST_SKIP_IMAGE=1   development aid only: no image archive and no SBOM, so the result is not
#                       a release
#   DIST_ALLOW_DIRTY=1  development aid only: build from a tree with uncommitted changes
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# Release downloads live here; the krew manifest points at them.
release_url=https://github.com/tokenops/pingone-operator/releases/download

die() {
  echo "dist: $*" >&2
  exit 1
}
step() { echo "==> $*" >&2; }

version=${1:-${VERSION:-}}
[ -n "$version" ] || die "usage: tools/release/dist.sh VERSION (or make dist VERSION=x.y.z)"
case $version in
  v[0-9]*) die "VERSION=$version: give the version without the leading v (${version#v}); tags and the plugin's archive names add it" ;;
esac
# Semantic Versioning 2.0.0, without build metadata: an image tag cannot carry a `+`.
num='(0|[1-9][0-9]*)'
ident='(0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)'
semver="^$num\\.$num\\.$num(-$ident(\\.$ident)*)?\$"
if ! [[ $version =~ $semver ]]; then
  if [[ $version == *+* ]]; then
    die "VERSION=$version: build metadata (+...) is not allowed: image tags cannot carry a +"
  fi
  die "VERSION=$version is not a semantic version (MAJOR.MINOR.PATCH, optionally -PRERELEASE)"
fi

case ${DIST_DIR:-} in
  "" | /*) ;;
  *) DIST_DIR="$PWD/$DIST_DIR" ;;
esac
cd "$root"
cargo=${CARGO:-cargo}
# A parent cargo (dist.sh run by `cargo test`) describes its own package in these; build scripts
# that track them (ring's) would rebuild each time dist.sh ran from elsewhere.
for var in $(compgen -e); do
  case $var in
    CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_NAME | CARGO_BIN_NAME | CARGO_PRIMARY_PACKAGE | \
      CARGO_TARGET_TMPDIR | OUT_DIR) unset "$var" ;;
  esac
done

# The operator, its image and its plugin share one version, so the binaries must report the
# version the release is named after.
for pkg in pingone-operator kubectl-pingone; do
  id=$("$cargo" pkgid --locked -p "$pkg")
  have=${id##*[#@]}
  [ "$have" = "$version" ] ||
    die "VERSION=$version but package $pkg is version $have in its Cargo.toml: set version = \"$version\" in Cargo.toml and tools/kubectl-pingone/Cargo.toml (and Cargo.lock: cargo update -w), commit, then run this again (docs/releasing.md)"
done

tar --version 2>/dev/null | head -n1 | grep -q 'GNU tar' ||
  die "needs GNU tar (for --mtime, --owner and --numeric-owner); found: $(tar --version 2>&1 | head -n1)"

if [ -n "$(git status --porcelain)" ]; then
  [ "${DIST_ALLOW_DIRTY:-}" = 1 ] ||
    die "the working tree has uncommitted or untracked changes; a release is built from a commit (DIST_ALLOW_DIRTY=1 builds anyway, for development)"
  echo "dist: warning: uncommitted changes: these artifacts are not those of commit $(git rev-parse --short HEAD)" >&2
fi

# The chart has a version of its own (Chart.yaml: bumped on any change to the chart,
# docs/releasing.md); its appVersion names the operator release it deploys by default.
tools=${PINGONE_TOOLS_BIN:-$(bash tests/tools/build.sh)}
helm="$tools/helm"
[ -x "$helm" ] || die "no helm in $tools (tests/tools/build.sh builds it)"
chart_meta=$("$helm" show chart deploy/helm/pingone-operator)
chart_version=$(sed -n 's/^version: //p' <<<"$chart_meta")
chart_app=$(sed -n 's/^appVersion: //p' <<<"$chart_meta" | tr -d "\"'")
[ "$chart_app" = "$version" ] ||
  die "VERSION=$version but the chart's appVersion is $chart_app: set appVersion: \"$version\" in deploy/helm/pingone-operator/Chart.yaml and bump the chart's version (each chart version is published once), commit, then run this again (docs/releasing.md)"

revision=$(git rev-parse HEAD)
# Every archive entry carries the commit's time, so the same commit gives the same bytes.
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
export SOURCE_DATE_EPOCH
if [ "$(git tag --points-at HEAD --list "v$version")" != "v$version" ]; then
  echo "dist: note: HEAD is not tagged v$version (tag it once the artifacts are checked, docs/releasing.md)" >&2
fi

dist_parent=${DIST_DIR:-$root/dist}
out="$dist_parent/$version"
rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Writes a reproducible tar.gz of the files named (relative to dir, in the order given).
# Regular files only: no directory entries, whose modes and times would need fixing too.
repro_tgz() {
  local dest=$1 dir=$2
  shift 2
  tar --create --format=ustar --no-recursion --directory "$dir" \
    --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    -- "$@" | gzip -9 -n >"$dest"
}

# 1. The image and its SBOM.
if [ "${DIST_SKIP_IMAGE:-}" = 1 ]; then
  echo "dist: warning: DIST_SKIP_IMAGE=1: no image archive and no SBOM; this is not a release" >&2
else
  [ -f deploy/image/build.sh ] ||
    die "deploy/image/build.sh is missing, so the image archive and its SBOM cannot be built (DIST_SKIP_IMAGE=1 skips them, for development only)"
  step "image (deploy/image/build.sh)"
  image_out=$(bash deploy/image/build.sh --version "$version" --revision "$revision")
  image=$(printf '%s\n' "$image_out" | sed '/^[[:space:]]*$/d' | tail -n1)
  [ -f "$image" ] || die "deploy/image/build.sh printed '$image', which is not a file (expected the path of an OCI image archive)"
  sbom="$(dirname "$image")/sbom.cdx.json"
  [ -f "$sbom" ] || die "no sbom.cdx.json beside the image archive $image"
  cp "$image" "$out/pingone-operator-$version-image.oci.tar"
  cp "$sbom" "$out/pingone-operator-$version.sbom.cdx.json"
fi

# 2. The chart (its version and appVersion were checked above).
step "chart $chart_version (helm package)"
mkdir "$work/helm" "$work/chart"
"$helm" package deploy/helm/pingone-operator -d "$work/helm" >/dev/null
packaged=("$work"/helm/*.tgz)
[ "${#packaged[@]}" = 1 ] && [ -f "${packaged[0]}" ] || die "helm package wrote no single .tgz"
chart_file=$(basename "${packaged[0]}")
# helm stamps every entry with the current time, so its package is unpacked and packed again,
# in helm's own entry order (Chart.yaml first). -m: the times are replaced anyway; restoring
# them only draws warnings (helm's may lie a moment ahead of the clock).
tar -xzf "${packaged[0]}" -m -C "$work/chart"
tar -tzf "${packaged[0]}" >"$work/chart.list"
# helm writes every file 0644; the unpacked copies' modes depend on the umask.
while IFS= read -r f; do chmod 0644 "$work/chart/$f"; done <"$work/chart.list"
mapfile -t chart_entries <"$work/chart.list"
repro_tgz "$out/$chart_file" "$work/chart" "${chart_entries[@]}"
# The result must still be a chart helm accepts, with the same metadata.
"$helm" lint "$out/$chart_file" >"$work/lint.log" 2>&1 || {
  cat "$work/lint.log" >&2
  die "helm lint rejects the packaged chart"
}
[ "$("$helm" show chart "$out/$chart_file")" = "$chart_meta" ] ||
  die "the packaged chart's Chart.yaml differs from deploy/helm/pingone-operator/Chart.yaml"

# 3. The kubectl plugin, for the host's platform only: another target needs its standard library
# and a linker installed (docs/releasing.md, "Platforms of the plugin").
host=$(rustc -vV | sed -n 's/^host: //p')
case $host in
  x86_64-unknown-linux-gnu) os=linux arch=amd64 ;;
  aarch64-unknown-linux-gnu) os=linux arch=arm64 ;;
  x86_64-apple-darwin) os=darwin arch=amd64 ;;
  aarch64-apple-darwin) os=darwin arch=arm64 ;;
  *) die "no krew platform for the host target $host" ;;
esac
step "kubectl-pingone for $os/$arch ($(rustc -V))"
target_root=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$target_root"
target_root=$(cd "$target_root" && pwd)
# A target directory of its own: the path remapping below changes the compiler flags, which
# would otherwise rebuild the other release builds' dependencies each time either ran.
plugin_target="$target_root/release-dist"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
# The encoded form overrides RUSTFLAGS and any build.rustflags, so only these flags apply
# (unit separators between them, so paths may contain spaces). The last matching prefix wins:
# the target directory may lie inside the checkout.
sep=$'\x1f'
rustflags="--remap-path-prefix=$cargo_home=/cargo${sep}--remap-path-prefix=$root=/src"
rustflags+="${sep}--remap-path-prefix=$plugin_target=/target"
# A fixed SOURCE_DATE_EPOCH (C compilers date __DATE__ by it) rather than the commit's: build
# scripts that track it (ring's, through cc) would rebuild at every new commit.
SOURCE_DATE_EPOCH=0 CARGO_ENCODED_RUSTFLAGS="$rustflags" CARGO_TARGET_DIR="$plugin_target" \
  "$cargo" build --release --locked -p kubectl-pingone --target "$host"
bin="$plugin_target/$host/release/kubectl-pingone"
[ -x "$bin" ] || die "cargo built no $bin"
# The archive runs wherever the host's C library is at least as new as the one it links against.
if command -v objdump >/dev/null && [ "$os" = linux ]; then
  glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n1 || true)
  [ -z "$glibc" ] || echo "dist: kubectl-pingone needs glibc >= ${glibc#GLIBC_}" >&2
fi
mkdir "$work/plugin"
cp "$bin" "$work/plugin/kubectl-pingone"
cp LICENSE "$work/plugin/LICENSE"
chmod 0755 "$work/plugin/kubectl-pingone"
chmod 0644 "$work/plugin/LICENSE"
plugin_archive="kubectl-pingone-v$version-$os-$arch.tar.gz"
repro_tgz "$out/$plugin_archive" "$work/plugin" LICENSE kubectl-pingone

# 4. The krew manifest: deploy/krew/pingone.yaml with the version filled in and its platform
# entry repeated for each archive built (one line per platform: os arch uri sha256).
step "krew manifest"
platforms=""
for archive in "$out"/kubectl-pingone-v"$version"-*.tar.gz; do
  name=$(basename "$archive")
  pa=${name#kubectl-pingone-v"$version"-}
  pa=${pa%.tar.gz}
  sum=$(sha256sum "$archive" | cut -d' ' -f1)
  platforms+="${pa%%-*} ${pa#*-} $release_url/v$version/$name $sum"$'\n'
done
KREW_PLATFORMS=$platforms KREW_VERSION=$version awk '
  # Literal replacement: the placeholders hold characters that are special in a regex.
  function fill(s, key, val,   out, i) {
    out = ""
    while ((i = index(s, key)) > 0) {
      out = out substr(s, 1, i - 1) val
      s = substr(s, i + length(key))
    }
    return out s
  }
  BEGIN {
    n = split(ENVIRON["KREW_PLATFORMS"], plat, "\n")
    version = ENVIRON["KREW_VERSION"]
    print "# krew plugin manifest of kubectl-pingone v" version ", generated by tools/release/dist.sh"
    print "# from deploy/krew/pingone.yaml."
    header = 1
  }
  # The template says how it is filled in; the manifest does not need to.
  header && /^#/ { next }
  { header = 0 }
  /^ *# platform-begin/ { inblock = 1; lines = 0; next }
  /^ *# platform-end/ {
    inblock = 0
    blocks++
    for (p = 1; p <= n; p++) {
      if (plat[p] == "") continue
      split(plat[p], f, " ")
      for (l = 1; l <= lines; l++) {
        s = fill(block[l], "{{OS}}", f[1])
        s = fill(s, "{{ARCH}}", f[2])
        s = fill(s, "{{URI}}", f[3])
        s = fill(s, "{{SHA256}}", f[4])
        print fill(s, "{{VERSION}}", version)
      }
    }
    next
  }
  inblock { block[++lines] = $0; next }
  { print fill($0, "{{VERSION}}", version) }
  END { if (blocks != 1) exit 3 }
' deploy/krew/pingone.yaml >"$out/pingone.yaml" ||
  die "deploy/krew/pingone.yaml needs exactly one '# platform-begin' ... '# platform-end' block"
! grep -n '{{' "$out/pingone.yaml" >&2 || die "placeholders left in the krew manifest (above)"

# 5. Checksums of everything, in a fixed order.
(
  cd "$out"
  files=()
  for f in *; do [ "$f" = SHA256SUMS ] || files+=("$f"); done
  sha256sum -- "${files[@]}" >SHA256SUMS
)

display=$out
case $out in "$root"/*) display=${out#"$root"/} ;; esac
echo "$display/ (commit $revision, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH):"
total=0
for f in "$out"/*; do
  size=$(stat -c %s "$f")
  total=$((total + size))
  printf '%12s  %7s  %s\n' "$size" "$(numfmt --to=iec "$size")" "$(basename "$f")"
done
printf '%12s  %7s  %s\n' "$total" "$(numfmt --to=iec "$total")" "total"
