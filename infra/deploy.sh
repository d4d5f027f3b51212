#!/usr/bin/env bash
# Deploys Levee to AWS from the manifest: renders the stack (`levee infra render`), checks that no
# resource it names already exists outside the stack, creates or updates the stack without the
# services (first deploy), builds the image with infra/Dockerfile and pushes it to the stack's ECR
# repository, updates the stack with the image, and prints the endpoint.
#
#   infra/deploy.sh --vpc VPC_ID --subnets SUBNET,SUBNET --public-subnets SUBNET,SUBNET
#                   [--stack levee] [--manifest levee.toml] [--image URI | --tag TAG]
#                   [--template-bucket NAME] [--certificate ACM_ARN] [--alarm-topic SNS_ARN]
#                   [--assign-public-ip] [--task-cpu 512] [--task-memory 1024] [--ingress-tasks 2]
#                   [--allowed-cidr 0.0.0.0/0]
#
#   --image URI   deploy an image already pushed (no Docker needed); otherwise the image is built
#                 and pushed as <repository>:<TAG> (default: the git commit, with -dirty if changed)
#   --template-bucket  where the template is uploaded (CloudFormation takes at most 51,200 bytes
#                 inline); default <stack>-templates-<account>-<region>, created if missing
#
# Credentials and region come from the standard AWS configuration (AWS_PROFILE, AWS_REGION, or
# AWS_ENDPOINT_URL for an emulator). The permissions needed are in infra/README.md and in the
# rendered operator-policy.json. Names come from the manifest's [aws] and [aws.ecs] sections.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

usage() { sed -n '2,/^set -euo pipefail$/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "deploy.sh: $*" >&2; exit 2; }
say() { echo "deploy.sh: $*" >&2; }

stack=levee manifest="$ROOT/levee.toml" image="" tag="" template_bucket="" vpc="" subnets=""
public_subnets="" certificate="" alarm_topic="" public_ip=DISABLED cpu=512 memory=1024 ingress_tasks=2
allowed_cidr=0.0.0.0/0
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) stack="${2:?--stack needs a value}"; shift 2 ;;
    --manifest) manifest="${2:?--manifest needs a value}"; shift 2 ;;
    --image) image="${2:?--image needs a value}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --template-bucket) template_bucket="${2:?--template-bucket needs a value}"; shift 2 ;;
    --vpc) vpc="${2:?--vpc needs a value}"; shift 2 ;;
    --subnets) subnets="${2:?--subnets needs a value}"; shift 2 ;;
    --public-subnets) public_subnets="${2:?--public-subnets needs a value}"; shift 2 ;;
    --certificate) certificate="${2:?--certificate needs a value}"; shift 2 ;;
    --alarm-topic) alarm_topic="${2:?--alarm-topic needs a value}"; shift 2 ;;
    --assign-public-ip) public_ip=ENABLED; shift ;;
    --task-cpu) cpu="${2:?--task-cpu needs a value}"; shift 2 ;;
    --task-memory) memory="${2:?--task-memory needs a value}"; shift 2 ;;
    --ingress-tasks) ingress_tasks="${2:?--ingress-tasks needs a value}"; shift 2 ;;
    --allowed-cidr) allowed_cidr="${2:?--allowed-cidr needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
if [ -z "$vpc" ] || [ -z "$subnets" ] || [ -z "$public_subnets" ]; then
  usage >&2; die "--vpc, --subnets and --public-subnets are required (the tasks' and the load balancer's network)"
fi
[ -f "$manifest" ] || die "manifest $manifest not found"
command -v aws >/dev/null 2>&1 || die "the AWS CLI is required (https://aws.amazon.com/cli/)"
command -v python3 >/dev/null 2>&1 || die "python3 is required (to read the rendered names)"
# AWS CLI v1 reads only AWS_DEFAULT_REGION.
[ -z "${AWS_REGION:-}" ] || export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
AWS=(aws)
[ -z "${AWS_ENDPOINT_URL:-}" ] || AWS+=(--endpoint-url "$AWS_ENDPOINT_URL")
region="${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}"
[ -n "$region" ] || die "no AWS region configured: set AWS_REGION (for example eu-west-1)"

# 1. Render.
levee="${LEVEE_BIN:-}"
if [ -z "$levee" ]; then
  levee="$ROOT/target/release/levee"
  if [ ! -x "$levee" ]; then
    say "building levee (release) to render the stack"
    (cd "$ROOT" && cargo build --release -p levee --bin levee)
  fi
fi
out="$ROOT/infra/out/$stack"
"$levee" infra render --manifest "$manifest" --stack "$stack" --out "$out" >&2
template="$out/levee.template.json"
names="$out/names.json"
if [ -x "$ROOT/.venv-infra/bin/cfn-lint" ]; then
  "$ROOT/.venv-infra/bin/cfn-lint" "$template"
  say "cfn-lint: clean"
else
  say "cfn-lint not installed (infra/check.sh installs it); skipping the lint"
fi

name() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]))[sys.argv[2]]; print("\n".join(v) if isinstance(v, list) else v)' "$names" "$1"; }

# 2. Nothing the stack names may exist outside it (`levee provision`, localstack/start.sh or
# another stack made it): CloudFormation would fail halfway with "already exists".
stack_exists=0
owned=""
if "${AWS[@]}" cloudformation describe-stacks --stack-name "$stack" >/dev/null 2>&1; then
  stack_exists=1
  owned=$("${AWS[@]}" cloudformation describe-stack-resources --stack-name "$stack" \
    --query 'StackResources[].PhysicalResourceId' --output text | tr '\t' '\n')
