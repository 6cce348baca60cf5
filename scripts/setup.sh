#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian 12 machine:
# Debian's rustc-web 1.96 with its library source (for -Zbuild-std), lld-19,
# and QEMU 10.0.2 from bookworm-backports. Does nothing slow when all is present.
set -euo pipefail

need_pkgs=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

for p in rustc-web cargo-web rust-web-src lld-19 python3; do
    have "$p" || need_pkgs+=("$p")
done

qemu_ok=1
for q in qemu-system-x86 qemu-system-arm; do
    if ! have "$q"; then qemu_ok=0; continue; fi
    case "$(dpkg-query -W -f='${Version}' "$q")" in
        1:10.*) ;;
        *) qemu_ok=0 ;;
    esac
done

if [ ${#need_pkgs[@]} -eq 0 ] && [ $qemu_ok -eq 1 ]; then
    exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

if [ $qemu_ok -eq 0 ] && [ ! -f /etc/apt/sources.list.d/backports.sources ]; then
    # Reuse the mirror this machine is already configured with; no host is hard-coded here.
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

$SUDO apt-get update -qq
if [ ${#need_pkgs[@]} -gt 0 ]; then
    $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi
if [ $qemu_ok -eq 0 ]; then
    $SUDO apt-get install -y -qq -t bookworm-backports qemu-system-x86 qemu-system-arm
fi
