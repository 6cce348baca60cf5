#!/usr/bin/env bash
# Builds the kernel (unless given one) and boots it under QEMU.
#
#   ./qemu-run.sh [--arch x86_64|aarch64] [--iommu MODE] [--aw-bits 39|48] [--caching-mode]
#                 [--topology bridges] [--fw-override rmrr] [--append "kernel command line"] [--gdb]
#                 [--icount] [--el2] [--gic 2|3] [--kernel ELF] [--release|--debug]
#                 [-- extra QEMU arguments]
#
# IOMMU modes: vtd (legacy), vtd-sm (scalable, second stage), vtd-flts (scalable, first stage),
# smmuv3, none. Defaults: x86_64 with vtd; aarch64 with smmuv3 and a GICv3 with an ITS
# (`--gic 2`: GICv2 with its GICv2m MSI frame, whose MSIs are not isolated).
# `--topology bridges` adds, on bus 0 of either machine, a PCIe root port at 00:10.0 with an
# edu device, and a PCIe-to-PCI bridge at 00:11.0 with edu devices at 01.0 and 02.0 of its bus
# (the root task's descriptions BRIDGES and ONE_GROUP_TWO_DRIVERS, user/root/src/system.rs,
# name them by location), and a second root port at 00:12.0 with two functions of one
# virtio-rng device below it (PCI Express, function-level reset capable: the reset tests).
# `--fw-override rmrr` hands the machine a firmware-table override through fw_cfg (file
# opt/iommu-os/dmar on x86, opt/iommu-os/iort on arm), which the IOMMU server takes instead of
# the machine's own table: QEMU's own DMAR or IORT (dumped by one boot with `dump-acpi=`) plus an
# RMRR or RMR node giving the first edu device the region `edu_contract::direct` names, built by
# tools/fw-override.
# It is also cargo's runner: `cargo run --target x86_64-target.json` passes `--kernel ELF`.
# QEMU's exit status is mapped back: 0 when the kernel reported success, 1 on failure.
#
# `cargo test --target <arch>-target.json [-- PREFIX]` passes a test build of the kernel
# (target/<arch>-target/<profile>/deps/kernel-<hash>). For one, this script runs the in-kernel
# tests whose names start with PREFIX (default: all), stops a guest that has not finished after
# KERNEL_TEST_TIMEOUT seconds (default 900), and succeeds only when the kernel's summary line
# says that tests ran and none failed: a crash or a hang before the summary is a failure.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

arch=x86_64 iommu="" aw_bits="" caching=0 topology="" fw_override="" append="" gdb=0 icount=0 el2=0 gic=3 kernel="" profile=release
extra=() words=()
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --iommu) iommu="$2"; shift 2 ;;
        --aw-bits) aw_bits="$2"; shift 2 ;;
        --caching-mode) caching=1; shift ;;
        --topology) topology="$2"; shift 2 ;;
        --fw-override) fw_override="$2"; shift 2 ;;
        --append) append="$2"; shift 2 ;;
        --gdb) gdb=1; shift ;;
        --icount) icount=1; shift ;;
        --el2) el2=1; shift ;;
        --gic) gic="$2"; shift 2 ;;
        --kernel) kernel="$2"; shift 2 ;;
        --release) profile=release; shift ;;
        --debug) profile=debug; shift ;;
        --) shift; extra+=("$@"); break ;;
        -*) echo "qemu-run.sh: unknown option $1" >&2; exit 2 ;;
        *) if [ -n "$kernel" ] && [ -f "$1" ]; then extra+=("$1")
           elif [ -z "$kernel" ] && [ -f "$1" ]; then kernel="$1"
           else words+=("$1"); fi
           shift ;;
    esac
done

# cargo test puts its test executables in deps/, named after the target with a hash.
test_build=0
case "$kernel" in */deps/kernel-*) test_build=1 ;; esac
if [ ${#words[@]} -gt 0 ] && { [ "$test_build" = 0 ] || [ ${#words[@]} -gt 1 ]; }; then
    echo "qemu-run.sh: unexpected argument(s): ${words[*]} (a test build of the kernel takes one test-name prefix)" >&2
    exit 2
fi

case "$arch" in
    x86_64) : "${iommu:=vtd}" ;;
    aarch64) : "${iommu:=smmuv3}" ;;
    *) echo "qemu-run.sh: unknown arch $arch" >&2; exit 2 ;;
esac

bash "$ROOT/scripts/setup.sh"

if [ "$test_build" = 1 ]; then
    # The IOMMU the kernel's tests must find is the one this script configures.
    case "$iommu" in vtd*) expect=vtd ;; *) expect="$iommu" ;; esac
    append="test=${words[0]:-all} expect-iommu=$expect${append:+ $append}"
fi

if [ -z "$kernel" ]; then
    flags=(--target "$ROOT/$arch-target.json" -p kernel)
    [ "$profile" = release ] && flags+=(--release)
    [ -f "$ROOT/target/$arch-target/$profile/kernel" ] \
        || echo "qemu-run.sh: building the kernel and its user programs for $arch (the first build takes a few minutes)"
    (cd "$ROOT" && RUSTC_BOOTSTRAP=1 cargo build --quiet "${flags[@]}")
    kernel="$ROOT/target/$arch-target/$profile/kernel"
