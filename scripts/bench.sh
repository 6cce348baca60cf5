#!/usr/bin/env bash
# Benchmarks in guest instructions: boots each architecture under `-icount shift=0,sleep=off`
# (the guest TSC / CNTVCT then counts executed instructions) and prints the kernel's
# `bench:` lines: boot-to-kernel_main, null system call, IPC call+reply, and whatever other
# `bench::` tests exist.
#
#   scripts/bench.sh              print the figures
#   scripts/bench.sh --check      also compare them with scripts/bench-baseline.txt: a figure more
#                                 than 10 % above its baseline, or one missing, fails (PASS/FAIL
#                                 lines and `N passed, N failed`)
#   scripts/bench.sh --baseline   rewrite scripts/bench-baseline.txt from this run (commit it with
#                                 the reason the figures moved)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
mode="${1:-print}"
case "$mode" in print|--check|--baseline) ;; *) echo "usage: scripts/bench.sh [--check|--baseline]" >&2; exit 2 ;; esac
bash scripts/setup.sh
figures=$(mktemp)
trap 'rm -f "$figures"' EXIT
# One benchmark boot: bench_boot ARCH TESTS [qemu-run.sh options].
bench_boot() {
    local arch="$1" tests="$2"
    shift 2
    echo "== $arch $*"
    log=$(mktemp)
    status=0
    timeout 600 bash qemu-run.sh --arch "$arch" --icount --kernel "target/$arch-target/release/kernel" "$@" \
        --append "test=$tests" >"$log" 2>&1 || status=$?
    tr -d '\r' <"$log" | grep -E '^bench:|FAILED' || true
    tr -d '\r' <"$log" | grep -E '^bench:' | sed "s/^/$arch /" >>"$figures" || true
    # SVA needs first-stage VT-d: on x86 its figure comes from a boot of its own.
    if [ "$arch" = x86_64 ]; then
        timeout 600 bash qemu-run.sh --arch "$arch" --iommu vtd-flts --icount --kernel "target/$arch-target/release/kernel" \
            --append "test=bench::sva" >"$log" 2>&1 || status=$?
        tr -d '\r' <"$log" | grep -E '^bench: sva|FAILED' || true
        tr -d '\r' <"$log" | grep -E '^bench: sva' | sed "s/^/$arch /" >>"$figures" || true
    fi
    # MSI latency without isolation needs GICv2m: on arm that figure comes from a boot of its own
    # (only its line: the driver there prints its IPC figures again).
    if [ "$arch" = aarch64 ]; then
        timeout 600 bash qemu-run.sh --arch "$arch" --gic 2 --icount --kernel "target/$arch-target/release/kernel" \
            --append "test=bench::msi_gicv2m" >"$log" 2>&1 || status=$?
        tr -d '\r' <"$log" | grep -E '^bench: MSI|FAILED' || true
        tr -d '\r' <"$log" | grep -E '^bench: MSI' | sed "s/^/$arch /" >>"$figures" || true
    fi
    rm -f "$log"
    if [ "$status" -ne 0 ]; then
        echo "FAIL bench::$arch: the benchmark boot ended with status $status"
        [ "$mode" = print ] || { echo "0 passed, 1 failed"; exit 1; }
    fi
}
for arch in x86_64 aarch64; do
    RUSTC_BOOTSTRAP=1 cargo build --release --quiet --target "$arch-target.json" -p kernel
    bench_boot "$arch" "bench::"
done
# Dirty bits need a unit whose walks set them: VT-d first level.
bench_boot x86_64 "bench::dirty" --iommu vtd-flts
[ "$mode" = print ] && exit 0
exec python3 - "$mode" "$figures" "$ROOT/scripts/bench-baseline.txt" <<'PY'
import re, sys
mode, figures_path, baseline_path = sys.argv[1:]
# `bench: <label> <N> guest instructions[ (mean of R)]`: the label names the figure.
FIGURE = re.compile(r"^(\S+) bench: (.*?) (\d+) guest instructions")
# A label printed more than once in a boot (aarch64 runs the IPC figures for stage 1, then for
# stage 2) is told apart by its occurrence: "<label> #2".
current = {}
for line in open(figures_path):
    m = FIGURE.match(line.strip())
    if m:
        key = f"{m.group(1)} {m.group(2)}"
        occurrence = 1
        while (f"{key} #{occurrence}" if occurrence > 1 else key) in current:
            occurrence += 1
        current[f"{key} #{occurrence}" if occurrence > 1 else key] = int(m.group(3))
if mode == "--baseline":
    with open(baseline_path, "w") as out:
        out.write("# Benchmark baseline in guest instructions (scripts/bench.sh --baseline wrote it).\n")
        out.write("# CI fails when a figure is more than 10 % above the value here; change it only in a\n")
        out.write("# commit that says why the figures moved.\n")
        for key, value in sorted(current.items()):
            out.write(f"{value:>10} {key}\n")
    print(f"wrote {len(current)} figures to scripts/bench-baseline.txt")
    sys.exit(0)
passed = failed = 0
baseline = {}
for line in open(baseline_path):
    if line.startswith("#") or not line.strip():
        continue
    value, key = line.strip().split(" ", 1)
    baseline[key] = int(value)
for key, base in sorted(baseline.items()):
    now = current.get(key)
    if now is None:
        failed += 1
        print(f"FAIL bench::{key}: missing from this run")
    elif now > base * 1.10:
        failed += 1
        print(f"FAIL bench::{key}: {now} guest instructions, baseline {base} (+{100 * (now - base) / base:.1f} %)")
    else:
        passed += 1
        note = f" ({100 * (now - base) / base:+.1f} %)" if now != base else ""
        print(f"PASS bench::{key}: {now}{note}")
for key in sorted(set(current) - set(baseline)):
    print(f"NOTE bench::{key}: {current[key]} has no baseline yet (scripts/bench.sh --baseline)")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
