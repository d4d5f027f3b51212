#!/usr/bin/env bash
# Builds the Levee function `{{name}}` into target/wasm32-wasip2/release/{{crate}}.wasm.
# Pass --locked once Cargo.lock is committed (./build.sh --locked).
set -euo pipefail
cd "$(dirname "$0")"
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --release --target wasm32-wasip2 "$@"
ls -l "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{crate}}.wasm"
