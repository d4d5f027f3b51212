#!/usr/bin/env bash
# Assembles the file tree of Levee's container image in --out DIR (infra/Dockerfile copies it into
# the runtime stage; tests/tests/image.rs runs the platform from it):
#
#   DIR/usr/local/bin/levee        the host binary
#   DIR/srv/levee/levee.toml       the manifest
#   DIR/srv/levee/<module>         every [functions.*] module of the manifest, at its path relative
#                                  to the manifest (e.g. functions/target/wasm32-wasip2/release/inbound.wasm)
#   DIR/srv/levee/<replay>/        each function's replay corpus (`replay`, default
#                                  functions/NAME/replay), when it exists: `levee deploy` runs it
#   DIR/srv/levee/.levee/          the data directory (empty; the manifest's default data_dir)
#
#   infra/image.sh --out DIR [--manifest PATH] [--binary PATH] [--guests-from DIR]
#
#   --out DIR           where to lay out the tree (required); its usr/local/bin/levee and srv/levee
#                       are replaced, nothing else in DIR is touched
#   --manifest PATH     the manifest to bake in (default: levee.toml at the repository root); its
#                       module paths are relative to it and must stay below its directory
#   --binary PATH       copy this levee binary instead of `cargo build --release -p levee --bin levee`
#                       (CI passes its debug build)
#   --guests-from DIR   take each module from DIR/<file name of the module> (e.g. a prebuilt
#                       functions/target/wasm32-wasip2/release), falling back to its path relative to
#                       the manifest, instead of building functions/ (cargo build --release --target
#                       wasm32-wasip2 --workspace with CARGO_TARGET_DIR=functions/target)
#
# Needs python3 (3.11+, for tomllib) to read the manifest, and cargo for what it builds. A module
# the manifest references but that is missing is an error naming the function and the module.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"

usage() { sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "image.sh: $*" >&2; exit 1; }

out=""
manifest="$ROOT/levee.toml"
binary=""
guests_from=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --out|--manifest|--binary|--guests-from)
      if [ "$#" -lt 2 ] || [ -z "$2" ]; then echo "image.sh: $1 needs a value (see --help)" >&2; exit 2; fi
      case "$1" in
        --out) out="$2" ;;
        --manifest) manifest="$2" ;;
        --binary) binary="$2" ;;
        --guests-from) guests_from="$2" ;;
      esac
      shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    --manifest=*) manifest="${1#*=}"; shift ;;
    --binary=*) binary="${1#*=}"; shift ;;
    --guests-from=*) guests_from="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$out" ] || { echo "image.sh: --out DIR is required (see --help)" >&2; exit 2; }

[ -f "$manifest" ] || die "manifest $manifest not found"
manifest="$(cd "$(dirname "$manifest")" && pwd)/$(basename "$manifest")"
manifest_dir="$(dirname "$manifest")"
if [ -n "$binary" ]; then
  if [ ! -f "$binary" ] || [ ! -x "$binary" ]; then die "--binary $binary is not an executable file"; fi
fi
if [ -n "$guests_from" ]; then
  [ -d "$guests_from" ] || die "--guests-from $guests_from is not a directory"
  guests_from="$(cd "$guests_from" && pwd)"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "needs $PYTHON (3.11+, for tomllib) to read the manifest"

# The manifest's functions and module paths, one "NAME<TAB>MODULE" line each; checked before any
# build so a bad manifest fails fast.
modules="$("$PYTHON" - "$manifest" <<'PY'
import os, sys
try:
    import tomllib
except ModuleNotFoundError:
    sys.exit(f"image.sh: python {sys.version.split()[0]} has no tomllib; needs Python 3.11+")
path = sys.argv[1]
try:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
except (OSError, tomllib.TOMLDecodeError) as e:
    sys.exit(f"image.sh: cannot read manifest {path}: {e}")
functions = doc.get("functions")
if not isinstance(functions, dict) or not functions:
    sys.exit(f"image.sh: manifest {path} has no [functions.*] sections")
