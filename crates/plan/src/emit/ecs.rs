//! The ECS part of the CloudFormation template: a task definition and a service per role
//! (each task writes its `smith.toml` from a one-shot container, then runs `smith` as an
//! unprivileged user on a read-only root), the CloudWatch agent that sends the supervisors' and
//! workers' metrics to CloudWatch, and the worker service's scaling on `desired_slots`.

use serde_json::{json, Map, Value};

use super::cfn::{ga, no_value, r, resource, sub, title, ARTIFACTS_PREFIX, NAMESPACE};
use super::cloudwatch;
use super::{fargate_size, text, Fleet, Role, CONFIG_DIR, CONFIG_FILE, DATA_DIR, RUN_AS};
use crate::Result;

/// Where the CloudWatch agent writes the targets it discovers.
const SD_FILE: &str = "/tmp/cwagent_ecs_auto_sd.yaml";
/// The longest stop timeout Fargate allows, and Fargate Spot's interruption notice.
const FARGATE_MAX_STOP_S: u64 = 120;

fn log_configuration(prefix: &str) -> Value {
    json!({
        "LogDriver": "awslogs",
        "Options": {"awslogs-group": r("LogGroup"), "awslogs-region": r("AWS::Region"), "awslogs-stream-prefix": prefix},
    })
}

pub(super) fn task_definition(f: &Fleet, role: Role) -> Result<Value> {
    let s = f.service(role);
    let (cpu, memory) = fargate_size(s)?;
    let worker = role == Role::Worker;
    let mut mounts = vec![
        json!({"SourceVolume": "config", "ContainerPath": CONFIG_DIR, "ReadOnly": true}),
        json!({"SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": false}),
    ];
    let mut init_mounts = vec![
        json!({"SourceVolume": "config", "ContainerPath": CONFIG_DIR, "ReadOnly": false}),
        json!({"SourceVolume": "tmp", "ContainerPath": "/tmp", "ReadOnly": false}),
    ];
    let mut volumes = vec![json!({"Name": "config"}), json!({"Name": "tmp"})];
    // The config volume holds this role's smith.toml; the data volume (worker) belongs to the
    // unprivileged user. Fargate's task volumes start out empty and owned by root.
    let mut script =
        format!("printf '%s' \"$SMITH_TOML\" > {CONFIG_FILE} && chmod 0444 {CONFIG_FILE} && chmod 1777 /tmp");
    if worker {
        mounts.push(json!({"SourceVolume": "data", "ContainerPath": DATA_DIR, "ReadOnly": false}));
        init_mounts.push(json!({"SourceVolume": "data", "ContainerPath": DATA_DIR, "ReadOnly": false}));
        volumes.push(json!({"Name": "data"}));
        script.push_str(&format!(" && chown {RUN_AS}:{RUN_AS} {DATA_DIR}"));
    }
    let mut env =
        vec![json!({"Name": "SMITH_CONFIG", "Value": CONFIG_FILE}), json!({"Name": "SMITH_LOG", "Value": "info"})];
    if worker {
        // agents that keep state in $HOME (Claude Code) get the writable data volume
        env.push(json!({"Name": "HOME", "Value": DATA_DIR}));
    }
    let artifacts = role != Role::Supervisor;
    if artifacts {
        // the worker stores what agents leave in $SMITH_ARTIFACTS, the gateway serves it
        let url = format!("s3://${{ArtifactsBucket}}/{ARTIFACTS_PREFIX}?region=${{AWS::Region}}");
        env.push(json!({"Name": "SMITH_ARTIFACTS_URL", "Value": sub(url)}));
    }
    let mut secrets = vec![
        json!({"Name": "SMITH_STORE", "ValueFrom": r("StoreUrlSecret")}),
        json!({"Name": "SMITH_BUS", "ValueFrom": r("BusUrlSecret")}),
    ];
    if role.needs_token() {
        secrets.push(json!({"Name": "SMITH_TOKEN", "ValueFrom": r("TokenSecret")}));
    }
    let mut smith = json!({
        "Name": "smith",
        "Image": r("Image"),
        "Essential": true,
        "Command": f.args(role),
        "Environment": env,
        "Secrets": secrets,
        "PortMappings": [{"ContainerPort": role.port(), "Protocol": "tcp"}],
        "DependsOn": [{"ContainerName": "config", "Condition": "SUCCESS"}],
        "MountPoints": mounts,
        "ReadonlyRootFilesystem": true,
        "User": format!("{RUN_AS}:{RUN_AS}"),
        // SIGTERM to SIGKILL: the worker's whole drain (Fargate's most, as long as a Spot
        // notice), ECS's default for the others
        "StopTimeout": role.stop_seconds().clamp(30, FARGATE_MAX_STOP_S),
        "LogConfiguration": log_configuration(role.name()),
    });
    if role != Role::Gateway {
        // the CloudWatch agent scrapes every container carrying these labels
        smith["DockerLabels"] = json!({
            "ECS_PROMETHEUS_EXPORTER_PORT": role.port().to_string(),
            "ECS_PROMETHEUS_JOB_NAME": f.job(role),
        });
    }
    let init = json!({
        "Name": "config",
        "Image": r("ConfigImage"),
        "Essential": false,
        "Command": ["sh", "-c", script],
        "Environment": [{"Name": "SMITH_TOML", "Value": f.config_toml(role)}],
        "MountPoints": init_mounts,
        "ReadonlyRootFilesystem": true,
        "User": "0",
        "LogConfiguration": log_configuration(role.name()),
    });
    Ok(resource(
        "AWS::ECS::TaskDefinition",
        json!({
            "Family": f.job(role),
            "Cpu": cpu.to_string(),
            "Memory": memory.to_string(),
            "NetworkMode": "awsvpc",
            "RequiresCompatibilities": ["FARGATE"],
            // Fargate Spot runs x86-64 tasks only
            "RuntimePlatform": {"OperatingSystemFamily": "LINUX", "CpuArchitecture": "X86_64"},
            "ExecutionRoleArn": ga("ExecutionRole", "Arn"),
            "TaskRoleArn": if artifacts { ga("SmithTaskRole", "Arn") } else { no_value() },
            "Volumes": volumes,
            "ContainerDefinitions": [init, smith],
        }),
    ))
}

