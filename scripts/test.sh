#!/usr/bin/env bash
# The project's test command: installs what is missing, runs the host unit tests, builds the
# kernel for both architectures and runs the QEMU test matrix. Prints the wall time of each
# part and ends with `N passed, N failed`.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

t0=$(date +%s)
bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
echo "time setup: $(( $(date +%s) - t0 )) s"

total_passed=0 total_failed=0

t0=$(date +%s)
# fwdump's comparison with `iasl -d` needs a current iasl (Debian unstable's); without it that
# one test reports itself skipped.
if IASL="$(bash scripts/get-iasl.sh 2>/dev/null)"; then export IASL; else echo "iasl unavailable"; fi
host_log=$(mktemp)
scripts/host-test.sh test --workspace --exclude kernel --exclude boot --exclude userlib --exclude usertest --exclude root --exclude iommu-server --exclude edu-driver 2>&1 | tee "$host_log"
host_status=${PIPESTATUS[0]}
read -r hp hf < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$host_log")
if [ "$host_status" -ne 0 ] && [ "$hf" -eq 0 ]; then hf=1; echo "host tests: cargo exited with $host_status"; fi
total_passed=$((total_passed + hp)); total_failed=$((total_failed + hf))
echo "host tests: $hp passed, $hf failed"
echo "time host tests: $(( $(date +%s) - t0 )) s"

for arch in x86_64 aarch64; do
    t0=$(date +%s)
    if RUSTC_BOOTSTRAP=1 cargo build --release --quiet --target "$arch-target.json" -p kernel; then
        echo "time build $arch: $(( $(date +%s) - t0 )) s"
    else
        echo "build $arch failed"
        total_failed=$((total_failed + 1))
    fi
done

# `cargo run --target <json>` must boot through qemu-run.sh, the configured runner, and the
# system the root task starts must run to its end.
for arch in x86_64 aarch64; do
    run_log=$(mktemp)
    if RUSTC_BOOTSTRAP=1 timeout 300 cargo run --release --quiet --target "$arch-target.json" >"$run_log" 2>&1 \
        && grep -q "^timer: 5 ticks" "$run_log" && grep -q "^iommu: " "$run_log" \
        && grep -q "^root task: ended: Exited(0)" "$run_log"; then
        echo "PASS cargo-run::$arch"
        total_passed=$((total_passed + 1))
    else
        echo "FAIL cargo-run::$arch"; tail -20 "$run_log"
        total_failed=$((total_failed + 1))
    fi
done

t0=$(date +%s)
qemu_log=$(mktemp)
python3 scripts/qemu-tests.py --arch all 2>&1 | tee "$qemu_log"
read -r qp qf < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ { p = $1; f = $3 } END { print p + 0, f + 0 }' "$qemu_log")
[ "${PIPESTATUS[0]}" -ne 0 ] && [ "$qf" -eq 0 ] && qf=1
total_passed=$((total_passed + qp)); total_failed=$((total_failed + qf))
echo "time QEMU suites: $(( $(date +%s) - t0 )) s"

echo "${total_passed} passed, ${total_failed} failed"
[ "$total_failed" -eq 0 ]
