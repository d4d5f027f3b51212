//! The CloudFormation resources of a rendered deployment, built as JSON values. Every resource
//! that holds data (queues, table, bucket, repository, logs) states its deletion and
//! replacement policy; physical names are fixed, so a change that would replace one fails
//! instead of creating an empty twin.

use serde_json::{Map, Value, json};

use super::names::Names;
use super::policies;
use super::{
    CONTAINER_PORT, DLQ_RETENTION_SECS, MIN_AGE_ALARM_SECS, PAYLOAD_EXPIRY_DAYS,
    QUEUE_RETENTION_SECS,
};
use crate::manifest::{FunctionSpec, Manifest};

/// SQS's longest visibility timeout.
const MAX_VISIBILITY_SECS: u64 = 12 * 3600;
/// ECS waits at most this long between SIGTERM and SIGKILL on Fargate.
const MAX_STOP_SECS: u64 = 120;

fn r(id: &str) -> Value {
    json!({"Ref": id})
}

fn arn(id: &str) -> Value {
    json!({"Fn::GetAtt": [id, "Arn"]})
}

/// A resource whose data outlives the stack: kept on deletion and on replacement.
fn retained(kind: &str, props: Value) -> Value {
    json!({"Type": kind, "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain", "Properties": props})
}

fn plain(kind: &str, props: Value) -> Value {
    json!({"Type": kind, "Properties": props})
}

pub fn parameters() -> Value {
    json!({
        "Image": {"Type": "String", "Default": "",
            "Description": "Image URI of the levee host (infra/deploy.sh pushes it to this stack's repository). Empty: everything but the ECS services (the first deploy, before the image exists)."},
        "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "VPC of the tasks and the load balancer."},
        "Subnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Description": "Subnets of the tasks (private, with a NAT gateway or VPC endpoints to reach ECR, SQS, DynamoDB, S3 and CloudWatch Logs)."},
        "PublicSubnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Description": "Subnets of the load balancer (two or more, in different zones)."},
        "AssignPublicIp": {"Type": "String", "Default": "DISABLED", "AllowedValues": ["ENABLED", "DISABLED"],
            "Description": "ENABLED when the task subnets are public and have no NAT gateway."},
        "TaskCpu": {"Type": "String", "Default": "512", "AllowedValues": ["256", "512", "1024", "2048", "4096"],
            "Description": "Fargate CPU units of every task."},
        "TaskMemory": {"Type": "String", "Default": "1024", "AllowedValues": ["512", "1024", "2048", "3072", "4096", "8192"],
            "Description": "Fargate memory (MiB) of every task; must suit TaskCpu."},
        "IngressTasks": {"Type": "Number", "Default": 2, "MinValue": 1, "MaxValue": 50,
            "Description": "Tasks serving the HTTP API behind the load balancer."},
        "ScalerTasks": {"Type": "Number", "Default": 2, "MinValue": 1, "MaxValue": 3,
            "Description": "levee scale tasks; one leads (a lease in the table), the others take over when it dies."},
        "AllowedCidr": {"Type": "String", "Default": "0.0.0.0/0", "AllowedPattern": "^[0-9./]+$",
            "Description": "Addresses allowed to reach the load balancer."},
        "CertificateArn": {"Type": "String", "Default": "",
            "Description": "ACM certificate for HTTPS on 443 (HTTP then redirects); empty: HTTP on 80 only."},
        "AlarmTopicArn": {"Type": "String", "Default": "",
            "Description": "SNS topic the alarms notify; empty: alarms without actions."},
        "LogRetentionDays": {"Type": "Number", "Default": 30,
            "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 180, 365],
            "Description": "Days CloudWatch keeps the tasks' logs."},
    })
}

pub fn conditions() -> Value {
    json!({
        "HasImage": {"Fn::Not": [{"Fn::Equals": [r("Image"), ""]}]},
        "HasCertificate": {"Fn::Not": [{"Fn::Equals": [r("CertificateArn"), ""]}]},
        "HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [r("AlarmTopicArn"), ""]}]},
    })
}