/// Capacity provider weights for a Spot share: `(on-demand, spot)`, reduced.
fn spot_weights(share: f64) -> (u64, u64) {
    let spot = (share * 100.0).round() as u64;
    let on_demand = 100 - spot.min(100);
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let g = gcd(on_demand, spot).max(1);
    (on_demand / g, spot / g)
}

pub(super) fn service(f: &Fleet, role: Role) -> Value {
    let mut props = json!({
        "Cluster": r("Cluster"),
        "TaskDefinition": r(&format!("{}TaskDefinition", title(role.name()))),
        "NetworkConfiguration": {"AwsvpcConfiguration": {
            "AssignPublicIp": "DISABLED",
            "Subnets": r("PrivateSubnetIds"),
            "SecurityGroups": [ga("TaskSecurityGroup", "GroupId")],
        }},
        "DeploymentConfiguration": {
            "MinimumHealthyPercent": 100,
            "MaximumPercent": 200,
            "DeploymentCircuitBreaker": {"Enable": true, "Rollback": true},
        },
        "PropagateTags": "SERVICE",
    });
    // The store and the bus must answer before a task starts, or the first tasks fail their
    // connections and the deployment circuit breaker rolls the stack back.
    let mut depends = vec![json!("DatabaseInstance1")];
    if f.plan.database.proxy {
        depends.push(json!("DatabaseProxyTargetGroup"));
    }
    match role {
        Role::Worker => {
            // Autoscaling owns the count; the first `base` tasks run on demand, the rest in the
            // plan's Spot share.
            let a = &f.plan.autoscaling;
            let (od, spot) = spot_weights(a.spot_share);
            let mut strategy = Vec::new();
            if od > 0 || a.worker_min_tasks > 0 {
                strategy.push(json!({"CapacityProvider": "FARGATE", "Base": a.worker_min_tasks, "Weight": od}));
            }
            if spot > 0 {
                strategy.push(json!({"CapacityProvider": "FARGATE_SPOT", "Weight": spot}));
            }
            props["CapacityProviderStrategy"] = json!(strategy);
        }
        Role::Supervisor | Role::Gateway => {
            props["DesiredCount"] = json!(f.service(role).tasks);
            props["CapacityProviderStrategy"] = json!([{"CapacityProvider": "FARGATE", "Weight": 1}]);
        }
    }
    if role == Role::Gateway {
        props["LoadBalancers"] =
            json!([{"ContainerName": "smith", "ContainerPort": role.port(), "TargetGroupArn": r("TargetGroup")}]);
        props["HealthCheckGracePeriodSeconds"] = json!(60);
        // the target group must belong to a listener before the service registers tasks in it
        depends.push(json!("ListenerReady"));
    }
    let mut s = resource("AWS::ECS::Service", props);
    s["DependsOn"] = json!(depends);
    s
}

