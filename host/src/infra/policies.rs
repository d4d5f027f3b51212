//! IAM documents of a rendered deployment: one task role per function, allowed exactly its own
//! queue and DLQ, the queues it emits to, its kv namespace (DynamoDB `LeadingKeys`) and its blob
//! prefixes; the scaler's role, the only one that may update services; the ingress's role; the
//! execution role that pulls the image and writes logs; and the operator's policy for deploying.

use serde_json::{Value, json};

use super::names::Names;
use crate::releases::releases_ns;
use crate::scaling::published::stats_ns;
use crate::store::dynamo::records_partition as records_ns;

/// Data-plane calls a consumer makes on its own queue.
const CONSUME: [&str; 6] = [
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:SendMessage",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
];
/// Calls a producer makes on a queue it sends to.
const PRODUCE: [&str; 3] = [
    "sqs:SendMessage",
    "sqs:GetQueueUrl",
    "sqs:GetQueueAttributes",
];
/// Item calls of the kv store (transactions are authorised per item action).
const KV: [&str; 8] = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
];

/// The trust policy of every task role: ECS tasks of this account and region only.
pub fn task_trust() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                "ArnLike": {"aws:SourceArn": {
                    "Fn::Sub": "arn:${AWS::Partition}:ecs:${AWS::Region}:${AWS::AccountId}:*"
                }}
            }
        }]
    })
}

fn queue_arn(name: &str) -> Value {
    json!({"Fn::Sub": format!("arn:${{AWS::Partition}}:sqs:${{AWS::Region}}:${{AWS::AccountId}}:{name}")})
}

fn table_arn(names: &Names) -> Value {
    json!({"Fn::Sub": format!(
        "arn:${{AWS::Partition}}:dynamodb:${{AWS::Region}}:${{AWS::AccountId}}:table/{}", names.table
    )})
}

fn objects(names: &Names, prefixes: &[String]) -> Vec<Value> {
    prefixes
        .iter()
        .map(|p| json!({"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{}/{p}*", names.bucket)}))
        .collect()
}

fn bucket_arn(names: &Names) -> Value {
    json!({"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{}", names.bucket)})
}

/// kv items whose partition key is one of `namespaces` (`StringLike`: `*` allowed).
fn kv_statement(names: &Names, namespaces: &[String]) -> Value {
    json!({
        "Sid": "KvNamespaces",
        "Effect": "Allow",
        "Action": KV,
        "Resource": table_arn(names),
        "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": namespaces}}
    })
}

/// ListBucket on the whole bucket: without it a missing object answers 403, not 404. It shows
/// key names (random ids), never contents.
fn list_statement(names: &Names) -> Value {
    json!({"Sid": "ListForNotFound", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket_arn(names)})
}

/// Read access to the Secrets Manager secrets `ids` (names or ARNs; a name matches its ARN's
/// random six-character suffix).
fn secrets_statement(ids: &[String]) -> Value {
    let arns: Vec<Value> = ids
        .iter()
        .map(|id| {
            if id.starts_with("arn:") {
                json!(id)
            } else {
                json!({"Fn::Sub": format!(
                    "arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:{id}-??????"
                )})
            }
        })
        .collect();
    json!({"Sid": "Secrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arns})
}

/// The Secrets Manager ids a function's manifest entry names.
pub fn secret_ids(spec: &crate::manifest::FunctionSpec) -> Vec<String> {
    spec.secrets
        .values()
        .filter_map(|s| s.aws.clone())
        .collect()
}

/// The policy of function `name`'s task role (`secrets`: the Secrets Manager ids it reads).
pub fn function_policy(
    names: &Names,
    name: &str,
    emits_to: &[String],
    secrets: &[String],
) -> Value {
    let mut statements = vec![
        json!({"Sid": "OwnQueue", "Effect": "Allow", "Action": CONSUME, "Resource": queue_arn(&names.queue(name))}),
        json!({"Sid": "OwnDeadLetters", "Effect": "Allow", "Action": PRODUCE, "Resource": queue_arn(&names.dlq(name))}),
    ];
    if !emits_to.is_empty() {
        let targets: Vec<Value> = emits_to
            .iter()
            .map(|t| queue_arn(&names.queue(t)))
            .collect();
        statements.push(
            json!({"Sid": "EmitsTo", "Effect": "Allow", "Action": PRODUCE, "Resource": targets}),
        );
    }
    statements.push(kv_statement(
        names,
        &[
            name.to_string(),
            records_ns(name),
            stats_ns(name),
            releases_ns(name),
        ],
    ));
    // Its own payloads (received, dead-lettered), completion records and deployed modules (it
    // records its manifest module as release 1 and loads the versions its record names);
    // payloads it writes for the functions it emits to.
    let own = [
        format!("payloads/{name}/"),
        format!("records/{name}/"),
        format!("modules/{name}/"),
    ];
    statements.push(json!({
        "Sid": "OwnBlobs", "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
        "Resource": objects(names, &own)
    }));
    if !emits_to.is_empty() {
        let out: Vec<String> = emits_to.iter().map(|t| format!("payloads/{t}/")).collect();
        statements.push(json!({
            "Sid": "PayloadsOfEmits", "Effect": "Allow", "Action": ["s3:PutObject"],
            "Resource": objects(names, &out)
        }));
    }
    statements.push(list_statement(names));
    if !secrets.is_empty() {
        statements.push(secrets_statement(secrets));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The scaler reads every queue's depth, holds its leader lease in the table and is the only
/// role that may change a service's desired count (the function services only).
pub fn scaler_policy(names: &Names, functions: &[&String]) -> Value {
    let queues: Vec<Value> = functions
        .iter()
        .flat_map(|f| [queue_arn(&names.queue(f)), queue_arn(&names.dlq(f))])
        .collect();
    let services: Vec<Value> = functions
        .iter()
        .map(|f| {
            json!({"Fn::Sub": format!(
                "arn:${{AWS::Partition}}:ecs:${{AWS::Region}}:${{AWS::AccountId}}:service/{}/{}",
                names.ecs.cluster,
                names.service(f)
            )})
        })
        .collect();
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "QueueDepths", "Effect": "Allow", "Action": ["sqs:GetQueueUrl", "sqs:GetQueueAttributes"], "Resource": queues},
        {"Sid": "SizeFunctionServices", "Effect": "Allow", "Action": ["ecs:DescribeServices", "ecs:UpdateService"], "Resource": services},
        kv_statement(names, &[crate::scaling::LEADER_NS.to_string(), stats_ns("*")]),
    ]})
}

