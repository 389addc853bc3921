#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian/Ubuntu machine: installs a
# software Vulkan driver when the machine has none (GPU tests need an adapter),
# then checks formatting and lints and runs the whole suite in one release build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