/// The CloudWatch agent as a one-task service: finds the supervisor and worker containers by
/// their Docker labels and sends the metrics the scaling, alarms and dashboards read.
pub(super) fn collector(f: &Fleet, res: &mut Map<String, Value>) {
    let sup = f.job(Role::Supervisor);
    let wrk = f.job(Role::Worker);
    let declaration = |job: &str, dimensions: Value, selectors: &[&str]| {
        json!({
            "source_labels": ["job"],
            "label_matcher": format!("^{job}$"),
            "dimensions": dimensions,
            "metric_selectors": selectors,
        })
    };
    let agent = json!({
        "logs": {
            "force_flush_interval": 5,
            "metrics_collected": {"prometheus": {
                "cluster_name": f.name,
                "log_group_name": format!("/{}/prometheus", f.name),
                "prometheus_config_path": "env:PROMETHEUS_CONFIG_CONTENT",
                "ecs_service_discovery": {
                    "sd_frequency": "30s",
                    "sd_result_file": SD_FILE,
                    "sd_target_cluster": f.name,
                    "sd_cluster_region": "${AWS::Region}",
                    "docker_label": {
                        "sd_port_label": "ECS_PROMETHEUS_EXPORTER_PORT",
                        "sd_job_name_label": "ECS_PROMETHEUS_JOB_NAME",
                    },
                },
                "emf_processor": {
                    "metric_namespace": NAMESPACE,
                    // Histograms are dropped by the agent; these gauges and counters (sent as
                    // deltas) are what the scaling policy, the alarms and the dashboards use.
                    "metric_declaration": [
                        declaration(&sup, json!([["job"]]), &[
                            "^smith_scaling_(desired_slots|current_slots|load|utilization|arrival_rate)$",
                            "^smith_queue_(depth|oldest_age_seconds)$",
                            "^smith_tasks_dead_lettered_total$",
                        ]),
                        declaration(&wrk, json!([["job", "state"]]), &["^smith_agent_slots$"]),
                        declaration(&wrk, json!([["job", "outcome"]]), &["^smith_task_attempts_finished_total$"]),
                        declaration(&wrk, json!([["job"]]), &["^smith_tasks_(dead_lettered|dispatched)_total$"]),
                    ],
                },
            }},
        },
    });
    let scrape = |job: &str, interval: &str| {
        json!({
            "job_name": job,
            "scrape_interval": interval,
            "file_sd_configs": [{"files": [SD_FILE]}],
            "relabel_configs": [{"source_labels": ["job"], "regex": job, "action": "keep"}],
        })
    };
    // the autoscaler's figures often, the workers' (one target per task) once a minute
    let prometheus = json!({
        "global": {"scrape_interval": "1m", "scrape_timeout": "10s"},
        "scrape_configs": [scrape(&sup, "15s"), scrape(&wrk, "1m")],
    });
    // one agent scrapes every worker: give it more room for a large fleet
    let (cpu, memory) = if f.plan.autoscaling.worker_max_tasks > 200 { ("1024", "2048") } else { ("256", "512") };
    res.insert(
        "CollectorTaskDefinition".into(),
        resource(
            "AWS::ECS::TaskDefinition",
            json!({
                "Family": format!("{}-metrics", f.name),
                "Cpu": cpu,
                "Memory": memory,
                "NetworkMode": "awsvpc",
                "RequiresCompatibilities": ["FARGATE"],
                "ExecutionRoleArn": ga("ExecutionRole", "Arn"),
                "TaskRoleArn": ga("CollectorTaskRole", "Arn"),
                "ContainerDefinitions": [{
                    "Name": "cloudwatch-agent",
                    "Image": r("AgentImage"),
                    "Essential": true,
                    "Environment": [
                        {"Name": "CW_CONFIG_CONTENT", "Value": sub(text::json_compact(&agent))},
                        {"Name": "PROMETHEUS_CONFIG_CONTENT", "Value": text::yaml(&prometheus)},
                    ],
                    "LogConfiguration": log_configuration("metrics"),
                }],
            }),
        ),
    );
    res.insert(
        "CollectorService".into(),
        resource(
            "AWS::ECS::Service",
            json!({
                "Cluster": r("Cluster"),
                "TaskDefinition": r("CollectorTaskDefinition"),
                "DesiredCount": 1,
                "CapacityProviderStrategy": [{"CapacityProvider": "FARGATE", "Weight": 1}],
                "NetworkConfiguration": {"AwsvpcConfiguration": {
                    "AssignPublicIp": "DISABLED",
                    "Subnets": r("PrivateSubnetIds"),
                    "SecurityGroups": [ga("CollectorSecurityGroup", "GroupId")],
                }},
                "DeploymentConfiguration": {"MinimumHealthyPercent": 0, "MaximumPercent": 100},
            }),
        ),
    );
}

