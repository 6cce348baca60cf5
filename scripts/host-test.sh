#!/usr/bin/env bash
# Host unit tests of the crates that also build for the host.
# The repository's .cargo/config.toml turns on build-std for the bare-metal targets, and cargo
# applies that table to every build started below the repository; host builds therefore run
# from outside the tree with --manifest-path (cargo discovers configuration from the working
# directory, not from the manifest).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd /
# PATH: `cargo clippy` must find Debian's cargo-clippy, not a rustup proxy that resolves to
# another toolchain outside the tree.
exec env PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc /usr/bin/cargo "${1:-test}" --manifest-path "$ROOT/Cargo.toml" \
    --target-dir "$ROOT/target/host" "${@:2}"
