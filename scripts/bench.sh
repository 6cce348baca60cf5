#!/usr/bin/env bash
# Benchmarks in guest instructions: boots each architecture under `-icount shift=0,sleep=off`
# (the guest TSC / CNTVCT then counts executed instructions) and prints the kernel's
# `bench:` lines: boot-to-kernel_main, null system call, IPC call+reply, and whatever other
# `bench::` tests exist.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
for arch in x86_64 aarch64; do
    RUSTC_BOOTSTRAP=1 cargo build --release --quiet --target "$arch-target.json" -p kernel
    echo "== $arch"
    timeout 600 bash qemu-run.sh --arch "$arch" --icount --kernel "target/$arch-target/release/kernel" \
        --append "test=bench::" | tr -d '\r' | grep -E '^bench:|FAILED' || true
done
