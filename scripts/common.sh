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
  (cd functions && CARGO_TARGET_DIR="$ROOT/functions/target" cargo build --locked --release --target wasm32-wasip2 --workspace)
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

# Installs functions/js's pinned toolchain (componentize-js, from package-lock.json) with npm ci,
# once per checkout; npm comes from Debian when missing. With CI=true a failure stops the run;
# otherwise the JavaScript tests say they were skipped.
ensure_componentize_js() {
  local dir="$ROOT/functions/js"
  local bin="$dir/node_modules/.bin/componentize-js"
  local pkg="@bytecodealliance/componentize-js" want have
  want="$(node -p "require('$dir/package.json').devDependencies['$pkg']" 2>/dev/null || true)"
  have="$(node -p "require('$dir/node_modules/$pkg/package.json').version" 2>/dev/null || true)"
  [ -x "$bin" ] && [ -n "$want" ] && [ "$want" = "$have" ] && return 0
  ensure_debian_package /usr/bin/npm npm
  echo "==> installing componentize-js for functions/js (npm ci, pinned by package-lock.json)"
  if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error); then
    if [ "${CI:-}" = "true" ]; then
      echo "error: could not install componentize-js (required when CI=true)" >&2
      exit 1
    fi
    echo "warning: could not install componentize-js; the JavaScript function tests will be skipped" >&2
  fi
}

# Installs the pinned Python guest toolchain (componentize-py, functions/python/requirements.txt)
# into .venv-componentize-py, once per checkout and again when the pin changes. With CI=true a
# failure stops the run; otherwise the Python scaffold tests say they were skipped.
ensure_componentize_py() {
  local venv="$ROOT/.venv-componentize-py"
  local req="$ROOT/functions/python/requirements.txt"
  local stamp="$venv/.requirements.txt"
  [ -x "$venv/bin/componentize-py" ] && cmp -s "$req" "$stamp" && return 0
  echo "==> installing componentize-py into .venv-componentize-py (pinned by functions/python/requirements.txt)"
  if ! { ensure_python_venv &&
         python3 -m venv "$venv" &&
         "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" &&
         cp "$req" "$stamp"; }; then
    if [ "${CI:-}" = "true" ]; then
      echo "error: could not install componentize-py (required when CI=true)" >&2
      exit 1
    fi
    echo "warning: could not install componentize-py; the Python scaffold tests will be skipped" >&2
  fi
}

# python3 with its venv module (Debian ships it apart, as python3-venv).
ensure_python_venv() {
  python3 -c 'import venv, ensurepip' 2>/dev/null && return 0
  ensure_debian_package /usr/bin/python3 python3
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null 2>&1 ||
    { $sudo apt-get update -qq >/dev/null 2>&1 &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
  python3 -c 'import venv, ensurepip'
}
