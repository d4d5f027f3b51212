#!/usr/bin/env bash
# Builds the Levee function `{{name}}` into {{name}}.wasm with componentize-py (PyPI; pinned in
# requirements.txt). COMPONENTIZE_PY may name the componentize-py to use; otherwise the one
# on PATH.
set -euo pipefail
cd "$(dirname "$0")"
cpy="${COMPONENTIZE_PY:-componentize-py}"
if ! command -v "$cpy" >/dev/null; then
  echo "error: componentize-py not found: pip install -r requirements.txt (or set COMPONENTIZE_PY)" >&2
  exit 1
fi
"$cpy" -d wit -w capability componentize app -o {{name}}.wasm
ls -l {{name}}.wasm
