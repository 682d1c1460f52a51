#!/usr/bin/env bash
# Build the Debian package of tmpl from a release binary, with dpkg-deb (no cargo-deb: it would
# cost CI a crate build). The package holds:
#   /usr/bin/tmpl
#   /usr/share/bash-completion/completions/tmpl, /usr/share/zsh/vendor-completions/_tmpl,
#   /usr/share/fish/vendor_completions.d/tmpl.fish        (tmpl completions SHELL)
#   /usr/share/man/man1/tmpl.1.gz, tmpl-verify.1.gz, ...   (tmpl man --out DIR)
#   /usr/share/doc/tmpl/: copyright, README.md.gz, changelog.gz, examples/ (the Nomad job in
#   deploy/nomad/, the template CI pipeline)
# Depends is derived from what the binary links (its NEEDED libraries and the highest symbol
# versions it uses, as dpkg-shlibdeps would); e2fsprogs is Recommended (inject-envd and
# rewrite-wrapper run debugfs and e2fsck), qemu-system-x86 Suggested (boot-test).
#
# Usage: scripts/build-deb.sh [--binary PATH] [--out DIR]
#   --binary PATH  the tmpl binary to package (default: target/release/tmpl, after
#                  `cargo build --release --locked`)
#   --out DIR      where the .deb and tmpl-VERSION-ARCH.tar.gz (the binary alone, for Nomad's
#                  `artifact` stanza) are written (default: target/deb)
# TMPL_DEB_MAINTAINER sets the Maintainer field (default: a placeholder lintian flags).
# Prints the path of the .deb on stdout. Needs dpkg-deb, objdump (binutils), gzip.
set -euo pipefail
umask 022

repo=$(cd "$(dirname "$0")/.." && pwd)
binary=""
out="$repo/target/deb"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb dpkg objdump gzip tar; do
  command -v "$tool" >/dev/null || { echo "build-deb.sh: $tool is needed" >&2; exit 4; }
done
if [ -z "$binary" ]; then
  # Built (or found up to date) from this tree, so the package never holds a stale binary.
  binary="$repo/target/release/tmpl"
  (cd "$repo" && cargo build --release --locked >&2)
fi
[ -x "$binary" ] || { echo "build-deb.sh: $binary is not an executable" >&2; exit 3; }

# Version from Cargo.toml's [package] (a SemVer pre-release 1.2.0-rc.1 sorts before 1.2.0 only as
# 1.2.0~rc.1 in Debian).
cargo_version=$(sed -n '/^\[package\]/,/^\[/{s/^version *= *"\([^"]*\)".*/\1/p}' "$repo/Cargo.toml" | head -n1)
[ -n "$cargo_version" ] || { echo "build-deb.sh: no version in Cargo.toml" >&2; exit 3; }
version=${cargo_version/-/\~}
arch=$(dpkg --print-architecture)
"$binary" --version | grep -qx "tmpl $cargo_version" || {
  echo "build-deb.sh: $binary says '$("$binary" --version)', Cargo.toml says $cargo_version" >&2; exit 3; }

# Reproducible: file times and gzip headers from the last commit (or SOURCE_DATE_EPOCH).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# Depends: each NEEDED library mapped to its package, versioned by the highest symbol version used.
max_version() { objdump -T "$binary" | grep -o "($1_[0-9.]*)" | tr -d '()' | sed "s/^$1_//" | sort -V | tail -n1; }
depends=()
for lib in $(objdump -p "$binary" | awk '$1 == "NEEDED" { print $2 }'); do
  case "$lib" in
    libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|librt.so.1|ld-linux*.so.*)
      dep="libc6 (>= $(max_version GLIBC))" ;;
    libgcc_s.so.1)
      v=$(max_version GCC); v=${v%.0}
      dep="libgcc-s1 (>= ${v:-3.0})" ;;
    *) echo "build-deb.sh: the binary links $lib, which this script does not know the package of" >&2; exit 3 ;;
  esac
  depends+=("$dep")