/// The ingress serves the API: sends to the functions, reads status, kv and dead letters,
/// redrives, runs `invoke` (so it reads every function's secrets), checks keys. It may not
/// change services.
pub fn ingress_policy(names: &Names, functions: &[&String], secrets: &[String]) -> Value {
    let queues: Vec<Value> = functions
        .iter()
        .flat_map(|f| [queue_arn(&names.queue(f)), queue_arn(&names.dlq(f))])
        .collect();
    let mut namespaces: Vec<String> = functions.iter().map(|f| f.to_string()).collect();
    namespaces.push(crate::ingress::keys::KEYS_NS.to_string());
    namespaces.extend(functions.iter().map(|f| records_ns(f)));
    // `levee deploy`, `versions` and `rollback` go through the ingress.
    namespaces.extend(functions.iter().map(|f| releases_ns(f)));
    let mut statements = vec![
        json!({"Sid": "Queues", "Effect": "Allow", "Action": CONSUME, "Resource": queues}),
        kv_statement(names, &namespaces),
        json!({"Sid": "Blobs", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
         "Resource": objects(names, &["payloads/".to_string(), "records/".to_string(), "modules/".to_string()])}),
        list_statement(names),
    ];
    if !secrets.is_empty() {
        statements.push(secrets_statement(secrets));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The execution role: pull the stack's image and write its log groups.
pub fn execution_policy(names: &Names) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        // GetAuthorizationToken has no resource-level permissions.
        {"Sid": "RegistryLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "PullImage", "Effect": "Allow",
         "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
         "Resource": {"Fn::GetAtt": ["Repository", "Arn"]}},
        {"Sid": "WriteLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": {"Fn::Sub": format!(
             "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:/levee/{}/*", names.stack)}},
    ]})
}

/// What an operator needs to deploy the stack (`infra/deploy.sh`) and run `levee provision`:
/// the stack itself, the resources it creates by their names, passing only its own roles.
pub fn operator_policy(names: &Names) -> Value {
    let region_acct = |service: &str, rest: &str| format!("arn:aws:{service}:*:*:{rest}");
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Stack", "Effect": "Allow", "Action": "cloudformation:*",
         "Resource": [region_acct("cloudformation", &format!("stack/{}/*", names.stack)),
                      region_acct("cloudformation", &format!("changeSet/{}*/*", names.stack))]},
        {"Sid": "Validate", "Effect": "Allow", "Action": ["cloudformation:ValidateTemplate", "cloudformation:DescribeStacks"], "Resource": "*"},
        {"Sid": "Queues", "Effect": "Allow", "Action": "sqs:*",
         "Resource": region_acct("sqs", &format!("{}*", names.queue_prefix))},
        {"Sid": "Table", "Effect": "Allow", "Action": "dynamodb:*",
         "Resource": [region_acct("dynamodb", &format!("table/{}", names.table)),
                      region_acct("dynamodb", &format!("table/{}/*", names.table))]},
        {"Sid": "Bucket", "Effect": "Allow", "Action": "s3:*",
         "Resource": [format!("arn:aws:s3:::{}", names.bucket), format!("arn:aws:s3:::{}/*", names.bucket)]},
        {"Sid": "Repository", "Effect": "Allow", "Action": "ecr:*",
         "Resource": region_acct("ecr", &format!("repository/{}", names.repository))},
        {"Sid": "RegistryLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        {"Sid": "Roles", "Effect": "Allow",
         "Action": ["iam:CreateRole", "iam:DeleteRole", "iam:GetRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy",
                    "iam:GetRolePolicy", "iam:TagRole", "iam:UntagRole", "iam:UpdateAssumeRolePolicy", "iam:PassRole"],
         "Resource": format!("arn:aws:iam::*:role/{}-*", names.stack)},
        {"Sid": "Compute", "Effect": "Allow",
         "Action": ["ecs:*", "elasticloadbalancing:*", "logs:*", "cloudwatch:PutMetricAlarm",
                    "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms",
                    "ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress",
                    "ec2:RevokeSecurityGroupEgress", "ec2:CreateTags", "ec2:Describe*"],
         "Resource": "*"},
    ]})
}
