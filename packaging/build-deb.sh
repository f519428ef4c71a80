#!/bin/sh
# Build the fcgi-launch .deb from a release binary with dpkg-deb alone (no
# debhelper, no source package, no root). The recipe is packaging/debian/:
# a control template, copyright, changelog and maintainer scripts; this
# script lays out the files the way Debian policy and lintian want them.
#
#   packaging/build-deb.sh [-b BINARY] [-o OUTDIR]
#
#   -b BINARY  package this binary, e.g. the static build of
#              packaging/README.md, instead of running cargo build --release
#              (which honours CARGO_TARGET_DIR)
#   -o OUTDIR  write the .deb there (default: target/debian)
#
# The .deb's path is printed on standard output, everything else on
# standard error. Nothing is downloaded except what cargo build fetches for
# a fresh clone (CARGO_NET_OFFLINE=true forbids that too).
set -eu

usage() {
    echo "usage: packaging/build-deb.sh [-b BINARY] [-o OUTDIR]" >&2
    exit 2
}

die() {
    echo "build-deb.sh: $*" >&2
    exit 1
}

binary=
outdir=
while getopts b:o:h opt; do
    case $opt in
    b) binary=$OPTARG ;;
    o) outdir=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage

# Paths given relative to where we were called from, made absolute before
# moving to the top of the tree.
abspath() {
    case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}
[ -z "$binary" ] || binary=$(abspath "$binary")
[ -z "$outdir" ] || outdir=$(abspath "$outdir")
target_dir=
[ -z "${CARGO_TARGET_DIR:-}" ] || target_dir=$(abspath "$CARGO_TARGET_DIR")
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
deb=packaging/debian
: "${target_dir:=$top/target}"
: "${outdir:=$target_dir/debian}"

for tool in dpkg-deb objdump strip gzip md5sum; do
    command -v $tool >/dev/null 2>&1 ||
        die "$tool not found (apt-get install dpkg binutils gzip coreutils)"
done

# The version is Cargo.toml's; the changelog's top entry must be for it,
# so that a release cannot go out with a stale changelog.
cargo_version=$(awk -F'"' '
    /^\[/ { in_package = ($0 == "[package]") }
    in_package && /^version *=/ { print $2; exit }' Cargo.toml)
[ -n "$cargo_version" ] || die "no version in Cargo.toml [package]"
version=$(sed -n '1s/^fcgi-launch (\([^)]*\)).*/\1/p' $deb/changelog)
case $version in
"$cargo_version"-*) ;;
*) die "$deb/changelog: top entry is ${version:-unreadable}," \
    "Cargo.toml says $cargo_version: add a changelog entry" ;;
esac
# File dates and the archive's are those of the changelog entry, so that
# the same inputs give the same .deb.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    date=$(sed -n 's/^ -- .*>  //p' $deb/changelog | head -n 1)
    SOURCE_DATE_EPOCH=$(date -d "$date" +%s) ||
        die "$deb/changelog: unreadable date '$date'"
    export SOURCE_DATE_EPOCH
fi
arch=${DEB_HOST_ARCH:-$(dpkg --print-architecture)}

if [ -z "$binary" ]; then
    echo "build-deb.sh: cargo build --release" >&2
    cargo build --release --locked --bin fcgi-launch >&2
    binary=$target_dir/release/fcgi-launch
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "$binary: not an executable"
for f in man/fcgi-launch.1 packaging/systemd/fcgi-launch@.socket \
    packaging/systemd/fcgi-launch@.service packaging/examples; do
    [ -e "$f" ] || die "$f: missing"
done

umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/build-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
# The staging tree sits where dpkg-shlibdeps expects a package's files.
root=$work/debian/fcgi-launch
doc=$root/usr/share/doc/fcgi-launch
mkdir -p "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
    "$root/usr/lib/systemd/system" "$root/etc/fcgi-launch" "$doc/examples"

# As dh_strip does for executables.
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
    -o "$root/usr/bin/fcgi-launch" "$binary"
chmod 0755 "$root/usr/bin/fcgi-launch"
gzip -9n <man/fcgi-launch.1 >"$root/usr/share/man/man1/fcgi-launch.1.gz"
# Template units only: they are not enabled on installation, and an
# instance needs its /etc/fcgi-launch/NAME.conf first.
cp packaging/systemd/*.socket packaging/systemd/*.service \
    "$root/usr/lib/systemd/system/"
cp $deb/copyright "$doc/copyright"
gzip -9n <$deb/changelog >"$doc/changelog.Debian.gz"
# Policy 12.3: documentation over 4 kB is compressed, examples are not.
if [ "$(wc -c <README.md)" -gt 4096 ]; then
    gzip -9n <README.md >"$doc/README.md.gz"
else
    cp README.md "$doc/README.md"
fi
cp -R packaging/examples/. "$doc/examples/"
# The socket unit tells the administrator to copy this one from here.
cp packaging/systemd/example.conf "$doc/examples/example.conf"

static=
needed=$(objdump -p "$root/usr/bin/fcgi-launch" | awk '$1 == "NEEDED" { print $2 }')
depends=
built_using=
if [ -z "$needed" ]; then
    # A static binary: glibc is inside, so its source must be available
    # (LGPL; policy 7.8). This assumes the binary was linked here.
    v=$(dpkg-query -W -f '${source:Version}' libc6-dev 2>/dev/null) ||
        die "static binary but libc6-dev is not installed: which glibc is in it?"
    built_using="glibc (= $v)"
    static=1
elif command -v dpkg-shlibdeps >/dev/null 2>&1; then
    printf 'Source: fcgi-launch\n\nPackage: fcgi-launch\nArchitecture: any\n' \
        >"$work/debian/control"
    depends=$(cd "$work" && dpkg-shlibdeps -O \
        -e debian/fcgi-launch/usr/bin/fcgi-launch 2>"$work/shlibdeps.err") ||
        die "dpkg-shlibdeps failed: $(cat "$work/shlibdeps.err")"
    depends=$(printf '%s\n' "$depends" | sed -n 's/^shlibs:Depends=//p')
    rm "$work/debian/control"
else
    # Without dpkg-dev: the newest glibc symbol version is a safe bound.
    glibc=$(objdump -T "$root/usr/bin/fcgi-launch" |
        grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
    depends="libc6 (>= $glibc)"
    case $needed in
    *libgcc_s*) depends="$depends, libgcc-s1 (>= 4.2)" ;;
    esac
fi

# Explained in the files themselves; the static build has one more.
mkdir -p "$root/usr/share/lintian/overrides"
cat $deb/lintian-overrides ${static:+$deb/lintian-overrides.static} \
    >"$root/usr/share/lintian/overrides/fcgi-launch"

# Policy 10.9: root:root (dpkg-deb --root-owner-group), 0755 and 0644;
# executable examples keep their x bit, so that they run as copied.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -type f ! -perm -u+x -exec chmod 0644 {} +
find "$root" -type f -perm -u+x -exec chmod 0755 {} +
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

size=$(du -sk --apparent-size --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" \
    -e "s/@INSTALLED_SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
    -e "s/@BUILT_USING@/$built_using/" $deb/control |
    sed '/^[A-Za-z-]*: *$/d' >"$root/DEBIAN/control"
install -m 0755 $deb/postinst $deb/postrm "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' |
    LC_ALL=C sort | xargs -d '\n' md5sum) >"$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

mkdir -p "$outdir"
out=$outdir/fcgi-launch_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >&2
printf '%s\n' "$out"