done
[ "${#depends[@]}" -gt 0 ] || { echo "build-deb.sh: $binary links no shared library (objdump -p)" >&2; exit 3; }
# Sorted and deduplicated, as dpkg-shlibdeps writes them.
depends_line=$(printf '%s\n' "${depends[@]}" | sort -u | paste -sd, -)
depends_line=${depends_line//,/, }

work=$(mktemp -d "${TMPDIR:-/tmp}/tmpl-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root="$work/root"
doc="$root/usr/share/doc/tmpl"

install -D -m 0755 "$binary" "$root/usr/bin/tmpl"
strip --strip-unneeded --remove-section=.comment "$root/usr/bin/tmpl" 2>/dev/null || true

install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/usr/share/man/man1"
"$binary" completions bash >"$root/usr/share/bash-completion/completions/tmpl"
"$binary" completions zsh >"$root/usr/share/zsh/vendor-completions/_tmpl"
"$binary" completions fish >"$root/usr/share/fish/vendor_completions.d/tmpl.fish"

"$binary" man --out "$work/man" >/dev/null
for page in "$work/man"/*.1; do
  name=$(basename "$page")
  gzip -9n <"$page" >"$root/usr/share/man/man1/$name.gz"
done

install -d "$doc/examples/nomad" "$doc/examples/ci"
gzip -9n <"$repo/README.md" >"$doc/README.md.gz"
gzip -9n <"$repo/CHANGELOG.md" >"$doc/CHANGELOG.md.gz"
maintainer=${TMPL_DEB_MAINTAINER:-tmpl maintainers <tmpl@invalid>}
# A native package's changelog.gz is read as a Debian changelog: one entry pointing at the real one.
gzip -9n >"$doc/changelog.gz" <<CHANGES
tmpl ($version) unstable; urgency=medium

  * Built from the tmpl repository; the changes are in CHANGELOG.md.gz.

 -- $maintainer  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
CHANGES
install -m 0644 "$repo"/deploy/nomad/*.hcl "$repo/deploy/nomad/README.md" "$doc/examples/nomad/"
install -m 0755 "$repo/deploy/nomad/collect.sh" "$doc/examples/nomad/"
install -m 0755 "$repo/scripts/template-ci.sh" "$doc/examples/ci/"
install -m 0644 "$repo"/templates/ci/* "$doc/examples/ci/"
cat >"$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: tmpl
Comment: Statically linked Rust crates are under MIT and/or Apache-2.0 licences.

Files: *
Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) the tmpl authors
License: Apache-2.0

License: Apache-2.0
 Licensed under the Apache License, Version 2.0 (the "License"); you may not
 use this software except in compliance with the License. You may obtain a copy
 of the License at https://www.apache.org/licenses/LICENSE-2.0
 .
 Unless required by applicable law or agreed to in writing, software
 distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
 WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
 License for the specific language governing permissions and limitations under
 the License.
 .
 On Debian systems, the complete text of the Apache License, Version 2.0 can be
 found in "/usr/share/common-licenses/Apache-2.0".
COPYRIGHT
chmod 0644 "$doc/copyright"

install -d "$root/DEBIAN"
installed_size=$(du -sk --apparent-size "$root" | cut -f1)
description=$(sed -n 's/^description *= *"\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: tmpl
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $installed_size
Depends: $depends_line
Recommends: e2fsprogs
Suggests: qemu-system-x86
Section: admin
Priority: optional
Description: $description
 tmpl checks and repairs E2B template builds (metadata.json, rootfs.ext4,
 memfile, snapfile and *.header files) without a cluster, without mounting
 and without root: verify, inspect, inject-envd, rewrite-wrapper, backups,
 purge-cache (node caches), boot-test (QEMU) and explain (decode errors).
 .
 e2fsprogs (debugfs, e2fsck) is needed by the commands that edit a rootfs;
 qemu-system-x86 by boot-test.
CONTROL
(cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb="$out/tmpl_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group -Zxz "$root" "$deb" >&2
# The binary alone, for Nomad's artifact stanza (deploy/nomad: tmpl_url).
tar --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" -C "$root/usr/bin" -czf \
  "$out/tmpl-${version}-${arch}.tar.gz" tmpl
echo "$deb"
