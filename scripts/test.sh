#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian/Ubuntu machine.
#
# GPU tests need a Vulkan adapter: when the machine has no Vulkan driver, this
# installs Mesa's software one (lavapipe, package mesa-vulkan-drivers). Then it
# checks formatting and lints and runs the whole test suite in one release build.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

has_vulkan_driver() {
    ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1
}

if ! has_vulkan_driver; then
    echo "No Vulkan driver found: installing Mesa's software Vulkan (lavapipe)."
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q mesa-vulkan-drivers
fi

# Mesa's Vulkan driver warns on every start when no session runtime dir exists.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
