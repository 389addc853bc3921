#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian/Ubuntu machine: installs a
# software Vulkan driver when the machine has none (GPU tests need an adapter)
# and the X tools the desktop-window test drives the window with, then checks
# formatting and lints and runs the whole suite in one release build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh

# The window test: a virtual X server, xdotool to type, ImageMagick's import for screenshots.
if [ "$(uname)" = Linux ] && ! { command -v Xvfb && command -v xdotool && command -v import; } >/dev/null; then
    echo "Installing xvfb, xdotool and imagemagick for the desktop-window test."
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q xvfb xdotool imagemagick
fi

cargo fmt --check
cargo clippy --release --all-targets -- -D warnings
cargo test --release