for name, spec in functions.items():
    module = spec.get("module") if isinstance(spec, dict) else None
    if not isinstance(module, str) or not module:
        sys.exit(f"image.sh: [functions.{name}] in {path} has no module")
    if os.path.isabs(module):
        sys.exit(f"image.sh: [functions.{name}] module = \"{module}\" is absolute; the image needs "
                 f"module paths relative to the manifest")
    rel = os.path.normpath(module)
    if rel == ".." or rel.startswith(".." + os.sep):
        sys.exit(f"image.sh: [functions.{name}] module = \"{module}\" leaves the manifest's directory")
    if "\t" in rel or "\n" in rel:
        sys.exit(f"image.sh: [functions.{name}] module = {module!r} has a tab or newline")
    replay = spec.get("replay", f"functions/{name}/replay")
    replay = os.path.normpath(replay) if isinstance(replay, str) and not os.path.isabs(replay) else ""
    if replay == ".." or replay.startswith(".." + os.sep) or "\t" in replay or "\n" in replay:
        replay = ""
    print(f"{name}\t{rel}\t{replay}")
PY
)"

# Guests.
if [ -z "$guests_from" ]; then
  echo "==> building guest components (functions/, wasm32-wasip2, release)" >&2
  (cd "$ROOT/functions" && CARGO_TARGET_DIR="$ROOT/functions/target" \
    cargo build --release --target wasm32-wasip2 --workspace) >&2
fi

# Every module's source, resolved before anything is written: all missing ones are named at once.
sources=()
missing=()
replays=()
while IFS=$'\t' read -r name rel replay; do
  # The replay gate's corpus (`levee deploy` runs it on the host that receives the deploy).
  [ -n "$replay" ] && [ -d "$manifest_dir/$replay" ] && replays+=("$replay")
  candidates=()
  [ -n "$guests_from" ] && candidates+=("$guests_from/$(basename "$rel")")
  candidates+=("$manifest_dir/$rel")
  found=""
  for c in "${candidates[@]}"; do
    if [ -f "$c" ]; then found="$c"; break; fi
  done
  if [ -n "$found" ]; then
    sources+=("$rel"$'\t'"$found")
  else
    missing+=("[functions.$name] module \"$rel\" (looked for: ${candidates[*]})")
  fi
done <<<"$modules"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "image.sh: ${#missing[@]} module(s) the manifest $manifest references are missing:" >&2
  printf '  %s\n' "${missing[@]}" >&2
  [ -n "$guests_from" ] || echo "  (build them, or pass --guests-from DIR)" >&2
  exit 1
fi

# Host binary.
if [ -z "$binary" ]; then
  echo "==> building levee (release)" >&2
  (cd "$ROOT" && cargo build --release -p levee --bin levee) >&2
  binary="${CARGO_TARGET_DIR:-$ROOT/target}/release/levee"
  [ -x "$binary" ] || die "cargo built no $binary"
fi

# The tree.
mkdir -p "$out"
out="$(cd "$out" && pwd)"
srv="$out/srv/levee"
rm -rf "$srv" "$out/usr/local/bin/levee"
mkdir -p "$out/usr/local/bin" "$srv/.levee"
install -m 0755 "$binary" "$out/usr/local/bin/levee"
install -m 0644 "$manifest" "$srv/levee.toml"
for s in "${sources[@]}"; do
  rel="${s%%$'\t'*}"
  src="${s#*$'\t'}"
  mkdir -p "$(dirname "$srv/$rel")"
  install -m 0644 "$src" "$srv/$rel"
done

for r in "${replays[@]}"; do
  mkdir -p "$srv/$r"
  cp -R "$manifest_dir/$r/." "$srv/$r/"
done

echo "==> image tree in $out" >&2
echo "  usr/local/bin/levee  (from $binary)" >&2
echo "  srv/levee/levee.toml (from $manifest)" >&2
for s in "${sources[@]}"; do
  echo "  srv/levee/${s%%$'\t'*}  (from ${s#*$'\t'})" >&2
done
for r in "${replays[@]}"; do
  echo "  srv/levee/$r/  (replay corpus)" >&2
done
echo "  srv/levee/.levee/    (empty data directory)" >&2
