#!/usr/bin/env bash
# Tests the LocalStack path of localstack/start.sh without a Docker engine: each case runs start.sh
# with fake `docker`, `docker-compose` and `curl` executables first on a PATH that holds nothing else
# but the plain tools start.sh uses (so a real docker-compose elsewhere cannot leak in), and checks
# the exit status, stdout, stderr and the docker commands it ran. The fakes simulate:
#
#   v2-healthy        Compose v2 plugin, `up --wait` succeeds, init hook SUCCESSFUL   → exit 0, env
#   v2-init-error     Compose v2, init hook ERROR                                     → exit 1, its output
#   v2-unhealthy      Compose v2, `up --wait` fails (container unhealthy)             → exit 1, the log
#   v2-no-hook        Compose v2, LocalStack ran no provision.sh                      → exit 1
#   standalone-v2     only a `docker-compose` binary of Compose v2                    → exit 0, uses it
#   v1-only           only docker-compose v1                                          → exit 1, install v2
#   no-compose        Docker engine, no Compose at all                                → exit 1, install v2
#   running-error     a LocalStack already answering whose init hook failed           → exit 1, no `up`
#
# Nothing real is started: no container, no moto (PYTHON points nowhere, moto's state goes to a
# temporary LEVEE_MOTO_VENV), no port is bound (curl is fake; LEVEE_EMULATOR_PORT is only a number).
#
#   localstack/test-start.sh [-v|--verbose] [--help]     exits 1 if any case fails
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
START="$HERE/start.sh"
COMPOSE_FILE="$HERE/docker-compose.yml"
PORT=45167
verbose=0
for arg in "$@"; do
  case "$arg" in
    -v|--verbose) verbose=1 ;;
    -h|--help) sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "test-start.sh: unknown argument '$arg' (allowed: --verbose, --help)" >&2; exit 2 ;;
  esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/levee-test-start.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# The real tools start.sh, compose.sh and the fakes use, linked into one directory: the PATH of a
# case is its fakes, then this directory, nothing else.
TOOLS="$WORK/tools"
mkdir -p "$TOOLS"
for tool in bash env cat sed tr grep awk seq sleep mkdir dirname head touch rm flock; do
  if path="$(command -v "$tool")"; then
    ln -s "$path" "$TOOLS/$tool"
  elif [ "$tool" != flock ]; then
    echo "test-start.sh: needs \`$tool\` on PATH" >&2
    exit 1
  fi
done

# --- the fakes ------------------------------------------------------------------------------
# Each reads its case's settings from files in $FAKE (FAKE is exported for the run):
#   compose        v2 | standalone | v1 | none
#   up             ok | fail
#   init.json      the answer of GET /_localstack/init
#   provision.log  what provision.sh printed inside the container
#   running        present once `up` ran (or from the start): curl answers
#   calls          every docker / docker-compose command line, appended

write_fakes() {
  local bin="$1"
  mkdir -p "$bin"
  cat >"$bin/compose-impl" <<'SH'
#!/usr/bin/env bash
# Compose v2 behaviour, shared by the fake `docker compose` and the fake standalone `docker-compose`.
set -euo pipefail
while [ "$#" -gt 0 ]; do
  case "$1" in
    -f) shift 2 ;;
    *) break ;;
  esac
done
cmd="${1:-}"; shift || true
case "$cmd" in
  version)
    if [ "${1:-}" = --short ]; then echo "2.29.1"; else echo "Docker Compose version v2.29.1"; fi ;;
  up)
    case " $* " in *" --wait "*) ;; *) echo "fake compose: start.sh must use up --wait" >&2; exit 3 ;; esac
    touch "$FAKE/running"
    if [ "$(cat "$FAKE/up")" = ok ]; then
      echo " ✔ Container levee-localstack  Healthy" >&2
    else
      echo "container levee-localstack is unhealthy" >&2
      exit 1
    fi ;;
  exec)
    # exec -T localstack cat FILE
    [ "${1:-}" = -T ] && shift
    [ "${1:-}" = localstack ] || { echo "fake compose: no service ${1:-}" >&2; exit 1; }
    shift
    if [ "${1:-}" = cat ] && [ -f "$FAKE/provision.log" ]; then cat "$FAKE/provision.log"; else exit 1; fi ;;
  logs) echo "localstack  | fake LocalStack log line: Ready." ;;
  ps) [ -f "$FAKE/running" ] && echo "0123456789ab" ; true ;;
  down) rm -f "$FAKE/running" ;;
  *) echo "fake compose: unexpected command '$cmd'" >&2; exit 3 ;;
esac
SH
  cat >"$bin/docker" <<'SH'
