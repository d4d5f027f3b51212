#!/usr/bin/env bash
# Runs the whole test suite: the dependency policy (scripts/check-deps.sh), guest unit tests, host
# unit tests, end-to-end tests on the embedded backend and, against an AWS emulator (moto, started
# by localstack/start.sh), the emulator suite, and the deployment checks (infra/check.sh).
# With CI=true a missing emulator, promtool or Chromium (the dashboard tests) is a failure, not a skip.
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"
ensure_toolchain
ensure_debian_package /usr/bin/promtool prometheus   # `promtool check metrics` in tests/tests/telemetry.rs

ensure_debian_package /usr/bin/chromium chromium        # headless Chromium for tests/tests/dashboard.rs
ensure_componentize_js                                  # JavaScript functions, tests/tests/js_function.rs
ensure_componentize_py                                  # Python scaffolds, tests/tests/scaffolds.rs

echo "==> format and lints"
cargo fmt --all -- --check
(cd functions && cargo fmt --all -- --check)

# Licenses, banned duplicate TLS/HTTP crates, and no rustls-webpki with a known advisory
# (installs cargo-deny into .tools/ on first use).
"$ROOT/scripts/check-deps.sh"

echo "==> guest unit tests (native)"
(cd functions && CARGO_TARGET_DIR="$ROOT/functions/target" cargo test --locked --workspace)
build_guests

echo "==> localstack/start.sh's LocalStack path (fake docker and curl, no engine needed)"
bash localstack/test-start.sh

if [ -x localstack/start.sh ]; then
  echo "==> starting the AWS emulator"
  # Stop on exit the emulator this run started (one already running is left alone), so a later
  # run, or a deleted checkout, does not inherit a server whose files are gone.
  already_running=0
  [ -f .venv-moto/moto.pid ] && kill -0 "$(cat .venv-moto/moto.pid)" 2>/dev/null && already_running=1
  if emulator_env="$(localstack/start.sh)"; then
    [ "$already_running" = 1 ] || trap 'localstack/stop.sh >/dev/null 2>&1 || true' EXIT
    eval "$emulator_env"
    export LEVEE_TEST_AWS_ENDPOINT="$AWS_ENDPOINT_URL"
  elif [ "${CI:-}" = "true" ]; then
    echo "error: the AWS emulator could not start (required when CI=true)" >&2
    exit 1
  else
    echo "warning: the AWS emulator could not start; emulator tests will report SKIPPED" >&2
  fi
fi

echo "==> host and end-to-end tests"
cargo build --locked --workspace --bins --tests
cargo test --locked --workspace --no-fail-fast

echo "==> deployment: levee infra render + cfn-lint (sample and ten functions), deploy.sh on the emulator"
if [ -n "${LEVEE_TEST_AWS_ENDPOINT:-}" ]; then
  bash infra/check.sh --emulator
else
  bash infra/check.sh
fi

echo "==> lints (clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
(cd functions && CARGO_TARGET_DIR="$ROOT/functions/target" cargo clippy --workspace --all-targets -- -D warnings)
