#!/usr/bin/env bash
# Runs the platform with the sample pipeline (levee.toml) on the embedded backend.
# Extra arguments go to `levee up`, e.g. ./scripts/up.sh --listen 127.0.0.1:9000
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"
ensure_toolchain
build_guests
echo "==> building levee (release; the first build takes several minutes)"
cargo build --locked --release -p levee --bin levee
exec "$ROOT/target/release/levee" up --manifest "$ROOT/levee.toml" "$@"
