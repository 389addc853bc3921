#!/usr/bin/env bash
# The main job on any machine: `tritium bench` on a synthetic Qwen2.5-0.5B model,
# after installing a software Vulkan driver where the machine has none.
# Arguments go to `tritium bench` (see `cargo run --release -- bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh

exec cargo run --release -- bench "$@"
