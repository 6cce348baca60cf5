#!/usr/bin/env bash
# The project's test command: installs what is missing, runs the host unit tests, builds the
# kernel for both architectures and runs the QEMU test matrix. Prints the wall time of each
# part and ends with `N passed, N failed, N skipped`; exits non-zero when anything failed.
#
# Every suite runs through `run_suite`, which keeps the suite's own exit status (read from
# PIPESTATUS on the line of the pipeline itself) and its summary: a suite that exits non-zero,
# or that prints no summary, counts as failed whatever it printed before. `run_suite` checks
# itself first against a suite that crashes before its summary.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

total_passed=0 total_failed=0 total_skipped=0

# run_suite NAME PARSER COMMAND...: runs COMMAND with its output shown and logged, then adds
# its counts to the totals. PARSER is `cargo` (sums libtest's `test result:` lines) or `plain`
# (reads the last `N passed, N failed[, N skipped]` line).
run_suite() {
    local name="$1" parser="$2"; shift 2
    local log status p f s
    log=$(mktemp)
    "$@" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    case "$parser" in
        cargo) read -r p f s < <(awk '/^test result:/ { seen = 1; for (i = 1; i <= NF; i++) {
                   if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
                   END { if (!seen) { print "x x x" } else { print p + 0, f + 0, s + 0 } }' "$log") ;;
        plain) read -r p f s < <(awk '/^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$/ { p = $1; f = $3; s = ($5 == "" ? 0 : $5); seen = 1 }
                   END { if (!seen) { print "x x x" } else { print p + 0, f + 0, s + 0 } }' "$log") ;;
    esac
    rm -f "$log"
    if [ "$p" = x ]; then
        echo "$name: no summary (exit status $status): counted as failed"
        p=0 f=1 s=0
    elif [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "$name: exited with status $status although it reported no failure: counted as failed"
        f=1
    fi
    echo "$name: $p passed, $f failed, $s skipped"
    suite_passed=$p suite_failed=$f suite_skipped=$s
    total_passed=$((total_passed + p)); total_failed=$((total_failed + f)); total_skipped=$((total_skipped + s))
}

# The instrument first: a suite that prints passes and then dies before its summary, and one
# that prints a clean summary but exits non-zero, must both count as failed.
check_run_suite() {
    local saved_p=$total_passed saved_f=$total_failed saved_s=$total_skipped ok=1
    run_suite "selftest-crash" plain bash -c 'echo "PASS a"; echo "PASS b"; kill -SEGV $$' >/dev/null
    [ "$suite_failed" -ge 1 ] || ok=0
    run_suite "selftest-status" plain bash -c 'echo "3 passed, 0 failed"; exit 3' >/dev/null
    [ "$suite_failed" -ge 1 ] || ok=0
    run_suite "selftest-cargo" cargo bash -c 'echo "test result: ok. 2 passed; 0 failed; 0 ignored"; exit 101' >/dev/null
    [ "$suite_failed" -ge 1 ] || ok=0
    total_passed=$saved_p total_failed=$saved_f total_skipped=$saved_s
    if [ $ok -eq 1 ]; then
        echo "PASS test.sh::run_suite_detects_crashes"; total_passed=$((total_passed + 1))
    else
        echo "FAIL test.sh::run_suite_detects_crashes"; total_failed=$((total_failed + 1))
    fi
}

t0=$(date +%s)
bash scripts/setup.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }
echo "time setup: $(( $(date +%s) - t0 )) s"

check_run_suite

t0=$(date +%s)
# fwdump's comparison with `iasl -d` needs a current iasl (Debian unstable's); without it that
# one test reports itself skipped.
if IASL="$(bash scripts/get-iasl.sh 2>/dev/null)"; then export IASL; else echo "iasl unavailable"; fi
run_suite "host tests" cargo scripts/host-test.sh test --workspace --exclude kernel --exclude boot --exclude userlib \
    --exclude usertest --exclude root --exclude iommu-server --exclude edu-driver -- --skip random_clients_keep_every_invariant
# The randomized multi-client test of the object model on its own, so its seeds and step
# counts show in the log.
run_suite "randomized object-model test" cargo scripts/host-test.sh test -p iommu-core --lib random_clients_keep_every_invariant \
    -- --exact tests::random::random_clients_keep_every_invariant --show-output
echo "time host tests: $(( $(date +%s) - t0 )) s"

for arch in x86_64 aarch64; do
    t0=$(date +%s)
    if RUSTC_BOOTSTRAP=1 cargo build --release --quiet --target "$arch-target.json" -p kernel; then
        echo "time build $arch: $(( $(date +%s) - t0 )) s"
    else
        echo "FAIL build::$arch"
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
    rm -f "$run_log"
done

