#!/usr/bin/env bash
# Stops the emulator that localstack/start.sh started: the moto server (by the pid it recorded) or the
# LocalStack container. Idempotent: nothing running → says so.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PIDFILE="$ROOT/.venv-moto/moto.pid"
stopped=0

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

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
  && [ -n "$(docker compose -f "$HERE/docker-compose.yml" ps -q 2>/dev/null)" ]; then
  docker compose -f "$HERE/docker-compose.yml" down
  echo "stop.sh: stopped LocalStack"
  stopped=1
fi

[ "$stopped" = 1 ] || echo "stop.sh: no emulator started by start.sh is running"
