#!/usr/bin/env bash
# Provisions the sample pipeline's resources: one queue + DLQ per function (redrive after 5 receives),
# the key-value table `levee-kv` (TTL on `expires_at`) and the bucket `levee-blobs`. Idempotent.
#
# LocalStack runs it as an init hook (ready.d, with `awslocal` on PATH); `localstack/start.sh` runs it
# against moto with the `aws` CLI and AWS_ENDPOINT_URL. `levee provision` creates the same resources
# from a manifest; this script exists so a fresh emulator is ready for the sample pipeline at once.
set -euo pipefail

# With LEVEE_PROVISION_LOG set (docker-compose.yml sets it in the container), the output is also
# kept in that file, which localstack/start.sh prints when this hook fails. The pipeline waits for
# tee, so the file is complete by the time LocalStack records the hook's state.
if [ -n "${LEVEE_PROVISION_LOG:-}" ] && [ -z "${LEVEE_PROVISION_TEED:-}" ]; then
  set +e
  LEVEE_PROVISION_TEED=1 "$0" "$@" 2>&1 | tee "$LEVEE_PROVISION_LOG"
  status="${PIPESTATUS[0]}"
  [ "$status" = 0 ] || echo "provision.sh: failed (exit status $status)" | tee -a "$LEVEE_PROVISION_LOG"
  exit "$status"
fi

if command -v awslocal >/dev/null 2>&1; then
  AWS=(awslocal)
elif command -v aws >/dev/null 2>&1; then
  AWS=(aws --endpoint-url "${AWS_ENDPOINT_URL:-http://localhost:4566}")
else
  echo "provision.sh: neither awslocal nor aws CLI found on PATH" >&2
  exit 1
fi
export AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"

PREFIX="${LEVEE_QUEUE_PREFIX:-levee-}"
FUNCTIONS=(${LEVEE_FUNCTIONS:-inbound routing search-index notify})
MAX_RECEIVE="${LEVEE_MAX_RECEIVE:-5}"
TABLE="${LEVEE_TABLE:-levee-kv}"
BUCKET="${LEVEE_BUCKET:-levee-blobs}"

for fn in "${FUNCTIONS[@]}"; do
  dlq_url=$("${AWS[@]}" sqs create-queue --queue-name "${PREFIX}${fn}-dlq" \
    --attributes MessageRetentionPeriod=1209600 --query QueueUrl --output text)
  dlq_arn=$("${AWS[@]}" sqs get-queue-attributes --queue-url "$dlq_url" \
    --attribute-names QueueArn --query Attributes.QueueArn --output text)
  redrive="{\"deadLetterTargetArn\":\"${dlq_arn}\",\"maxReceiveCount\":\"${MAX_RECEIVE}\"}"
  attrs=$(python3 -c 'import json,sys; print(json.dumps({"RedrivePolicy": sys.argv[1]}))' "$redrive")
  q_url=$("${AWS[@]}" sqs create-queue --queue-name "${PREFIX}${fn}" --query QueueUrl --output text)
  "${AWS[@]}" sqs set-queue-attributes --queue-url "$q_url" --attributes "$attrs"
  echo "queue ${PREFIX}${fn} (dlq ${PREFIX}${fn}-dlq, maxReceiveCount ${MAX_RECEIVE})"
done

if "${AWS[@]}" dynamodb describe-table --table-name "$TABLE" >/dev/null 2>&1; then
  echo "table $TABLE exists"
else
  "${AWS[@]}" dynamodb create-table --table-name "$TABLE" \
    --attribute-definitions AttributeName=ns,AttributeType=S AttributeName=k,AttributeType=S \
    --key-schema AttributeName=ns,KeyType=HASH AttributeName=k,KeyType=RANGE \
    --billing-mode PAY_PER_REQUEST >/dev/null
  "${AWS[@]}" dynamodb wait table-exists --table-name "$TABLE"
  echo "table $TABLE created"
fi
ttl=$("${AWS[@]}" dynamodb describe-time-to-live --table-name "$TABLE" \
  --query TimeToLiveDescription.TimeToLiveStatus --output text)
case "$ttl" in
  ENABLED|ENABLING) ;;
  *) "${AWS[@]}" dynamodb update-time-to-live --table-name "$TABLE" \
       --time-to-live-specification Enabled=true,AttributeName=expires_at >/dev/null
     echo "table $TABLE: TTL enabled on expires_at" ;;
esac

if "${AWS[@]}" s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
  echo "bucket $BUCKET exists"
else
  "${AWS[@]}" s3api create-bucket --bucket "$BUCKET" >/dev/null
  echo "bucket $BUCKET created"
fi
