#!/usr/bin/env bash
# Checks the deployment offline. Renders the sample manifest (levee.toml) and a generated
# ten-function manifest with `levee infra render` and runs cfn-lint on both (cfn-lint is installed
# into <repo>/.venv-infra on first use). With --emulator it also runs infra/deploy.sh against the
# emulator of localstack/start.sh (moto serves CloudFormation, ECS, ECR, ELBv2 offline):
#   - the sample manifest's names, which start.sh provisioned, are refused by name (no collision);
#   - the same manifest with its own names deploys: stack, pushed image URI, endpoint; a second
#     deploy is an update that leaves the scaler's desired counts alone.
#
#   infra/check.sh [--emulator]        (LEVEE_BIN: the levee binary; default target/debug/levee)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VENV="$ROOT/.venv-infra"
PYTHON="${PYTHON:-python3}"

emulator=0
for arg in "$@"; do
  case "$arg" in
    --emulator) emulator=1 ;;
    -h|--help) sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check.sh: unknown argument '$arg' (allowed: --emulator)" >&2; exit 2 ;;
  esac
done

levee="${LEVEE_BIN:-}"
for candidate in "$ROOT/target/debug/levee" "$ROOT/target/release/levee"; do
  [ -n "$levee" ] || { [ -x "$candidate" ] && levee="$candidate"; }
done
[ -n "$levee" ] || { echo "check.sh: no levee binary: build it (cargo build -p levee --bin levee) or set LEVEE_BIN" >&2; exit 2; }

if [ ! -x "$VENV/bin/cfn-lint" ]; then
  echo "check.sh: installing cfn-lint into $VENV (first run only)" >&2
  "$PYTHON" -m venv "$VENV"
  printf '*\n' > "$VENV/.gitignore"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'cfn-lint>=1.58,<2' >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A ten-function manifest: a chain f0 → f1 → … → f9, each with its own max_receive.
ten="$work/ten.toml"
module="$ROOT/functions/target/wasm32-wasip2/release/noop.wasm"
{
  printf '[aws]\nqueue_prefix = "ten-"\ntable = "ten-kv"\nbucket = "ten-blobs"\n\n'
  # Alerts that render as CloudWatch alarms (and one that stays with the hosts).
  printf '[[alerts]]\nname = "backlog"\nkind = "oldest_age"\nthreshold_s = 120\nfor_s = 60\n\n'
  printf '[[alerts]]\nname = "dead-letters"\nkind = "dlq_growth"\nthreshold = 10\nwindow_s = 300\n\n'
  printf '[[alerts]]\nname = "store"\nkind = "store_unreachable"\nfor_s = 30\n\n'
  for i in $(seq 0 9); do
    printf '[functions.f%s]\nmodule = "%s"\nmax_receive = %s\n' "$i" "$module" "$((i + 1))"
    [ "$i" -lt 9 ] && printf 'emits_to = ["f%s"]\n' "$((i + 1))"
    printf '\n'
  done
} > "$ten"

"$VENV/bin/cfn-lint" --version
for m in "$ROOT/levee.toml" "$ten"; do
  out="$work/$(basename "$m" .toml)"
  "$levee" infra render --manifest "$m" --out "$out" | grep -v '^wrote '
  "$VENV/bin/cfn-lint" "$out/levee.template.json"
  echo "cfn-lint: $(basename "$m") → $out/levee.template.json: clean"
done

[ "$emulator" = 1 ] || exit 0

env_lines="$("$ROOT/localstack/start.sh")"
eval "$env_lines"
export AWS_ENDPOINT_URL AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
export AWS_DEFAULT_REGION="$AWS_REGION"
PATH="$ROOT/.venv-moto/bin:$PATH"
AWS=(aws --endpoint-url "$AWS_ENDPOINT_URL")

vpc=$("${AWS[@]}" ec2 create-vpc --cidr-block 10.9.0.0/16 --query Vpc.VpcId --output text)
s1=$("${AWS[@]}" ec2 create-subnet --vpc-id "$vpc" --cidr-block 10.9.1.0/24 --query Subnet.SubnetId --output text)
s2=$("${AWS[@]}" ec2 create-subnet --vpc-id "$vpc" --cidr-block 10.9.2.0/24 --query Subnet.SubnetId --output text)
net=(--vpc "$vpc" --subnets "$s1,$s2" --public-subnets "$s1,$s2")
image=public.ecr.aws/levee/levee:check
export LEVEE_BIN="$levee"

# 1. start.sh provisioned the sample's names: deploying them is refused, naming each.
if "$HERE/deploy.sh" --stack "chk$$" --image "$image" "${net[@]}" >"$work/collide.out" 2>&1; then
  echo "check.sh: deploy.sh accepted names that exist outside the stack" >&2; cat "$work/collide.out" >&2; exit 1
fi
if ! { grep -q "table levee-kv" "$work/collide.out" && grep -q "queue levee-inbound" "$work/collide.out"; }; then
  echo "check.sh: the refusal does not name the existing resources:" >&2; cat "$work/collide.out" >&2; exit 1
fi
echo "check.sh: deploy.sh refused the names start.sh provisioned:"
grep -A3 "already exist outside" "$work/collide.out" | sed 's/^/  /'

# 2. Its own names: the stack deploys, then updates.
stack="chk$$"
own="$work/own.toml"
sed -e "s/^queue_prefix = .*/queue_prefix = \"$stack-\"/" -e "s/^table = .*/table = \"$stack-kv\"/" \
  -e "s/^bucket = .*/bucket = \"$stack-blobs\"/" -e "s/^cluster = .*/cluster = \"$stack\"/" \
  -e "s/^service_pattern = .*/service_pattern = \"$stack-{function}\"/" "$ROOT/levee.toml" > "$own"
# Module paths are relative to the manifest: keep them pointing into the repository.
sed -i "s|^module = \"functions/|module = \"$ROOT/functions/|" "$own"
cleanup() {
  "${AWS[@]}" cloudformation delete-stack --stack-name "$stack" >/dev/null 2>&1 || true
  rm -rf "$work" "$ROOT/infra/out/$stack"
}
trap cleanup EXIT
"$HERE/deploy.sh" --stack "$stack" --manifest "$own" --image "$image" "${net[@]}" > "$work/deploy.out"
endpoint=$(sed -n 's/^endpoint: //p' "$work/deploy.out")
[ -n "$endpoint" ] || { echo "check.sh: deploy.sh printed no endpoint" >&2; cat "$work/deploy.out" >&2; exit 1; }
services=$("${AWS[@]}" ecs list-services --cluster "$stack" --query 'length(serviceArns)' --output text)
[ "$services" = 7 ] || { echo "check.sh: $services services in cluster $stack, expected 7 (5 functions, scaler, ingress)" >&2; exit 1; }
"${AWS[@]}" ecs update-service --cluster "$stack" --service "$stack-inbound" --desired-count 4 >/dev/null
"$HERE/deploy.sh" --stack "$stack" --manifest "$own" --image "${image}2" "${net[@]}" --ingress-tasks 3 > "$work/update.out"
count=$("${AWS[@]}" ecs describe-services --cluster "$stack" --services "$stack-inbound" \
  --query 'services[0].desiredCount' --output text)
[ "$count" = 4 ] || { echo "check.sh: the update reset inbound's desired count to $count" >&2; exit 1; }
echo "check.sh: deploy.sh created stack $stack on the emulator (7 services, endpoint $endpoint) and updated it; inbound kept the desired count 4"
