#!/usr/bin/env bash
# Starts an AWS emulator on localhost:4566 for Levee: LocalStack (docker compose) when a Docker engine
# answers, otherwise the offline `moto` server installed into `<repo>/.venv-moto` on first use. Then
# provisions the sample pipeline (queues + DLQs, table, bucket) unless `--no-provision` is given, and
# prints the environment to use. Idempotent: an emulator already answering on the port is reused.
#
#   localstack/start.sh [--no-provision] [--moto]     (--moto: use moto even if Docker is available)
#   env: LEVEE_EMULATOR_PORT (default 4566), PYTHON (default python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PORT="${LEVEE_EMULATOR_PORT:-4566}"
ENDPOINT="http://localhost:${PORT}"
VENV="$ROOT/.venv-moto"
PIDFILE="$VENV/moto.pid"
LOG="$VENV/moto.log"
PYTHON="${PYTHON:-python3}"

provision=1
force_moto=0
for arg in "$@"; do
  case "$arg" in
    --no-provision) provision=0 ;;
    --moto) force_moto=1 ;;
    -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "start.sh: unknown argument '$arg' (allowed: --no-provision, --moto)" >&2; exit 2 ;;
  esac
done

answers() {
  # Any HTTP answer counts (moto answers / with 200, LocalStack with 200 or 404).
  curl -s -o /dev/null --max-time 2 "$ENDPOINT/" 2>/dev/null
}

wait_until_answers() {
  local what="$1" tries="${2:-120}"
  for _ in $(seq "$tries"); do
    if answers; then return 0; fi
    sleep 0.5
  done
  echo "start.sh: $what did not answer on $ENDPOINT after $((tries / 2)) s" >&2
  return 1
}

print_env() {
  cat <<ENV
export AWS_ENDPOINT_URL=$ENDPOINT
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
ENV
}

run_provision() {
  [ "$provision" = 1 ] || return 0
  echo "start.sh: provisioning the sample pipeline" >&2
  AWS_ENDPOINT_URL="$ENDPOINT" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
    PATH="$VENV/bin:$PATH" "$HERE/init/ready.d/provision.sh" >&2
}

install_moto() {
  if [ -x "$VENV/bin/moto_server" ] && [ -x "$VENV/bin/aws" ]; then return 0; fi
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "start.sh: no Docker engine and no $PYTHON to install moto; install Python 3 (3.9+) or Docker" >&2
    exit 1
  fi
  echo "start.sh: installing moto[server] and awscli into $VENV (first run only)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1,<6' 'awscli>=1.36,<2' >&2
}

# Parallel callers (test binaries) start one emulator: the first holds the lock, the others wait
# for it and then find the emulator answering.
mkdir -p "$VENV"
# The venv lives in the repository: keep it out of git without touching the root .gitignore.
printf '*\n' > "$VENV/.gitignore"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$VENV/start.lock"
  flock 9
fi

# Already running (LocalStack, moto, anything answering on the port)?
if answers; then
  echo "start.sh: an emulator is already running on $ENDPOINT" >&2
  run_provision
  print_env
  exit 0
fi

if [ "$force_moto" = 0 ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  echo "start.sh: Docker engine found, starting LocalStack" >&2
  docker compose -f "$HERE/docker-compose.yml" up -d >&2
  wait_until_answers LocalStack 240
  # LocalStack runs init/ready.d/provision.sh itself once ready.
  for _ in $(seq 120); do
    if curl -s "$ENDPOINT/_localstack/init/ready" 2>/dev/null | grep -q '"completed": *true'; then break; fi
    sleep 0.5
  done
  print_env
  exit 0
fi

echo "start.sh: no Docker engine answers; using the offline moto server" >&2
install_moto
if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "start.sh: moto (pid $(cat "$PIDFILE")) is starting already" >&2
else
  # setsid: the server outlives this script and the shell (or test) that started it.
  # 9>&-: the server must not inherit the start lock.
  # moto_server.py: moto with DynamoDB calls serialised (see the file for why).
  setsid "$VENV/bin/python" "$HERE/moto_server.py" -H 127.0.0.1 -p "$PORT" >"$LOG" 2>&1 < /dev/null 9>&- &
  echo $! > "$PIDFILE"
  echo "start.sh: started moto_server (pid $(cat "$PIDFILE"), log $LOG)" >&2
fi
if ! wait_until_answers moto 60; then
  tail -n 20 "$LOG" >&2 || true
  exit 1
fi
run_provision
print_env
