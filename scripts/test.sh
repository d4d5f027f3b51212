#!/usr/bin/env bash
# Runs the whole test suite: guest unit tests, host unit tests, end-to-end tests on the embedded
# backend and, against an AWS emulator (moto, started by localstack/start.sh), the emulator suite.
# With CI=true a missing emulator or Chromium (the dashboard tests) is a failure, not a skip.
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"
ensure_toolchain
ensure_debian_package /usr/bin/promtool prometheus   # `promtool check metrics` in tests/tests/telemetry.rs

echo "==> headless Chromium (the dashboard tests)"
if [ ! -x /usr/bin/chromium ]; then
  sudo_cmd=()
  [ "$(id -u)" = 0 ] || sudo_cmd=(sudo)
  if command -v apt-get >/dev/null \
    && "${sudo_cmd[@]}" apt-get update -qq \
    && "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
  elif [ "${CI:-}" = "true" ]; then
    echo "error: chromium could not be installed (required when CI=true)" >&2
    exit 1
  else
    echo "warning: chromium could not be installed; the dashboard tests will report SKIPPED" >&2
  fi
fi

echo "==> format and lints"
cargo fmt --all -- --check
(cd functions && cargo fmt --all -- --check)

echo "==> guest unit tests (native)"
(cd functions && CARGO_TARGET_DIR="$ROOT/functions/target" cargo test --workspace)
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
cargo build --workspace --bins --tests
cargo test --workspace --no-fail-fast

echo "==> deployment: levee infra render + cfn-lint (sample and ten functions), deploy.sh on the emulator"
if [ -n "${LEVEE_TEST_AWS_ENDPOINT:-}" ]; then
  bash infra/check.sh --emulator
else
  bash infra/check.sh
fi

echo "==> lints (clippy, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
(cd functions && CARGO_TARGET_DIR="$ROOT/functions/target" cargo clippy --workspace --all-targets -- -D warnings)
