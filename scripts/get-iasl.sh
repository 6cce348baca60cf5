#!/usr/bin/env bash
# Obtains ACPICA's iasl from Debian unstable's acpica-tools package and prints the path of the
# iasl binary. Debian 12's iasl is too old for the DMAR/IORT revisions the fixtures use.
#
# Unstable's iasl links against a newer glibc than Debian 12 ships, so unstable's libc6 is
# unpacked beside it and the printed path is a small wrapper, target/tools/iasl/iasl, that starts
# the real binary through that glibc's own dynamic loader. On a host whose glibc is new enough the
# wrapper still works (it never uses the system's loader for iasl).
#
# The system's apt configuration is left untouched: apt runs with a private sources list and
# private list/cache directories under target/tools/, and the package is only downloaded and
# unpacked (dpkg-deb -x), never installed. A second run finds the unpacked binary and returns at
# once. Usage: IASL="$(scripts/get-iasl.sh)"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/target/tools"
DEST="$TOOLS/iasl"
IASL_BIN="$DEST/iasl"

if [ -x "$IASL_BIN" ]; then
    echo "$IASL_BIN"
    exit 0
fi

APT_DIR="$TOOLS/apt"
mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/archives/partial" "$DEST"

# Reuse the Debian mirror this machine is already configured with; no host is hard-coded here.
uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
if [ -z "$uri" ]; then
    echo "get-iasl.sh: no URIs: line in /etc/apt/sources.list.d/debian.sources" >&2
    exit 1
fi
cat >"$APT_DIR/unstable.sources" <<SRC
Types: deb
URIs: $uri
Suites: unstable
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

apt_private=(
    -o "Dir::Etc::sourcelist=$APT_DIR/unstable.sources"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache::archives=$APT_DIR/archives"
    -o "Dir::Cache::pkgcache="
    -o "Dir::Cache::srcpkgcache="
    -o "APT::Get::List-Cleanup=0"
    # The private archive directory is root's, not _apt's; download as the invoking user.
    -o "APT::Sandbox::User=$(id -un)"
)

# apt prints progress on stdout; keep stdout for the binary's path alone.
apt-get "${apt_private[@]}" -qq update >&2
(cd "$APT_DIR/archives" && apt-get "${apt_private[@]}" -qq download acpica-tools libc6 >&2)

for pkg in acpica-tools libc6; do
    deb=$(ls -t "$APT_DIR"/archives/"${pkg}"_*.deb | head -n 1)
    dpkg-deb -x "$deb" "$DEST"
done

multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
libdir="$DEST/usr/lib/$multiarch"
loader=$(ls "$libdir"/ld-linux*.so.* 2>/dev/null | head -n 1)
if [ ! -x "$DEST/usr/bin/iasl" ] || [ -z "$loader" ]; then
    echo "get-iasl.sh: unpacked packages lack usr/bin/iasl or a dynamic loader in $libdir" >&2
    exit 1
fi
# The wrapper finds its files relative to itself, so the tree can move with the checkout.
cat >"$IASL_BIN.tmp" <<WRAP
#!/bin/sh
here=\$(cd "\$(dirname "\$0")" && pwd)
exec "\$here/usr/lib/$multiarch/$(basename "$loader")" --library-path "\$here/usr/lib/$multiarch" \\
    "\$here/usr/bin/iasl" "\$@"
WRAP
chmod +x "$IASL_BIN.tmp"
mv "$IASL_BIN.tmp" "$IASL_BIN"
echo "$IASL_BIN"
