#!/usr/bin/env bash
# Stops the emulator that localstack/start.sh started: the moto server (by the pid it recorded) or the
# LocalStack container (with Docker Compose v2, as start.sh). Idempotent: nothing running → says so.
#
#   localstack/stop.sh
#   env: LEVEE_MOTO_VENV (default <repo>/.venv-moto, as for start.sh)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PIDFILE="${LEVEE_MOTO_VENV:-$ROOT/.venv-moto}/moto.pid"
# shellcheck source=localstack/compose.sh
source "$HERE/compose.sh"
stopped=0

case "${1:-}" in
  -h|--help) sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  '') ;;
  *) echo "stop.sh: unknown argument '$1' (allowed: --help)" >&2; exit 2 ;;
esac

if [ -f "$PIDFILE" ]; then
  pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stop.sh: stopped moto_server (pid $pid)"
    stopped=1
  fi
  rm -f "$PIDFILE"
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && find_compose \
  && [ -n "$("${COMPOSE[@]}" ps -q 2>/dev/null)" ]; then
  "${COMPOSE[@]}" down
  echo "stop.sh: stopped LocalStack"
  stopped=1
fi

[ "$stopped" = 1 ] || echo "stop.sh: no emulator started by start.sh is running"
