#!/usr/bin/env bash
# Builds the Levee function `{{name}}` into {{name}}.wasm with componentize-js (npm; pinned by
# package.json and package-lock.json: run `npm ci` first).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/componentize-js ]; then
  echo "error: componentize-js is not installed: run npm ci" >&2
  exit 1
fi
npx componentize-js {{name}}.js --wit wit -n capability -o {{name}}.wasm
ls -l {{name}}.wasm
