# shellcheck shell=bash
# Shared by the set-up scripts: toolchain and guest components.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ensure_toolchain() {
  # rust-toolchain.toml pins the compiler; the wasm target may still be missing on a fresh machine.
  rustup target add wasm32-wasip2 >/dev/null
}

build_guests() {
  echo "==> building guest components (functions/, wasm32-wasip2, release)"
  (cd functions && CARGO_TARGET_DIR="$ROOT/functions/target" cargo build --release --target wasm32-wasip2 --workspace)
}
