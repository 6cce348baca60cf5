#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian 12 machine:
# Debian's rustc-web 1.96 with its library source (for -Zbuild-std) and its clippy, lld-19,
# and QEMU 10.0.2 from bookworm-backports. Does nothing slow when all is present.
#
# Prints one line per step it takes (what, why, how long) and nothing when everything is
# already installed. The whole output of the steps goes to target/setup.log; when a step fails,
# the script shows the end of that log and the command to retry.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG="$ROOT/target/setup.log"

need_pkgs=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

for p in rustc-web cargo-web rust-web-src rust-web-clippy lld-19 python3; do
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
mkdir -p "$(dirname "$LOG")"
: >"$LOG"

# step WHAT WHY COMMAND...: runs COMMAND with its output in the log, on one line of its own.
step() {
    local what="$1" why="$2" start=$SECONDS status=0
    shift 2
    printf 'setup: %s, %s ... ' "$what" "$why"
    printf '\n== %s: %s\n' "$what" "$*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 || status=$?
    if [ $status -eq 0 ]; then
        echo "done in $((SECONDS - start)) s"
        return
    fi
    echo "FAILED after $((SECONDS - start)) s"
    echo "setup: the last lines of $LOG:" >&2
    tail -n 15 "$LOG" | sed 's/^/  | /' >&2
    echo "setup: after fixing the cause, retry with: bash scripts/setup.sh" >&2
    exit $status
}

add_backports() {
    # Reuse the mirror this machine is already configured with; no host is hard-coded here.
    local uri
    uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
    [ -n "$uri" ] || { echo "no URIs: line in /etc/apt/sources.list.d/debian.sources"; return 1; }
    $SUDO tee /etc/apt/sources.list.d/backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

if [ $qemu_ok -eq 0 ] && [ ! -f /etc/apt/sources.list.d/backports.sources ]; then
    step "add the bookworm-backports suite" "the only Debian 12 source of QEMU 10" add_backports
fi
step "refresh the package lists" "to install what is missing" $SUDO apt-get update
if [ ${#need_pkgs[@]} -gt 0 ]; then
    step "install ${need_pkgs[*]}" "Rust 1.96 with its library source builds the bare-metal targets, lld-19 links them, clippy lints them" \
        $SUDO apt-get install -y "${need_pkgs[@]}"
fi
if [ $qemu_ok -eq 0 ]; then
    step "install QEMU 10 from bookworm-backports" "Debian 12's QEMU 7.2 lacks VT-d scalable mode and SMMUv3 stage 2" \
        $SUDO apt-get install -y -t bookworm-backports qemu-system-x86 qemu-system-arm
fi
