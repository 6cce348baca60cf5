#!/usr/bin/env bash
# Builds the kernel (unless given one) and boots it under QEMU.
#
#   ./qemu-run.sh [--arch x86_64|aarch64] [--iommu MODE] [--aw-bits 39|48] [--caching-mode]
#                 [--append "kernel command line"] [--gdb] [--icount] [--el2]
#                 [--kernel ELF] [--release|--debug] [-- extra QEMU arguments]
#
# IOMMU modes: vtd (legacy), vtd-sm (scalable, second stage), vtd-flts (scalable, first stage),
# smmuv3, none. Defaults: x86_64 with vtd; aarch64 with smmuv3.
# It is also cargo's runner: `cargo run --target x86_64-target.json` passes `--kernel ELF`.
# QEMU's exit status is mapped back: 0 when the kernel reported success, 1 on failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

arch=x86_64 iommu="" aw_bits="" caching=0 append="" gdb=0 icount=0 el2=0 kernel="" profile=release
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --iommu) iommu="$2"; shift 2 ;;
        --aw-bits) aw_bits="$2"; shift 2 ;;
        --caching-mode) caching=1; shift ;;
        --append) append="$2"; shift 2 ;;
        --gdb) gdb=1; shift ;;
        --icount) icount=1; shift ;;
        --el2) el2=1; shift ;;
        --kernel) kernel="$2"; shift 2 ;;
        --release) profile=release; shift ;;
        --debug) profile=debug; shift ;;
        --) shift; extra+=("$@"); break ;;
        *) if [ -n "$kernel" ] && [ -f "$1" ]; then extra+=("$1"); shift
           elif [ -z "$kernel" ] && [ -f "$1" ]; then kernel="$1"; shift
           else echo "qemu-run.sh: unknown option $1" >&2; exit 2; fi ;;
    esac
done

case "$arch" in
    x86_64) : "${iommu:=vtd}" ;;
    aarch64) : "${iommu:=smmuv3}" ;;
    *) echo "qemu-run.sh: unknown arch $arch" >&2; exit 2 ;;
esac

bash "$ROOT/scripts/setup.sh"

if [ -z "$kernel" ]; then
    flags=(--target "$ROOT/$arch-target.json" -p kernel)
    [ "$profile" = release ] && flags+=(--release)
    (cd "$ROOT" && RUSTC_BOOTSTRAP=1 cargo build --quiet "${flags[@]}")
    kernel="$ROOT/target/$arch-target/$profile/kernel"
fi

args=(-nographic -no-reboot -m 1G -nic none -kernel "$kernel")
[ -n "$append" ] && args+=(-append "$append")
# Two edu devices: one for a driver, one that no driver is given (the IOMMU tests show it
# cannot DMA).
edu=(-device "edu,dma_mask=0xffffffffffffffff" -device "edu,dma_mask=0xffffffffffffffff")

case "$arch" in
    x86_64)
        machine="q35"
        iommu_dev=""
        case "$iommu" in
            vtd) iommu_dev="intel-iommu,intremap=on" ;;
            vtd-sm) iommu_dev="intel-iommu,intremap=on,x-scalable-mode=on" ;;
            vtd-flts) iommu_dev="intel-iommu,intremap=on,x-scalable-mode=on,x-flts=on" ;;
            none) ;;
            *) echo "qemu-run.sh: IOMMU mode $iommu is not available on x86_64" >&2; exit 2 ;;
        esac
        if [ -n "$iommu_dev" ]; then
            machine="q35,kernel-irqchip=split"
            [ -n "$aw_bits" ] && iommu_dev+=",aw-bits=$aw_bits"
            [ "$caching" = 1 ] && iommu_dev+=",caching-mode=on"
            args+=(-device "$iommu_dev")
        fi
        args+=(-machine "$machine" -cpu max -device isa-debug-exit,iobase=0xf4,iosize=4 "${edu[@]}")
        qemu=qemu-system-x86_64
        ;;
    aarch64)
        machine="virt"
        case "$iommu" in
            smmuv3) machine+=",iommu=smmuv3" ;;
            none) ;;
            *) echo "qemu-run.sh: IOMMU mode $iommu is not available on aarch64" >&2; exit 2 ;;
        esac
        [ "$el2" = 1 ] && machine+=",virtualization=on"
        args+=(-machine "$machine" -cpu max -semihosting "${edu[@]}")
        qemu=qemu-system-aarch64
        ;;
esac

[ "$icount" = 1 ] && args+=(-accel tcg -icount shift=0,sleep=off)
[ "$gdb" = 1 ] && args+=(-s -S) && echo "qemu-run.sh: GDB stub on :1234, CPU halted; gdb $kernel -ex 'target remote :1234'" >&2

# QEMU runs as a child that this script waits for, and that goes with it: `timeout` or
# Ctrl-C on the script must not leave a guest running.
set +e
"$qemu" "${args[@]}" "${extra[@]}" <&0 &
qemu_pid=$!
trap 'kill "$qemu_pid" 2>/dev/null' TERM INT HUP
wait "$qemu_pid"
status=$?
# A signal interrupts `wait`; wait again for QEMU's own exit status.
while kill -0 "$qemu_pid" 2>/dev/null; do wait "$qemu_pid"; status=$?; done
trap - TERM INT HUP
set -e
# x86 isa-debug-exit reports (v << 1) | 1: the kernel writes 0 for success, 1 for failure.
if [ "$arch" = x86_64 ]; then
    case $status in
        1) exit 0 ;;
        3) exit 1 ;;
    esac
fi
exit $status