/// Queues and DLQs of every function, the kv table and the blob bucket.
pub fn storage(manifest: &Manifest, names: &Names, res: &mut Map<String, Value>) {
    for (name, spec) in &manifest.functions {
        let id = names.id(name);
        res.insert(
            format!("{id}Dlq"),
            retained(
                "AWS::SQS::Queue",
                json!({
                    "QueueName": names.dlq(name),
                    "MessageRetentionPeriod": DLQ_RETENTION_SECS,
                    "SqsManagedSseEnabled": true,
                }),
            ),
        );
        let visibility = spec
            .visibility_timeout()
            .as_secs()
            .clamp(1, MAX_VISIBILITY_SECS);
        res.insert(
            format!("{id}Queue"),
            retained(
                "AWS::SQS::Queue",
                json!({
                    "QueueName": names.queue(name),
                    "MessageRetentionPeriod": QUEUE_RETENTION_SECS,
                    "VisibilityTimeout": visibility,
                    "SqsManagedSseEnabled": true,
                    "RedrivePolicy": {
                        "deadLetterTargetArn": arn(&format!("{id}Dlq")),
                        "maxReceiveCount": spec.max_receive,
                    },
                }),
            ),
        );
    }
    res.insert(
        "KvTable".into(),
        retained(
            "AWS::DynamoDB::Table",
            json!({
                "TableName": names.table,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "ns", "AttributeType": "S"},
                    {"AttributeName": "k", "AttributeType": "S"},
                ],
                "KeySchema": [
                    {"AttributeName": "ns", "KeyType": "HASH"},
                    {"AttributeName": "k", "KeyType": "RANGE"},
                ],
                "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": true},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": true},
                "SSESpecification": {"SSEEnabled": true},
            }),
        ),
    );
    let expire = |prefix: &str| {
        json!({"Id": format!("expire-{}", prefix.trim_end_matches('/')), "Status": "Enabled",
               "Prefix": prefix, "ExpirationInDays": PAYLOAD_EXPIRY_DAYS})
    };
    res.insert(
        "BlobBucket".into(),
        retained(
            "AWS::S3::Bucket",
            json!({
                "BucketName": names.bucket,
                "BucketEncryption": {"ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]},
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": true, "BlockPublicPolicy": true,
                    "IgnorePublicAcls": true, "RestrictPublicBuckets": true,
                },
                "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
                "LifecycleConfiguration": {"Rules": [expire("payloads/"), expire("records/")]},
            }),
        ),
    );
    res.insert(
        "BlobBucketPolicy".into(),
        plain(
            "AWS::S3::BucketPolicy",
            json!({
                "Bucket": r("BlobBucket"),
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                    "Resource": [
                        {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{}", names.bucket)},
                        {"Fn::Sub": format!("arn:${{AWS::Partition}}:s3:::{}/*", names.bucket)},
                    ],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }]},
            }),
        ),
    );
}

