#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian/Ubuntu machine: installs a
# software Vulkan driver when the machine has none (GPU tests need an adapter),
# the X tools the desktop-window test drives the window with, Chromium and
# Node for the browser test, builds the browser demo (scripts/build-web.sh),
# then checks formatting and lints and runs the whole suite in one release build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-env.sh

# The window test: a virtual X server, xdotool to type, ImageMagick's import for screenshots.
if [ "$(uname)" = Linux ] && ! { command -v Xvfb && command -v xdotool && command -v import; } >/dev/null; then
    echo "Installing xvfb, xdotool and imagemagick for the desktop-window test."
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q xvfb xdotool imagemagick
fi

# The browser test: headless Chromium (WebGPU on SwiftShader) driven from Node.
if [ "$(uname)" = Linux ] && ! { [ -x /usr/lib/chromium/chromium ] && command -v node && command -v npm; } >/dev/null; then
    echo "Installing chromium and nodejs for the browser test."
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q chromium nodejs npm
fi
scripts/build-web.sh

cargo fmt --all --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release
