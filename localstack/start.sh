#!/usr/bin/env bash
# Starts an AWS emulator on localhost:4566 for Levee: LocalStack (Docker Compose v2) when a Docker
# engine answers, otherwise the offline `moto` server installed into `<repo>/.venv-moto` on first use.
# Then provisions the sample pipeline (queues + DLQs, table, bucket) unless `--no-provision` is given,
# and prints the environment to use. Idempotent: an emulator already answering on the port is reused.
#
#   localstack/start.sh [--no-provision] [--moto]     (--moto: use moto even if Docker is available)
#   eval "$(localstack/start.sh)"
#
# LocalStack path: `docker compose up --wait` (waits for the health check, which turns healthy once
# the init hook init/ready.d/provision.sh has run), then the hook's state from /_localstack/init:
# if it failed, its output goes to stderr and the exit status is 1. Compose v1 (`docker-compose` 1.x)
# is refused with a message; so is a Docker engine without Compose. LocalStack provisions by itself
# (its init hook), with or without --no-provision.
#
# Environment:
#   LEVEE_EMULATOR_PORT     port on localhost (default 4566)
#   LEVEE_EMULATOR=moto     same as --moto
#   LEVEE_MOTO_VENV         moto's virtualenv, pid, log and start lock (default <repo>/.venv-moto)
#   LOCALSTACK_AUTH_TOKEN   passed to the container when set (needed by images newer than 4.14.0)
#   LEVEE_LOCALSTACK_IMAGE  the LocalStack image (default localstack/localstack:4.14.0)
#   PYTHON                  Python for moto's virtualenv (default python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PORT="${LEVEE_EMULATOR_PORT:-4566}"
ENDPOINT="http://localhost:${PORT}"
VENV="${LEVEE_MOTO_VENV:-$ROOT/.venv-moto}"
PIDFILE="$VENV/moto.pid"
LOG="$VENV/moto.log"
PYTHON="${PYTHON:-python3}"
# Where provision.sh, as LocalStack's init hook, keeps a copy of its output (docker-compose.yml).
PROVISION_LOG=/tmp/levee-provision.log
# shellcheck source=localstack/compose.sh
source "$HERE/compose.sh"

usage() { sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

provision=1
force_moto=0
[ "${LEVEE_EMULATOR:-}" = moto ] && force_moto=1
for arg in "$@"; do
  case "$arg" in
    --no-provision) provision=0 ;;
    --moto) force_moto=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start.sh: unknown argument '$arg' (allowed: --no-provision, --moto, --help)" >&2; exit 2 ;;
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

# GET /_localstack/init of the emulator on the port: LocalStack's init script states,
#   {"completed": {"BOOT": true, "START": true, "READY": true, "SHUTDOWN": false},
#    "scripts": [{"stage": "READY", "name": "provision.sh", "state": "SUCCESSFUL"}]}
# (states UNKNOWN, RUNNING, SUCCESSFUL, ERROR). Empty output and status 1 when the emulator is not
# LocalStack (moto has no such route).
localstack_init_json() {
  local json
  json="$(curl -fsS --max-time 5 "$ENDPOINT/_localstack/init" 2>/dev/null)" || return 1
  case "$json" in *'"completed"'*) printf '%s\n' "$json" ;; *) return 1 ;; esac
}