#!/usr/bin/env bash
set -euo pipefail
echo "docker $*" >>"$FAKE/calls"
case "${1:-}" in
  info) echo "Server Version: 28.2.2 (fake)" ;;
  compose)
    if [ "$(cat "$FAKE/compose")" != v2 ]; then
      echo "docker: 'compose' is not a docker command." >&2
      exit 1
    fi
    shift
    exec "$(dirname "$0")/compose-impl" "$@" ;;
  *) echo "fake docker: unexpected command '$*'" >&2; exit 3 ;;
esac
SH
  cat >"$bin/docker-compose" <<'SH'
#!/usr/bin/env bash
set -euo pipefail
echo "docker-compose $*" >>"$FAKE/calls"
case "$(cat "$FAKE/compose")" in
  standalone) exec "$(dirname "$0")/compose-impl" "$@" ;;
  v1)
    case "$*" in
      "version --short") echo "1.29.2" ;;
      version*|--version) echo "docker-compose version 1.29.2, build 5becea4c" ;;
      *) echo "fake docker-compose v1: start.sh must not run '$*'" >&2; exit 3 ;;
    esac ;;
  *) echo "fake docker-compose: not installed in this case" >&2; exit 127 ;;
esac
SH
  cat >"$bin/curl" <<'SH'
#!/usr/bin/env bash
# Answers like LocalStack once `up` ran: GET /_localstack/init gives init.json, anything else 200.
set -euo pipefail
url=""; out=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    --max-time) shift 2 ;;
    http://*|https://*) url="$1"; shift ;;
    *) shift ;;
  esac
done
[ -f "$FAKE/running" ] || exit 7   # "Failed to connect"
case "$url" in
  */_localstack/init) body="$(cat "$FAKE/init.json")" ;;
  *) body='{"status": "running"}' ;;