fi

args=(-nographic -no-reboot -m 1G -nic none -kernel "$kernel")
# Two edu devices: one for a driver, one that no driver is given (the IOMMU tests show it
# cannot DMA).
edu=(-device "edu,dma_mask=0xffffffffffffffff" -device "edu,dma_mask=0xffffffffffffffff")
case "$topology" in
    "") ;;
    bridges)
        edu+=(-device pcie-root-port,id=rp1,bus=pcie.0,chassis=1,addr=0x10
              -device "edu,bus=rp1,dma_mask=0xffffffffffffffff"
              -device pcie-pci-bridge,id=pcibr1,bus=pcie.0,addr=0x11
              -device "edu,bus=pcibr1,addr=0x1,dma_mask=0xffffffffffffffff"
              -device "edu,bus=pcibr1,addr=0x2,dma_mask=0xffffffffffffffff"
              -device pcie-root-port,id=rp2,bus=pcie.0,chassis=2,addr=0x12
              -device virtio-rng-pci,bus=rp2,addr=0x0.0x0,multifunction=on,x-pcie-flr-init=on
              -device virtio-rng-pci,bus=rp2,addr=0x0.0x1) ;;
    *) echo "qemu-run.sh: unknown topology $topology" >&2; exit 2 ;;
esac

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
        case "$gic" in
            2|3) machine="virt,gic-version=$gic" ;;
            *) echo "qemu-run.sh: GIC version $gic is not available (2 or 3)" >&2; exit 2 ;;
        esac
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

case "$fw_override" in
    "") ;;
    rmrr)
        case "$arch" in
            x86_64) signature=DMAR fw_cfg_name=opt/iommu-os/dmar ;;
            aarch64) signature=IORT fw_cfg_name=opt/iommu-os/iort ;;
        esac
        override_dir="$(mktemp -d)"
        trap 'rm -rf "$override_dir"' EXIT
        bash "$ROOT/scripts/host-test.sh" build --quiet -p fw-override
        # QEMU's own table, as the kernel prints it on this very machine.
        timeout 120 "$qemu" "${args[@]}" -append "dump-acpi=$signature" </dev/null >"$override_dir/dump.log" 2>&1 || true
        if ! "$ROOT/target/host/debug/fw-override" --arch "$arch" --dump "$override_dir/dump.log" --out "$override_dir/table.bin"; then
            echo "qemu-run.sh: could not build the $signature override (the dump boot's log: $override_dir/dump.log)" >&2
            tail -n 20 "$override_dir/dump.log" >&2
            exit 2
        fi
        args+=(-fw_cfg "name=$fw_cfg_name,file=$override_dir/table.bin")
        ;;
    *) echo "qemu-run.sh: unknown firmware-table override $fw_override" >&2; exit 2 ;;
esac
[ -n "$append" ] && args+=(-append "$append")
[ "$gdb" = 1 ] && args+=(-s -S) && echo "qemu-run.sh: GDB stub on :1234, CPU halted; gdb $kernel -ex 'target remote :1234'" >&2

# QEMU runs as a child that this script waits for, and that goes with it: `timeout` or
# Ctrl-C on the script must not leave a guest running.
launch=("$qemu")
if [ "$test_build" = 1 ]; then
    limit="${KERNEL_TEST_TIMEOUT:-900}"
    launch=(timeout "$limit" "$qemu")
    # The console also goes to a log, read for the summary when QEMU has ended.
    log="$(mktemp)" fifo="$(mktemp -u)"
    mkfifo "$fifo"
    tee "$log" <"$fifo" &
    tee_pid=$!
    exec 3>&1 >"$fifo"
fi
set +e
"${launch[@]}" "${args[@]}" "${extra[@]}" <&0 &
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
        1) status=0 ;;
        3) status=1 ;;
    esac
fi
if [ "$test_build" = 1 ]; then
    exec 1>&3 3>&-
    wait "$tee_pid"
    rm -f "$fifo"
    summary="$(tr -d '\r' <"$log" | grep -a 'TESTS DONE' | tail -n 1 || true)"
    rm -f "$log"
    passed="$(sed -n 's/.*passed=\([0-9]*\).*/\1/p' <<<"$summary")"
    failed="$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$summary")"
    skipped="$(sed -n 's/.*skipped=\([0-9]*\).*/\1/p' <<<"$summary")"
    if [ "$status" = 124 ]; then
        echo "qemu-run.sh: the kernel had not finished its tests after $limit s (KERNEL_TEST_TIMEOUT): stopped it" >&2
    elif [ -z "$summary" ]; then
        echo "qemu-run.sh: the kernel ended (QEMU status $status) without its test summary: it crashed" >&2
    fi
    [ -n "$summary" ] || { passed=0; failed=1; }
    echo "kernel tests ($arch, $iommu): $passed passed, $failed failed, ${skipped:-0} skipped"
    if [ "$status" = 0 ] && [ "$failed" = 0 ] && [ "${passed:-0}" -gt 0 ]; then
        exit 0
    fi
    exit 1
fi
exit $status
