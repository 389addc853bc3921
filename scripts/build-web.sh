#!/usr/bin/env bash
# Builds the browser demo into web/pkg: the engine compiled to wasm32 with
# wgpu's WebGPU backend, the wasm-bindgen JS glue, then wasm-opt. On a fresh
# Debian machine it first installs what the build needs, beside (not over) the
# main Rust toolchain:
#   - Debian's rustc-web/cargo-web/rust-web-src (1.96): a compiler whose std
#     can be rebuilt for wasm32 with -Zbuild-std, since no rustup target can be
#     downloaded here; lld-22 for wasm-ld; libgit2-1.5 for cargo-web;
#   - wasm-bindgen-cli at the exact version of the wasm-bindgen crate in Cargo.lock;
#   - binaryen's wasm-opt and playwright-core from npm (web/package.json).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

WEB_RUSTC=/usr/bin/rustc
WEB_CARGO=/usr/bin/cargo
WASM_LD=/usr/lib/llvm-22/bin/wasm-ld
if [ ! -x "$WEB_CARGO" ] || [ ! -x "$WASM_LD" ] || [ ! -d /usr/lib/rustlib/src/rust/library ]; then
    echo "Installing Debian's wasm-capable Rust (rustc-web, cargo-web, rust-web-src) and lld-22."
    as_root apt-get update -q
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q --no-install-recommends \
        rustc-web cargo-web rust-web-src lld-22 libgit2-1.5
fi

BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$BINDGEN_VERSION" ]; then
    echo "Installing wasm-bindgen-cli $BINDGEN_VERSION (it must match the wasm-bindgen crate)."
    cargo install wasm-bindgen-cli --version "$BINDGEN_VERSION"
fi

if [ ! -x web/node_modules/.bin/wasm-opt ]; then
    (cd web && npm ci --no-audit --no-fund)
fi

echo "Building the wasm module (the first build compiles std for wasm32: several minutes)."
WASM_TARGET_DIR="${WASM_TARGET_DIR:-${CARGO_TARGET_DIR:-target}-wasm}"
RUSTC_BOOTSTRAP=1 RUSTC="$WEB_RUSTC" CARGO_TARGET_DIR="$WASM_TARGET_DIR" \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$WASM_LD" \
    "$WEB_CARGO" build -p tritium-web --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort

rm -rf web/pkg
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
    "$WASM_TARGET_DIR/wasm32-unknown-unknown/release/tritium_web.wasm"
web/node_modules/.bin/wasm-opt -O3 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    web/pkg/tritium_web_bg.wasm -o web/pkg/tritium_web_bg.wasm
echo "Built web/pkg: $(du -h web/pkg/tritium_web_bg.wasm | cut -f1) of wasm," \
    "$(gzip -9 -c web/pkg/tritium_web_bg.wasm | wc -c | awk '{printf "%.1f MB", $1/1e6}') gzipped."