# One line "STAGE NAME STATE" per init script in the JSON on stdin. Plain sed, no JSON parser on
# the host: each script object goes on a line of its own, its fields read in any order.
init_scripts() {
  tr '{' '\n' | grep '"state"' | while IFS= read -r obj; do
    local stage name state
    stage="$(printf '%s' "$obj" | sed -n 's/.*"stage": *"\([^"]*\)".*/\1/p')"
    name="$(printf '%s' "$obj" | sed -n 's/.*"name": *"\([^"]*\)".*/\1/p')"
    state="$(printf '%s' "$obj" | sed -n 's/.*"state": *"\([^"]*\)".*/\1/p')"
    printf '%s %s %s\n' "${stage:-?}" "${name:-?}" "${state:-?}"
  done
}

# What provision.sh printed inside the container, for a failure report.
show_provision_output() {
  if [ "${#COMPOSE[@]}" -eq 0 ] && ! find_compose 2>/dev/null; then
    echo "start.sh: (no Docker Compose to fetch it; see \`docker logs levee-localstack\`)" >&2
    return 0
  fi
  # </dev/null: the caller reads its loop from stdin.
  if ! "${COMPOSE[@]}" exec -T localstack cat "$PROVISION_LOG" </dev/null >&2 2>/dev/null; then
    echo "start.sh: ($PROVISION_LOG not readable in the container; LocalStack's log follows)" >&2
    "${COMPOSE[@]}" logs --no-color --tail 100 localstack </dev/null >&2 || true
  fi
}

# Fails (status 1, with the failing hook's output on stderr) unless LocalStack's READY stage has
# completed and every init script, provision.sh among them, is SUCCESSFUL.
check_localstack_init() {
  local json scripts failed=0 stage name state
  if ! json="$(localstack_init_json)"; then
    echo "start.sh: cannot read LocalStack's init script states from $ENDPOINT/_localstack/init" >&2
    return 1
  fi
  if ! printf '%s' "$json" | tr '{' '\n' | grep -v '"state"' | grep -Eq '"READY": *true'; then
    echo "start.sh: LocalStack's READY init stage has not completed: $json" >&2
    return 1
  fi
  scripts="$(printf '%s' "$json" | init_scripts)"
  if ! printf '%s\n' "$scripts" | grep -q '^READY provision\.sh '; then
    echo "start.sh: LocalStack did not run init/ready.d/provision.sh (not mounted? not executable?): $json" >&2
    return 1
  fi
  while read -r stage name state; do
    [ -n "$stage" ] || continue
    [ "$state" = SUCCESSFUL ] && continue
    failed=1
    echo "start.sh: LocalStack init script $name ($stage stage) failed: state $state" >&2
    if [ "$name" = provision.sh ]; then
      echo "start.sh: output of $name:" >&2
      show_provision_output
    fi
  done <<<"$scripts"
  if [ "$failed" = 1 ]; then
    echo "start.sh: LocalStack runs, but its provisioning failed; fix it, then localstack/stop.sh and start again" >&2
    return 1
  fi
  echo "start.sh: LocalStack init: $(printf '%s\n' "$scripts" | awk '{printf "%s%s %s", sep, $2, $3; sep=", "}')" >&2
}

start_localstack() {
  if ! find_compose; then
    echo "start.sh: $COMPOSE_PROBLEM" >&2
    exit 1
  fi
  echo "start.sh: Docker engine found, starting LocalStack (${LEVEE_LOCALSTACK_IMAGE:-localstack/localstack:4.14.0}) with \`$COMPOSE_NAME\`" >&2
  # The compose file publishes this port.
  export LEVEE_EMULATOR_PORT="$PORT"
  # --wait: detached, returns once the health check passes (after the init hook), fails if the
  # container turns unhealthy or exits.
  if ! "${COMPOSE[@]}" up --wait >&2; then
    echo "start.sh: LocalStack did not become healthy (\`$COMPOSE_NAME up --wait\` failed); its log:" >&2
    "${COMPOSE[@]}" logs --no-color --tail 100 localstack >&2 || true
    exit 1
  fi
  check_localstack_init || exit 1
  print_env
  exit 0
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
  if localstack_init_json >/dev/null; then
    # LocalStack: its init hook provisioned; a failed hook is an error here too.
    check_localstack_init || exit 1
  else
    run_provision
  fi
  print_env
  exit 0
fi

if [ "$force_moto" = 0 ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  start_localstack
fi

echo "start.sh: no Docker engine answers (or --moto); using the offline moto server" >&2
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