/// The worker service follows `desired_slots`: a target-tracking policy keeps
/// desired_slots / (desired worker tasks × agents per task) at 1, and, where the service may
/// be at zero tasks (which target tracking cannot scale out from), a step policy starts one.
pub(super) fn worker_scaling(f: &Fleet, res: &mut Map<String, Value>) {
    let a = &f.plan.autoscaling;
    let apt = f.agents_per_task;
    let desired = cloudwatch::metric_stat(
        "desired",
        NAMESPACE,
        "smith_scaling_desired_slots",
        vec![("job", json!(f.job(Role::Supervisor)))],
        "Maximum",
        None,
    );
    let tasks = cloudwatch::metric_stat(
        "tasks",
        "ECS/ContainerInsights",
        "DesiredTaskCount",
        vec![("ClusterName", r("Cluster")), ("ServiceName", ga("WorkerService", "Name"))],
        "Maximum",
        None,
    );
    res.insert(
        "WorkerScalableTarget".into(),
        resource(
            "AWS::ApplicationAutoScaling::ScalableTarget",
            json!({
                "ServiceNamespace": "ecs",
                "ScalableDimension": "ecs:service:DesiredCount",
                "ResourceId": sub("service/${Cluster}/${WorkerService.Name}"),
                "MinCapacity": a.worker_min_tasks,
                "MaxCapacity": a.worker_max_tasks,
            }),
        ),
    );
    res.insert(
        "WorkerSlotsPolicy".into(),
        resource(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            json!({
                "PolicyName": format!("{}-worker-slots", f.name),
                "PolicyType": "TargetTrackingScaling",
                "ScalingTargetId": r("WorkerScalableTarget"),
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 1.0,
                    "ScaleInCooldown": a.scale_in_cooldown_s,
                    "ScaleOutCooldown": a.scale_out_cooldown_s,
                    "CustomizedMetricSpecification": {"Metrics": [
                        desired.clone(),
                        tasks.clone(),
                        {
                            "Id": "slots",
                            "Label": "desired slots per slot the service provides",
                            "Expression": format!("desired / (IF(FILL(tasks, 0) > 0, FILL(tasks, 0), 1) * {apt})"),
                            "ReturnData": true,
                        },
                    ]},
                },
            }),
        ),
    );
    if a.worker_min_tasks > 0 {
        return;
    }
    res.insert(
        "WorkerWakePolicy".into(),
        resource(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            json!({
                "PolicyName": format!("{}-worker-wake", f.name),
                "PolicyType": "StepScaling",
                "ScalingTargetId": r("WorkerScalableTarget"),
                "StepScalingPolicyConfiguration": {
                    "AdjustmentType": "ChangeInCapacity",
                    "Cooldown": 60,
                    "MetricAggregationType": "Maximum",
                    "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
                },
            }),
        ),
    );
    let mut desired = desired;
    let mut tasks = tasks;
    for m in [&mut desired, &mut tasks] {
        m["MetricStat"]["Period"] = json!(60);
    }
    res.insert(
        "WorkerWakeAlarm".into(),
        resource(
            "AWS::CloudWatch::Alarm",
            json!({
                "AlarmName": format!("{}-worker-wake", f.name),
                "AlarmDescription": "Agent slots are wanted while the worker service runs no task: start one (target tracking takes over from there).",
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "Threshold": 1,
                "EvaluationPeriods": 1,
                "TreatMissingData": "notBreaching",
                "AlarmActions": [r("WorkerWakePolicy")],
                "Metrics": [
                    desired,
                    tasks,
                    {
                        "Id": "wake",
                        "Label": "slots wanted with no worker task",
                        "Expression": "IF(desired > 0 AND FILL(tasks, 0) == 0, 1, 0)",
                        "ReturnData": true,
                    },
                ],
            }),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_weights_follow_the_share() {
        assert_eq!(spot_weights(0.7), (3, 7));
        assert_eq!(spot_weights(0.5), (1, 1));
        assert_eq!(spot_weights(0.0), (1, 0));
        assert_eq!(spot_weights(1.0), (0, 1));
    }
}