/// The image repository, the cluster, the execution role, the security groups and the load
/// balancer in front of the ingress.
pub fn cluster_and_network(names: &Names, res: &mut Map<String, Value>) {
    res.insert(
        "Repository".into(),
        retained(
            "AWS::ECR::Repository",
            json!({
                "RepositoryName": names.repository,
                "ImageTagMutability": "IMMUTABLE",
                "ImageScanningConfiguration": {"ScanOnPush": true},
                "LifecyclePolicy": {"LifecyclePolicyText": json!({"rules": [{
                    "rulePriority": 1, "description": "keep the 20 newest images",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 20},
                    "action": {"type": "expire"}
                }]}).to_string()},
            }),
        ),
    );
    res.insert(
        "Cluster".into(),
        plain(
            "AWS::ECS::Cluster",
            json!({"ClusterName": names.ecs.cluster}),
        ),
    );
    res.insert(
        "ExecutionRole".into(),
        plain(
            "AWS::IAM::Role",
            json!({
                "RoleName": names.role("execution"),
                "AssumeRolePolicyDocument": policies::task_trust(),
                "Policies": [{"PolicyName": "pull-and-log", "PolicyDocument": policies::execution_policy(names)}],
            }),
        ),
    );
    res.insert(
        "LoadBalancerSecurityGroup".into(),
        plain(
            "AWS::EC2::SecurityGroup",
            json!({
                "GroupDescription": format!("{}: the load balancer of the levee API", names.stack),
                "VpcId": r("VpcId"),
                "SecurityGroupIngress": [
                    {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "CidrIp": r("AllowedCidr"), "Description": "HTTP"},
                    {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": r("AllowedCidr"), "Description": "HTTPS"},
                ],
            }),
        ),
    );
    res.insert(
        "TaskSecurityGroup".into(),
        plain(
            "AWS::EC2::SecurityGroup",
            json!({
                "GroupDescription": format!("{}: levee tasks (outbound to AWS APIs; the API port from the load balancer)", names.stack),
                "VpcId": r("VpcId"),
            }),
        ),
    );
    res.insert(
        "TaskIngressFromLoadBalancer".into(),
        plain(
            "AWS::EC2::SecurityGroupIngress",
            json!({
                "GroupId": {"Fn::GetAtt": ["TaskSecurityGroup", "GroupId"]},
                "SourceSecurityGroupId": {"Fn::GetAtt": ["LoadBalancerSecurityGroup", "GroupId"]},
                "IpProtocol": "tcp", "FromPort": CONTAINER_PORT, "ToPort": CONTAINER_PORT,
                "Description": "the levee API from the load balancer",
            }),
        ),
    );
    res.insert(
        "LoadBalancer".into(),
        plain(
            "AWS::ElasticLoadBalancingV2::LoadBalancer",
            json!({
                "Type": "application",
                "Scheme": "internet-facing",
                "Subnets": r("PublicSubnets"),
                "SecurityGroups": [r("LoadBalancerSecurityGroup")],
                "LoadBalancerAttributes": [
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                    {"Key": "idle_timeout.timeout_seconds", "Value": "60"},
                ],
            }),
        ),
    );
    res.insert(
        "TargetGroup".into(),
        plain(
            "AWS::ElasticLoadBalancingV2::TargetGroup",
            json!({
                "TargetType": "ip",
                "Protocol": "HTTP",
                "Port": CONTAINER_PORT,
                "VpcId": r("VpcId"),
                "HealthCheckPath": "/healthz",
                "Matcher": {"HttpCode": "200"},
                "HealthCheckIntervalSeconds": 10,
                "HealthyThresholdCount": 2,
                "TargetGroupAttributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": "30"}],
            }),
        ),
    );
    let forward = json!([{"Type": "forward", "TargetGroupArn": r("TargetGroup")}]);
    let redirect = json!([{"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"}}]);
    res.insert(
        "HttpListener".into(),
        plain(
            "AWS::ElasticLoadBalancingV2::Listener",
            json!({
                "LoadBalancerArn": r("LoadBalancer"), "Port": 80, "Protocol": "HTTP",
                "DefaultActions": {"Fn::If": ["HasCertificate", redirect, forward]},
            }),
        ),
    );
    let mut https = plain(
        "AWS::ElasticLoadBalancingV2::Listener",
        json!({
            "LoadBalancerArn": r("LoadBalancer"), "Port": 443, "Protocol": "HTTPS",
            "Certificates": [{"CertificateArn": r("CertificateArn")}],
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "DefaultActions": forward,
        }),
    );
    https["Condition"] = json!("HasCertificate");
    res.insert("HttpsListener".into(), https);
}

