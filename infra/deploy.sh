#!/usr/bin/env bash
# Deploys Levee to AWS with CloudFormation: storage.yaml (queues + DLQs, table, bucket) and, when an
# image is given, service.yaml (ECS cluster + Fargate service + least-privilege task role).
# Templates are validated first (cfn-lint when installed by infra/check.sh, and CloudFormation's
# validate-template). Credentials and region come from the standard AWS configuration.
#
#   infra/deploy.sh --stack NAME [--prefix levee-] [--table levee-kv] [--bucket NAME]
#                   [--max-receive 5] [--image URI --subnets s1,s2 --security-groups g1[,g2]
#                    [--desired 1] [--cpu 1024] [--memory 2048] [--public-ip]]
#
# Then run `levee provision` for queues of functions beyond the sample pipeline (same prefix).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

usage() { sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "deploy.sh: $*" >&2; exit 2; }

stack="" prefix="levee-" table="levee-kv" bucket="" max_receive=5
image="" subnets="" security_groups="" desired=1 cpu=1024 memory=2048 public_ip=DISABLED
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) stack="${2:?--stack needs a value}"; shift 2 ;;
    --prefix) prefix="${2?--prefix needs a value}"; shift 2 ;;
    --table) table="${2:?--table needs a value}"; shift 2 ;;
    --bucket) bucket="${2:?--bucket needs a value}"; shift 2 ;;
    --max-receive) max_receive="${2:?--max-receive needs a value}"; shift 2 ;;
    --image) image="${2:?--image needs a value}"; shift 2 ;;
    --subnets) subnets="${2:?--subnets needs a value}"; shift 2 ;;
    --security-groups) security_groups="${2:?--security-groups needs a value}"; shift 2 ;;
    --desired) desired="${2:?--desired needs a value}"; shift 2 ;;
    --cpu) cpu="${2:?--cpu needs a value}"; shift 2 ;;
    --memory) memory="${2:?--memory needs a value}"; shift 2 ;;
    --public-ip) public_ip=ENABLED; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
[ -n "$stack" ] || { usage >&2; die "--stack is required"; }
if [ -n "$image" ] && { [ -z "$subnets" ] || [ -z "$security_groups" ]; }; then
  die "--image needs --subnets and --security-groups (the Fargate tasks' network)"
fi
# AWS CLI v1 reads only AWS_DEFAULT_REGION.
[ -z "${AWS_REGION:-}" ] || export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
command -v aws >/dev/null 2>&1 || die "the AWS CLI is required (https://aws.amazon.com/cli/)"

# 1. Validate.
if [ -x "$ROOT/.venv-infra/bin/cfn-lint" ]; then
  "$ROOT/.venv-infra/bin/cfn-lint" "$HERE/storage.yaml" "$HERE/service.yaml"
else
  echo "deploy.sh: cfn-lint not installed (run infra/check.sh once to install it); skipping lint" >&2
fi
for t in storage.yaml service.yaml; do
  aws cloudformation validate-template --template-body "file://$HERE/$t" >/dev/null
  echo "deploy.sh: $t is valid"
done

output() {
  aws cloudformation describe-stacks --stack-name "$1" --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue" \
    --output text
}

# 2. Storage.
storage_params=(QueuePrefix="$prefix" TableName="$table" MaxReceiveCount="$max_receive")
[ -z "$bucket" ] || storage_params+=(BucketName="$bucket")
aws cloudformation deploy --stack-name "$stack-storage" --template-file "$HERE/storage.yaml" \
  --parameter-overrides "${storage_params[@]}" --no-fail-on-empty-changeset
bucket_name="$bucket"
[ -n "$bucket_name" ] || bucket_name=$(output "$stack-storage" BucketName)
[ -n "$bucket_name" ] && [ "$bucket_name" != None ] || die "could not read the bucket name from stack $stack-storage"
echo "deploy.sh: storage stack $stack-storage: queues ${prefix}*, table $table, bucket $bucket_name"

# 3. Service.
if [ -n "$image" ]; then
  aws cloudformation deploy --stack-name "$stack-service" --template-file "$HERE/service.yaml" \
    --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset \
    --parameter-overrides Image="$image" QueuePrefix="$prefix" TableName="$table" BucketName="$bucket_name" \
      Subnets="$subnets" SecurityGroups="$security_groups" DesiredCount="$desired" Cpu="$cpu" Memory="$memory" \
      AssignPublicIp="$public_ip"
  echo "deploy.sh: service stack $stack-service: cluster $(output "$stack-service" ClusterName), service levee"
fi

cat <<MSG
deploy.sh: done. Run Levee against it with the standard AWS configuration (AWS_REGION, AWS_PROFILE) and:
  aws.queue_prefix = "$prefix", aws.table = "$table", aws.bucket = "$bucket_name"
MSG
