# shellcheck shell=bash disable=SC2034  # (the variables are read by the scripts that source this)
# Sourced by start.sh and stop.sh: finds the Docker Compose v2 command for docker-compose.yml.
#
#   find_compose   sets COMPOSE=(docker compose -f FILE) or (docker-compose -f FILE) for Compose v2
#                  (the plugin, or the standalone v2 binary) and COMPOSE_NAME to its name; returns 1
#                  with a reason in COMPOSE_PROBLEM when there is only Compose v1 or none.
#
# Compose v1 (the Python `docker-compose`, end of life since 2023) is refused: it has no
# `up --wait`, which start.sh relies on to wait for the health check.

COMPOSE_FILE_PATH="${COMPOSE_FILE_PATH:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/docker-compose.yml}"
COMPOSE=()
COMPOSE_NAME=""
COMPOSE_PROBLEM=""

find_compose() {
  local v
  if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose -f "$COMPOSE_FILE_PATH")
    COMPOSE_NAME="docker compose"
    return 0
  fi
  if command -v docker-compose >/dev/null 2>&1; then
    # v2 standalone: "Docker Compose version v2.27.0"; v1: "docker-compose version 1.29.2, build …".
    v="$(docker-compose version --short 2>/dev/null || docker-compose --version 2>/dev/null || true)"
    v="$(printf '%s\n' "$v" | grep -Eo '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n 1 || true)"
    case "$v" in
      ''|1.*)
        COMPOSE_PROBLEM="only docker-compose v1 (${v:-unknown version}) is installed; it is end of life and has no \`up --wait\`. Install the Compose v2 plugin (\`docker compose\`: the docker-compose-plugin package, or Docker Desktop), or use the offline moto server: localstack/start.sh --moto"
        return 1 ;;
      *)
        COMPOSE=(docker-compose -f "$COMPOSE_FILE_PATH")
        COMPOSE_NAME="docker-compose"
        return 0 ;;
    esac
  fi
  COMPOSE_PROBLEM="a Docker engine answers but Docker Compose is not installed. Install the Compose v2 plugin (\`docker compose\`: the docker-compose-plugin package, or Docker Desktop), or use the offline moto server: localstack/start.sh --moto"
  return 1
}
