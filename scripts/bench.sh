#!/usr/bin/env bash
# The main job on any machine: `tritium bench` on a synthetic Qwen2.5-0.5B model.
# On a machine without a GPU driver this first installs Mesa's software Vulkan
# driver (lavapipe), so the benchmark runs, at CPU speed, anywhere.
# Arguments go to `tritium bench` (see `cargo run --release -- bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
if ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1 && [ "$(uname)" = Linux ]; then
    echo "No Vulkan driver found: installing Mesa's software Vulkan (lavapipe)."
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q mesa-vulkan-drivers
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
exec cargo run --release -- bench "$@"