/// The environment every levee container gets: where its resources are, and that the stack
/// owns them (the host checks, never creates or alters, queues).
fn environment(names: &Names) -> Value {
    json!([
        {"Name": "AWS_REGION", "Value": r("AWS::Region")},
        {"Name": "LEVEE_AWS_QUEUE_PREFIX", "Value": names.queue_prefix},
        {"Name": "LEVEE_AWS_TABLE", "Value": names.table},
        {"Name": "LEVEE_AWS_BUCKET", "Value": names.bucket},
        {"Name": "LEVEE_AWS_MANAGED", "Value": "cloudformation"},
        {"Name": "LEVEE_AWS_ECS_CLUSTER", "Value": names.ecs.cluster},
        {"Name": "LEVEE_AWS_ECS_SERVICE_PATTERN", "Value": names.ecs.service_pattern},
        {"Name": "LEVEE_LISTEN", "Value": format!("0.0.0.0:{CONTAINER_PORT}")},
    ])
}

/// A log group, a role and a task definition for one kind of task; returns the task
/// definition's logical id.
#[allow(clippy::too_many_arguments)]
fn task(
    names: &Names,
    res: &mut Map<String, Value>,
    id: &str,
    what: &str,
    command: Vec<String>,
    policy: Value,
    stop_secs: u64,
) -> String {
    let log = format!("{id}Logs");
    res.insert(
        log.clone(),
        json!({"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete",
               "Properties": {"LogGroupName": names.log_group(what), "RetentionInDays": r("LogRetentionDays")}}),
    );
    let role = format!("{id}Role");
    res.insert(
        role.clone(),
        plain(
            "AWS::IAM::Role",
            json!({
                "RoleName": names.role(&format!("{what}-task")),
                "AssumeRolePolicyDocument": policies::task_trust(),
                "Policies": [{"PolicyName": format!("levee-{what}"), "PolicyDocument": policy}],
            }),
        ),
    );
    let def = format!("{id}TaskDefinition");
    res.insert(
        def.clone(),
        plain(
            "AWS::ECS::TaskDefinition",
            json!({
                "Family": format!("{}-{what}", names.stack),
                "RequiresCompatibilities": ["FARGATE"],
                "NetworkMode": "awsvpc",
                "Cpu": r("TaskCpu"),
                "Memory": r("TaskMemory"),
                "ExecutionRoleArn": arn("ExecutionRole"),
                "TaskRoleArn": arn(&role),
                "RuntimePlatform": {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"},
                "ContainerDefinitions": [{
                    "Name": "levee",
                    "Image": r("Image"),
                    "Essential": true,
                    "Command": command,
                    "Environment": environment(names),
                    "PortMappings": [{"ContainerPort": CONTAINER_PORT, "Protocol": "tcp"}],
                    "StopTimeout": stop_secs.clamp(2, MAX_STOP_SECS),
                    "LogConfiguration": {"LogDriver": "awslogs", "Options": {
                        "awslogs-group": r(&log),
                        "awslogs-region": r("AWS::Region"),
                        "awslogs-stream-prefix": "levee",
                    }},
                }],
            }),
        ),
    );
    def
}

fn service(def: &str, service_name: String, desired: Option<Value>) -> Value {
    let mut props = json!({
        "ServiceName": service_name,
        "Cluster": r("Cluster"),
        "LaunchType": "FARGATE",
        "TaskDefinition": r(def),
        "PropagateTags": "SERVICE",
        "EnableECSManagedTags": true,
        "DeploymentConfiguration": {
            "MinimumHealthyPercent": 100, "MaximumPercent": 200,
            "DeploymentCircuitBreaker": {"Enable": true, "Rollback": true},
        },
        "NetworkConfiguration": {"AwsvpcConfiguration": {
            "Subnets": r("Subnets"),
            "SecurityGroups": [r("TaskSecurityGroup")],
            "AssignPublicIp": r("AssignPublicIp"),
        }},
    });
    // The function services have no DesiredCount: `levee scale` owns it, and CloudFormation
    // leaves an absent count alone on update (1 when the service is created).
    if let Some(d) = desired {
        props["DesiredCount"] = d;
    }
    json!({"Type": "AWS::ECS::Service", "Condition": "HasImage", "Properties": props})
}

fn alarm_actions() -> Value {
    json!({"Fn::If": ["HasAlarmTopic", [r("AlarmTopicArn")], r("AWS::NoValue")]})
}

fn alarm(description: String, metric: &str, queue: String, threshold: u64, periods: u32) -> Value {
    alarm_with(
        description,
        metric,
        queue,
        threshold,
        periods,
        60,
        "Maximum",
    )
}

fn alarm_with(
    description: String,
    metric: &str,
    queue: String,
    threshold: u64,
    periods: u32,
    period_s: u64,
    statistic: &str,
) -> Value {
    plain(
        "AWS::CloudWatch::Alarm",
        json!({
            "AlarmDescription": description,
            "Namespace": "AWS/SQS",
            "MetricName": metric,
            "Dimensions": [{"Name": "QueueName", "Value": queue}],
            "Statistic": statistic,
            "Period": period_s,
            "EvaluationPeriods": periods,
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": alarm_actions(),
            "OKActions": alarm_actions(),
        }),
    )
}

/// One function: its role, task definition, service and alarms.
pub fn function(
    _manifest: &Manifest,
    names: &Names,
    name: &str,
    spec: &FunctionSpec,
    res: &mut Map<String, Value>,
) {
    let id = names.id(name).to_string();
    let command = ["up", "--backend", "aws", "--function", name]
        .map(String::from)
        .to_vec();
    let stop = spec.timeout().as_secs() + 5;
    let policy =
        policies::function_policy(names, name, &spec.emits_to, &policies::secret_ids(spec));
    let def = task(names, res, &id, name, command, policy, stop);
    res.insert(
        format!("{id}Service"),
        service(&def, names.service(name), None),
    );
    res.insert(
        format!("{id}DeadLetterAlarm"),
        alarm(
            format!(
                "{name}: messages in the dead-letter queue {}",
                names.dlq(name)
            ),
            "ApproximateNumberOfMessagesVisible",
            names.dlq(name),
            0,
            1,
        ),
    );
    let age = MIN_AGE_ALARM_SECS.max(spec.timeout().as_secs() * 10);
    res.insert(
        format!("{id}OldestAgeAlarm"),
        alarm(
            format!("{name}: the oldest message has waited over {age} s for 3 minutes"),
            "ApproximateAgeOfOldestMessage",
            names.queue(name),
            age,
            3,
        ),
    );
}

/// CloudWatch alarms for the manifest's `[[alerts]]` that SQS's own metrics can express, so the
/// account is told even when every host is down: `oldest_age` (ApproximateAgeOfOldestMessage
/// above `threshold_s`, held for `for_s` rounded up to minutes) and `dlq_growth` (messages sent to
/// the DLQ within `window_s`, rounded up to minutes). The other kinds are the hosts' own view
/// (breaker, blocks, failure rate, store reachability) and stay with the hosts' webhooks.
pub fn manifest_alarms(manifest: &Manifest, names: &Names, res: &mut Map<String, Value>) {
    use crate::alerts::rules::AlertKind;
    let minutes = |s: f64| ((s / 60.0).ceil() as u32).max(1);
    for rule in &manifest.alerts {
        let functions: Vec<&String> = match &rule.function {
            Some(f) => vec![f],
            None => manifest.functions.keys().collect(),
        };
        for f in functions {
            let id = format!(
                "{}{}Alert",
                super::names::logical_id(&rule.name),
                names.id(f)
            );
            let alarm = match rule.kind {
                AlertKind::OldestAge => {
                    let threshold = rule.threshold_s.unwrap_or(0.0).ceil() as u64;
                    alarm(
                        format!(
                            "[[alerts]] {} ({f}): oldest message older than {threshold} s",
                            rule.name
                        ),
                        "ApproximateAgeOfOldestMessage",
                        names.queue(f),
                        threshold,
                        minutes(rule.for_s),
                    )
                }
                AlertKind::DlqGrowth => {
                    let window = u64::from(minutes(rule.window_s.unwrap_or(60.0))) * 60;
                    alarm_with(
                        format!(
                            "[[alerts]] {} ({f}): more than {} dead letters within {window} s",
                            rule.name,
                            rule.threshold.unwrap_or(0.0)
                        ),
                        "NumberOfMessagesSent",
                        names.dlq(f),
                        rule.threshold.unwrap_or(0.0).floor() as u64,
                        1,
                        window,
                        "Sum",
                    )
                }
                _ => continue,
            };
            // Rule names that differ only in punctuation would share an id: number the later.
            let mut unique = id.clone();
            let mut n = 2;
            while res.contains_key(&unique) {
                unique = format!("{id}{n}");
                n += 1;
            }
            res.insert(unique, alarm);
        }
    }
}

/// `levee scale`: sizes the function services; several tasks elect one leader.
pub fn scaler(manifest: &Manifest, names: &Names, res: &mut Map<String, Value>) {
    let functions: Vec<&String> = manifest.functions.keys().collect();
    let policy = policies::scaler_policy(names, &functions);
    let def = task(
        names,
        res,
        "Scaler",
        "scaler",
        vec!["scale".into()],
        policy,
        10,
    );
    res.insert(
        "ScalerService".into(),
        service(&def, names.scaler_service(), Some(r("ScalerTasks"))),
    );
}

/// The HTTP API behind the load balancer (`levee up --ingress-only`: no workers).
pub fn ingress(manifest: &Manifest, names: &Names, res: &mut Map<String, Value>) {
    let functions: Vec<&String> = manifest.functions.keys().collect();
    let mut secrets: Vec<String> = manifest
        .functions
        .values()
        .flat_map(policies::secret_ids)
        .collect();
    secrets.sort();
    secrets.dedup();
    let policy = policies::ingress_policy(names, &functions, &secrets);
    let command = ["up", "--backend", "aws", "--ingress-only"]
        .map(String::from)
        .to_vec();
    let def = task(names, res, "Ingress", "ingress", command, policy, 30);
    let mut svc = service(&def, names.ingress_service(), Some(r("IngressTasks")));
    svc["DependsOn"] = json!(["HttpListener"]);
    svc["Properties"]["HealthCheckGracePeriodSeconds"] = json!(30);
    svc["Properties"]["LoadBalancers"] = json!([{
        "ContainerName": "levee", "ContainerPort": CONTAINER_PORT, "TargetGroupArn": r("TargetGroup")
    }]);
    res.insert("IngressService".into(), svc);
}

pub fn outputs(manifest: &Manifest, names: &Names) -> Value {
    let mut out = json!({
        "Endpoint": {"Description": "The levee API (levee --addr ...)",
            "Value": {"Fn::If": ["HasCertificate",
                {"Fn::Sub": "https://${LoadBalancer.DNSName}"},
                {"Fn::Sub": "http://${LoadBalancer.DNSName}"}]}},
        "RepositoryUri": {"Description": "Push the levee image here", "Value": {"Fn::GetAtt": ["Repository", "RepositoryUri"]}},
        "ClusterName": {"Value": r("Cluster")},
        "QueuePrefix": {"Value": names.queue_prefix},
        "TableName": {"Value": r("KvTable")},
        "BucketName": {"Value": r("BlobBucket")},
    });
    for name in manifest.functions.keys() {
        let id = names.id(name);
        out[format!("{id}QueueUrl")] = json!({"Value": r(&format!("{id}Queue"))});
    }
    out
}