# A first `./qemu-run.sh` says little before the kernel's boot report: setup prints one line
# per step it takes and the build is quiet. Fewer than 30 lines (on a machine that has what
# setup installs, this measures the rest of the path).
run_log=$(mktemp)
timeout 300 ./qemu-run.sh >"$run_log" 2>&1 </dev/null
before=$(grep -n -m1 "iommu-os kernel booting" "$run_log" | cut -d: -f1)
if [ -n "$before" ] && [ "$((before - 1))" -lt 30 ]; then
    echo "PASS qemu-run::quiet_before_boot_report ($((before - 1)) lines)"
    total_passed=$((total_passed + 1))
else
    echo "FAIL qemu-run::quiet_before_boot_report"; head -40 "$run_log"
    total_failed=$((total_failed + 1))
fi
rm -f "$run_log"

# `cargo test --target <json>` boots the kernel's test build through qemu-run.sh, as kernels
# in the rust-osdev tradition do: it must pass on each architecture, and end non-zero on a
# test that fails on purpose. (Its tests are the matrix's own, so they are not counted again.)
for arch in x86_64 aarch64; do
    t0=$(date +%s)
    log=$(mktemp)
    if RUSTC_BOOTSTRAP=1 cargo test --quiet --target "$arch-target.json" >"$log" 2>&1 \
        && grep -Eq "^kernel tests \($arch, [a-z0-9-]+\): [1-9][0-9]* passed, 0 failed, [0-9]+ skipped" "$log"; then
        echo "PASS cargo-test::$arch ($(grep -E '^kernel tests' "$log"))"
        total_passed=$((total_passed + 1))
    else
        echo "FAIL cargo-test::$arch"; tail -20 "$log"
        total_failed=$((total_failed + 1))
    fi
    if RUSTC_BOOTSTRAP=1 cargo test --quiet --target "$arch-target.json" -- selftest::intentional_failure >"$log" 2>&1; then
        echo "FAIL cargo-test::$arch::fails_on_a_failing_test: cargo test ended 0"; tail -20 "$log"
        total_failed=$((total_failed + 1))
    elif grep -Eq "^kernel tests \($arch, [a-z0-9-]+\): 0 passed, 1 failed, 0 skipped" "$log"; then
        echo "PASS cargo-test::$arch::fails_on_a_failing_test"
        total_passed=$((total_passed + 1))
    else
        echo "FAIL cargo-test::$arch::fails_on_a_failing_test: no failure reported"; tail -20 "$log"
        total_failed=$((total_failed + 1))
    fi
    rm -f "$log"
    echo "time cargo test $arch: $(( $(date +%s) - t0 )) s"
done

t0=$(date +%s)
run_suite "QEMU suites" plain python3 scripts/qemu-tests.py --arch all
echo "time QEMU suites: $(( $(date +%s) - t0 )) s"

# The benchmarks are deterministic (guest instructions under icount): a figure more than 10 %
# above scripts/bench-baseline.txt fails.
t0=$(date +%s)
run_suite "benchmarks" plain bash scripts/bench.sh --check
echo "time benchmarks: $(( $(date +%s) - t0 )) s"

# Clippy with warnings denied, under the workspace's lints (Cargo.toml: an `unsafe` block
# without its `// SAFETY:` comment is an error): the host crates with their tests, then the
# bare-metal programs of each architecture. It runs last: its nested build of the user
# programs must not stand in for the ones the suites above ran.
t0=$(date +%s)
clippy_check() {
    local name="$1"; shift
    local log; log=$(mktemp)
    if "$@" >"$log" 2>&1; then
        echo "PASS clippy::$name"; total_passed=$((total_passed + 1))
    else
        echo "FAIL clippy::$name"; grep -E -A8 "^(warning|error)" "$log" | head -60
        total_failed=$((total_failed + 1))
    fi
    rm -f "$log"
}
# A crate without `[lints] workspace = true` would escape the lints silently.
unlinted=$(git ls-files '*Cargo.toml' | grep -v '^Cargo.toml$' | while read -r manifest; do
    grep -Pzq '\[lints\]\nworkspace = true' "$manifest" || echo "$manifest"; done)
if [ -z "$unlinted" ]; then
    echo "PASS clippy::every_crate_takes_the_workspace_lints"; total_passed=$((total_passed + 1))
else
    echo "FAIL clippy::every_crate_takes_the_workspace_lints: $unlinted"; total_failed=$((total_failed + 1))
fi
clippy_check host scripts/host-test.sh clippy --workspace --exclude kernel --exclude boot --exclude userlib \
    --exclude usertest --exclude root --exclude iommu-server --exclude edu-driver --all-targets -- -D warnings
for arch in x86_64 aarch64; do
    clippy_check "$arch" env PATH="/usr/bin:$PATH" RUSTC_BOOTSTRAP=1 cargo clippy --release --quiet --target "$arch-target.json" \
        -p kernel -p boot -p userlib -p usertest -p root -p iommu-server -p edu-driver -- -D warnings
done
echo "time clippy: $(( $(date +%s) - t0 )) s"

echo "${total_passed} passed, ${total_failed} failed, ${total_skipped} skipped"
[ "$total_failed" -eq 0 ]
