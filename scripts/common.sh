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

# Installs Debian package $2 when $1 is missing (test tools: promtool, chromium). With CI=true a
# failure stops the run; otherwise the tests that need it say they were skipped.
ensure_debian_package() {
  local bin="$1" pkg="$2"
  [ -x "$bin" ] && return 0
  echo "==> installing $pkg (for $bin)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 ||
         { $sudo apt-get update -qq >/dev/null 2>&1 &&
           $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null; }; }; then
    if [ "${CI:-}" = "true" ]; then
      echo "error: could not install $pkg (required when CI=true)" >&2
      exit 1
    fi
    echo "warning: could not install $pkg; tests that need $bin will be skipped" >&2
  fi
}