esac
if [ -n "$out" ]; then printf '%s\n' "$body" >"$out"; else printf '%s\n' "$body"; fi
SH
  chmod +x "$bin"/*
  # A case without a standalone binary has no docker-compose on its PATH at all.
  if [ "$(cat "$FAKE/compose")" != standalone ] && [ "$(cat "$FAKE/compose")" != v1 ]; then
    rm -f "$bin/docker-compose"
  fi
}

# LocalStack's answer (json.dumps of InitScriptsResource): one line, keys in this order.
init_json() {
  printf '{"completed": {"BOOT": true, "START": true, "READY": true, "SHUTDOWN": false}, "scripts": [{"stage": "READY", "name": "provision.sh", "state": "%s"}]}\n' "$1"
}

# --- running a case ---------------------------------------------------------------------------

failures=0
passed=0
CASE=""

# setup NAME COMPOSE UP INIT_JSON [running]: a fresh case directory with its settings and fakes.
setup() {
  CASE="$1"
  FAKE="$WORK/$CASE"
  mkdir -p "$FAKE"
  echo "$2" >"$FAKE/compose"
  echo "$3" >"$FAKE/up"
  printf '%s\n' "$4" >"$FAKE/init.json"
  : >"$FAKE/calls"
  if [ "${5:-}" = running ]; then touch "$FAKE/running"; fi
  write_fakes "$FAKE/bin"
}

# run_start [ARGS...]: start.sh in the case's sandbox; sets RC, and OUT/ERR files.
run_start() {
  OUT="$FAKE/stdout"; ERR="$FAKE/stderr"
  set +e
  env -i HOME="$FAKE" FAKE="$FAKE" PATH="$FAKE/bin:$TOOLS" \
    LEVEE_EMULATOR_PORT="$PORT" LEVEE_MOTO_VENV="$FAKE/venv" PYTHON="$FAKE/no-python" \
    bash "$START" "$@" >"$OUT" 2>"$ERR"
  RC=$?
  set -e
  if [ "$verbose" = 1 ]; then
    echo "--- $CASE: exit $RC; stderr:"; sed 's/^/    /' "$ERR"
    echo "--- $CASE: stdout:"; sed 's/^/    /' "$OUT"
    echo "--- $CASE: docker calls:"; sed 's/^/    /' "$FAKE/calls"
  fi
}

fail() {
  echo "FAIL $CASE: $*" >&2
  echo "  exit status: $RC" >&2
  echo "  stderr:" >&2; sed 's/^/    /' "$ERR" >&2
  echo "  stdout:" >&2; sed 's/^/    /' "$OUT" >&2
  echo "  docker calls:" >&2; sed 's/^/    /' "$FAKE/calls" >&2
  CASE_FAILED=1
}

expect_rc() { # 0 or nonzero
  if [ "$1" = 0 ] && [ "$RC" != 0 ]; then fail "expected exit status 0"; fi
  if [ "$1" = nonzero ] && [ "$RC" = 0 ]; then fail "expected a non-zero exit status"; fi
  return 0
}
expect_in() { # FILE TEXT
  grep -qF -- "$2" "$1" || fail "expected $(basename "$1") to contain: $2"
}
expect_not_in() { # FILE TEXT
  if grep -qF -- "$2" "$1"; then fail "expected $(basename "$1") not to contain: $2"; fi
  return 0
}
no_moto() {
  expect_not_in "$ERR" "using the offline moto server"
  if [ -e "$FAKE/venv/moto.pid" ]; then fail "moto was started"; fi
  return 0
}
finish() {
  if [ "$CASE_FAILED" = 0 ]; then
    echo "ok   $CASE"
    passed=$((passed + 1))
  else
    failures=$((failures + 1))
  fi
}

# --- the cases ---------------------------------------------------------------------------------

CASE_FAILED=0
setup v2-healthy v2 ok "$(init_json SUCCESSFUL)"
run_start
expect_rc 0
expect_in "$OUT" "export AWS_ENDPOINT_URL=http://localhost:$PORT"
expect_in "$OUT" "export AWS_REGION=us-east-1"
expect_in "$FAKE/calls" "docker compose -f $COMPOSE_FILE up --wait"
expect_in "$ERR" "LocalStack init: provision.sh SUCCESSFUL"
no_moto
finish

CASE_FAILED=0
setup v2-init-error v2 ok "$(init_json ERROR)"
printf 'An error occurred (AWS.SimpleQueueService.NonExistentQueue) when calling the GetQueueAttributes operation: simulated\nprovision.sh: failed (exit status 254)\n' \
  >"$FAKE/provision.log"
run_start
expect_rc nonzero
expect_in "$FAKE/calls" "docker compose -f $COMPOSE_FILE up --wait"
expect_in "$ERR" "LocalStack init script provision.sh (READY stage) failed: state ERROR"
expect_in "$ERR" "when calling the GetQueueAttributes operation: simulated"
expect_in "$ERR" "provision.sh: failed (exit status 254)"
expect_not_in "$OUT" "AWS_ENDPOINT_URL"
no_moto
finish

CASE_FAILED=0
setup v2-unhealthy v2 fail "$(init_json RUNNING)"
run_start
expect_rc nonzero
expect_in "$ERR" "LocalStack did not become healthy (\`docker compose up --wait\` failed)"
expect_in "$ERR" "fake LocalStack log line"
expect_not_in "$OUT" "AWS_ENDPOINT_URL"
no_moto
finish

CASE_FAILED=0
setup v2-no-hook v2 ok '{"completed": {"BOOT": true, "START": true, "READY": true, "SHUTDOWN": false}, "scripts": []}'
run_start
expect_rc nonzero
expect_in "$ERR" "LocalStack did not run init/ready.d/provision.sh"
expect_not_in "$OUT" "AWS_ENDPOINT_URL"
finish

CASE_FAILED=0
# Keys in another order and over several lines: the states are still read.
setup standalone-v2 standalone ok '{
  "scripts": [ { "state": "SUCCESSFUL", "name": "provision.sh", "stage": "READY" } ],
  "completed": { "BOOT": true, "START": true, "READY": true, "SHUTDOWN": false }
}'
run_start --no-provision
expect_rc 0
expect_in "$FAKE/calls" "docker-compose -f $COMPOSE_FILE up --wait"
expect_not_in "$FAKE/calls" "docker compose -f"
expect_in "$OUT" "export AWS_ENDPOINT_URL=http://localhost:$PORT"
no_moto
finish

CASE_FAILED=0
setup v1-only v1 ok "$(init_json SUCCESSFUL)"
run_start
expect_rc nonzero
expect_in "$ERR" "only docker-compose v1 (1.29.2) is installed"
expect_in "$ERR" "Install the Compose v2 plugin"
expect_not_in "$FAKE/calls" " up"
expect_not_in "$OUT" "AWS_ENDPOINT_URL"
no_moto
finish

CASE_FAILED=0
setup no-compose none ok "$(init_json SUCCESSFUL)"
run_start
expect_rc nonzero
expect_in "$ERR" "Docker Compose is not installed"
expect_in "$ERR" "Install the Compose v2 plugin"
expect_not_in "$FAKE/calls" " up"
expect_not_in "$OUT" "AWS_ENDPOINT_URL"
no_moto
finish

CASE_FAILED=0
setup running-error v2 ok "$(init_json ERROR)" running
echo "provision.sh: simulated failure from an earlier start" >"$FAKE/provision.log"
run_start
expect_rc nonzero
expect_in "$ERR" "an emulator is already running on http://localhost:$PORT"
expect_in "$ERR" "provision.sh (READY stage) failed: state ERROR"
expect_in "$ERR" "simulated failure from an earlier start"
expect_not_in "$FAKE/calls" " up"
expect_not_in "$OUT" "AWS_ENDPOINT_URL"
finish

echo "$passed passed, $failures failed"
[ "$failures" = 0 ]