fi
is_owned() { grep -qxF -- "$1" <<<"$owned" || grep -q -- "/$1\$" <<<"$owned"; }
conflicts=()
for q in $(name queues); do
  if "${AWS[@]}" sqs get-queue-url --queue-name "$q" >/dev/null 2>&1 && ! is_owned "$q"; then conflicts+=("queue $q"); fi
done
t=$(name table)
if "${AWS[@]}" dynamodb describe-table --table-name "$t" >/dev/null 2>&1 && ! is_owned "$t"; then conflicts+=("table $t"); fi
b=$(name bucket)
if head=$("${AWS[@]}" s3api head-bucket --bucket "$b" 2>&1); then
  is_owned "$b" || conflicts+=("bucket $b")
elif grep -q "403\|Forbidden" <<<"$head"; then
  conflicts+=("bucket $b (owned by another account: bucket names are global)")
fi
r=$(name repository)
if "${AWS[@]}" ecr describe-repositories --repository-names "$r" >/dev/null 2>&1 && ! is_owned "$r"; then conflicts+=("repository $r"); fi
if [ ${#conflicts[@]} -gt 0 ]; then
  {
    echo "deploy.sh: these already exist outside stack $stack (made by \`levee provision\`, localstack/start.sh or another stack):"
    printf '  %s\n' "${conflicts[@]}"
    echo "Give this deployment its own names in the manifest's [aws] section (queue_prefix, table, bucket) and"
    echo "--stack (it names the repository), or delete those resources if they hold nothing you need."
  } >&2
  exit 1
fi

# 3. The template goes through S3 (it is larger than CloudFormation's inline limit).
if [ -z "$template_bucket" ]; then
  account=$("${AWS[@]}" sts get-caller-identity --query Account --output text)
  template_bucket="$(tr '[:upper:]' '[:lower:]' <<<"$stack")-templates-$account-$region"
fi
if ! "${AWS[@]}" s3api head-bucket --bucket "$template_bucket" >/dev/null 2>&1; then
  say "creating template bucket $template_bucket"
  if [ "$region" = us-east-1 ]; then
    "${AWS[@]}" s3api create-bucket --bucket "$template_bucket" >/dev/null
  else
    "${AWS[@]}" s3api create-bucket --bucket "$template_bucket" \
      --create-bucket-configuration "LocationConstraint=$region" >/dev/null
  fi
  "${AWS[@]}" s3api put-public-access-block --bucket "$template_bucket" --public-access-block-configuration \
    BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true >/dev/null
fi

params=(VpcId="$vpc" Subnets="$subnets" PublicSubnets="$public_subnets" AssignPublicIp="$public_ip"
  TaskCpu="$cpu" TaskMemory="$memory" IngressTasks="$ingress_tasks" AllowedCidr="$allowed_cidr"
  CertificateArn="$certificate" AlarmTopicArn="$alarm_topic")
deploy() {
  "${AWS[@]}" cloudformation deploy --stack-name "$stack" --template-file "$template" \
    --s3-bucket "$template_bucket" --s3-prefix "$stack" --capabilities CAPABILITY_NAMED_IAM \
    --no-fail-on-empty-changeset --parameter-overrides "${params[@]}" "$@" >&2
}
resource() {
  # describe-stack-resources, not -resource: the singular call fails on moto.
  "${AWS[@]}" cloudformation describe-stack-resources --stack-name "$stack" \
    --query "StackResources[?LogicalResourceId=='$1'].PhysicalResourceId | [0]" --output text
}

# 4. First deploy: everything but the services (they need the image, which needs the repository).
if [ "$stack_exists" = 0 ]; then
  say "creating stack $stack without services (queues, table, bucket, repository, roles, load balancer)"
  deploy Image=""
fi

# 5. The image.
if [ -z "$image" ]; then
  if ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
    die "building the image needs a running Docker engine; or pass --image URI of an image already pushed"
  fi
  repo_uri=$("${AWS[@]}" ecr describe-repositories --repository-names "$r" \
    --query 'repositories[0].repositoryUri' --output text)
  if [ -z "$tag" ]; then
    tag=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || date +%Y%m%d%H%M%S)
    git -C "$ROOT" diff --quiet 2>/dev/null || tag="$tag-dirty-$(date +%s)"
  fi
  image="$repo_uri:$tag"
  say "building $image (infra/Dockerfile)"
  docker build -f "$ROOT/infra/Dockerfile" -t "$image" "$ROOT"
  "${AWS[@]}" ecr get-login-password | docker login --username AWS --password-stdin "${repo_uri%%/*}"
  docker push "$image"
fi

# 6. The services, with the image.
say "deploying $image"
deploy Image="$image"

lb=$(resource LoadBalancer)
dns=$("${AWS[@]}" elbv2 describe-load-balancers --load-balancer-arns "$lb" \
  --query 'LoadBalancers[0].DNSName' --output text)
scheme=http
[ -z "$certificate" ] || scheme=https
cat <<MSG
endpoint: $scheme://$dns
deploy.sh: stack $stack is up. Next:
  - the first admin key (needs the table's permissions, see infra/README.md):
      LEVEE_AWS_TABLE=$t levee keys create --group admin --direct --backend aws --manifest $manifest
  - levee status --addr $scheme://$dns --key-file <that key's file>
MSG
