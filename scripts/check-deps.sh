#!/usr/bin/env bash
# Dependency policy, run by test.sh and runnable alone: no rustls-webpki with a known advisory in
# the lock files, and `cargo deny check licenses bans` against deny.toml (allowed licenses; one
# version each of the HTTP and TLS crates). cargo-deny is installed into .tools/ on first use.
# The advisories check needs the RustSec database, fetched from the network: see README.md.
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/common.sh"

CARGO_DENY_VERSION=0.20.2
# rustls-webpki before 0.103.10 has RUSTSEC-2026-0049 (CRLs not considered authoritative by
# distribution point); the 0.101 line, which the AWS SDK's legacy TLS client pulled in, gets no fix.
WEBPKI_FLOOR=0.103.10

echo "==> dependency policy: rustls-webpki >= $WEBPKI_FLOOR in the lock files"
bad=0
for lock in Cargo.lock functions/Cargo.lock; do
  [ -f "$lock" ] || continue
  while read -r version; do
    if [ "$(printf '%s\n%s\n' "$WEBPKI_FLOOR" "$version" | sort -V | head -n1)" != "$WEBPKI_FLOOR" ]; then
      echo "error: $lock has rustls-webpki $version, below $WEBPKI_FLOOR (RUSTSEC-2026-0049)" >&2
      bad=1
    fi
  done < <(awk '/^name = "rustls-webpki"$/ { getline; gsub(/version = |"/, ""); print }' "$lock")
done
[ "$bad" = 0 ] || exit 1

deny_bin="$ROOT/.tools/bin/cargo-deny"
if [ "$("$deny_bin" --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]; then
  echo "==> installing cargo-deny $CARGO_DENY_VERSION into .tools/ (once per checkout)"
  # --debug: it builds in 1m40s instead of 4 min here, and the check still takes 4 s.
  cargo install --locked --debug cargo-deny --version "$CARGO_DENY_VERSION" --root "$ROOT/.tools"
fi

echo "==> dependency policy: cargo deny check licenses bans"
# The inclusion graphs of the ~30 tolerated duplicates would fill the log; run the command without
# --hide-inclusion-graph to see which crates pull in a version.
PATH="$ROOT/.tools/bin:$PATH" cargo deny check --hide-inclusion-graph licenses bans
