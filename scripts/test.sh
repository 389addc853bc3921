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
# Only what is missing is installed: Debian's npm conflicts with a nodejs
# that bundles its own npm (NodeSource's), which a machine may already have.
if [ "$(uname)" = Linux ]; then
    missing=()
    [ -x /usr/lib/chromium/chromium ] || missing+=(chromium)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing ${missing[*]} for the browser test."
        as_root apt-get update -q
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${missing[@]}"
    fi
fi
scripts/build-web.sh

cargo fmt --all --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo test --release
