//! CloudWatch for the CloudFormation template: the seed's twelve alerts
//! (`deploy/prometheus/alerts.yml`, group `smith`) as alarms on metrics CloudWatch has, and
//! three dashboards mirroring `deploy/grafana/` by purpose (overview, performance, store and
//! bus).
//!
//! CloudWatch gets the supervisors' and workers' gauges and counters through the CloudWatch
//! agent, but not histograms (the agent drops them), and not the gateways' metrics (their
//! `/metrics` needs the token). So the latency alerts read the oldest queued task's age and
//! the broker's ready messages, and the HTTP alerts the load balancer's figures; each alarm's
//! description says what it reads.

use serde_json::{json, Map, Value};

use super::cfn::{broker_name, ga, no_value, r, resource, service_id, sub, NAMESPACE};
use super::{text, Fleet, Role};

/// The seed's alert names, in `alerts.yml`'s order.
pub const SEED_ALERTS: [&str; 12] = [
    "HighCPU",
    "HighMemory",
    "StoreConnectionsNearLimit",
    "TaskLatencyHigh",
    "ModerateUtilization",
    "QueueDepthIncreasing",
    "AgentUtilizationHigh",
    "MessageLatencyHigh",
    "Backlog",
    "DeadLetterSpike",
    "ThroughputDrop",
    "ErrorRateHigh",
];

/// The attempt outcomes that end a task (`retrying`, `released`, `lost` do not).
const FINAL_OUTCOMES: [&str; 5] = ["succeeded", "failed", "cancelled", "timed_out", "budget_exceeded"];

/// A metric query that returns no data of its own; `period` only for alarms (target tracking
/// takes none).
pub(super) fn metric_stat(
    id: &str,
    namespace: &str,
    metric: &str,
    dimensions: Vec<(&str, Value)>,
    stat: &str,
    period: Option<u64>,
) -> Value {
    let dimensions: Vec<Value> = dimensions.into_iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect();
    let mut stat = json!({
        "Metric": {"Namespace": namespace, "MetricName": metric, "Dimensions": dimensions},
        "Stat": stat,
    });
    if let Some(p) = period {
        stat["Period"] = json!(p);
    }
    json!({"Id": id, "MetricStat": stat, "ReturnData": false})
}

fn expression(id: &str, expression: &str, label: &str) -> Value {
    json!({"Id": id, "Expression": expression, "Label": label, "ReturnData": true})
}

/// One alarm: `metrics` ends with the query it alarms on.
struct Alarm {
    name: &'static str,
    description: String,
    metrics: Vec<Value>,
    comparison: &'static str,
    threshold: f64,
    period: u64,
    evaluation_periods: u64,
}

/// The metric queries the alarms read, by source: the platform's own (`job` dimension), ECS and
/// the load balancer.
struct Sources {
    sup: Value,
    wrk: Value,
}

impl Sources {
    fn smith(&self, id: &str, metric: &str, job: &Value, extra: Vec<(&str, Value)>, stat: &str) -> Value {
        let mut dims = vec![("job", job.clone())];
        dims.extend(extra);
        metric_stat(id, NAMESPACE, metric, dims, stat, None)
    }

    /// Busy and idle agent slots of every worker.
    fn slots(&self) -> Vec<Value> {
        vec![
            self.smith("busy", "smith_agent_slots", &self.wrk, vec![("state", json!("busy"))], "Sum"),
            self.smith("idle", "smith_agent_slots", &self.wrk, vec![("state", json!("idle"))], "Sum"),
        ]
    }

    /// Tasks finished per second against arrivals while tasks wait: `drop` is 1 when under half.
    fn throughput(&self) -> Vec<Value> {
        let mut m: Vec<Value> = FINAL_OUTCOMES
            .iter()
            .enumerate()
            .map(|(i, o)| {
                self.smith(
                    &format!("f{}", i + 1),
                    "smith_task_attempts_finished_total",
                    &self.wrk,
                    vec![("outcome", json!(o))],
                    "Sum",
                )
            })
            .collect();
        m.push(self.smith("arrivals", "smith_scaling_arrival_rate", &self.sup, vec![], "Average"));
        m.push(self.smith("queued", "smith_queue_depth", &self.sup, vec![], "Minimum"));
        m.push(json!({
            "Id": "done",
            "Expression": "(FILL(f1, 0) + FILL(f2, 0) + FILL(f3, 0) + FILL(f4, 0) + FILL(f5, 0)) / 300",
            "Label": "tasks finished per second",
            "ReturnData": false,
        }));
        m.push(expression(
            "drop",
            "IF(arrivals > 0.1 AND queued > 0 AND done < 0.5 * arrivals, 1, 0)",
            "finishing under half the arrival rate while tasks wait",
        ));
        m
    }
}

fn ecs_max(id: &str, metric: &str, role: Role) -> Value {
    metric_stat(
        id,
        "AWS/ECS",
        metric,
        vec![("ClusterName", r("Cluster")), ("ServiceName", ga(&service_id(role), "Name"))],
        "Maximum",
        None,
    )
}

/// `metric` of every service's busiest task, and their maximum as `busiest`.
fn per_service(metric: &str, label: &str) -> Vec<Value> {
    let mut m: Vec<Value> =
        Role::ALL.iter().enumerate().map(|(i, role)| ecs_max(&format!("m{}", i + 1), metric, *role)).collect();
    m.push(expression("busiest", "MAX([m1, m2, m3])", label));
    m
}

fn alb_sum(id: &str, metric: &str) -> Value {
    metric_stat(
        id,
        "AWS/ApplicationELB",
        metric,
        vec![("LoadBalancer", ga("LoadBalancer", "LoadBalancerFullName"))],
        "Sum",
        None,
    )
}

fn with(mut m: Vec<Value>, last: Value) -> Vec<Value> {
    m.push(last);
    m
}

/// The seed's alerts on capacity: CPU, memory, store connections.
fn capacity_alarms(f: &Fleet) -> Vec<Alarm> {
    let max_connections = f.plan.database.max_connections;
    let connections_threshold = (max_connections * 0.8).floor();
    vec![
        Alarm {
            name: "HighCPU",
            description: "Seed rule HighCPU (a process above 80% of its CPU limit for 10 minutes), on ECS: the busiest task of any service (AWS/ECS CPUUtilization, Maximum) above 80% of its task's CPU for 10 minutes. Add tasks or agent capacity.".into(),
            metrics: per_service("CPUUtilization", "busiest task's CPU utilization (%)"),
            comparison: "GreaterThanThreshold",
            threshold: 80.0,
            period: 60,
            evaluation_periods: 10,
        },
        Alarm {
            name: "HighMemory",
            description: "Seed rule HighMemory (a process above 85% of its memory limit for 5 minutes), on ECS: the task with the most memory in use (AWS/ECS MemoryUtilization, Maximum) above 85% of its task's memory for 5 minutes. The OOM killer is next: lower --max-agents or give the task more memory.".into(),
            metrics: per_service("MemoryUtilization", "fullest task's memory utilization (%)"),
            comparison: "GreaterThanThreshold",
            threshold: 85.0,
            period: 60,
            evaluation_periods: 5,
        },
        Alarm {
            name: "StoreConnectionsNearLimit",
            description: format!(
                "Seed rule StoreConnectionsNearLimit (store pools more than 80% busy for 5 minutes), on the database side: Aurora's connections (AWS/RDS DatabaseConnections) above 80% of the {max_connections:.0} the plan counts at max ACU for 5 minutes. Calls will queue for connections: raise max ACU, put RDS Proxy in front, or shrink the pools."
            ),
            metrics: vec![json!({
                "Id": "connections",
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/RDS", "MetricName": "DatabaseConnections", "Dimensions": [{"Name": "DBClusterIdentifier", "Value": r("DatabaseCluster")}]},
                    "Stat": "Maximum",
                },
                "ReturnData": true,
            })],
            comparison: "GreaterThanThreshold",
            threshold: connections_threshold,
            period: 60,
            evaluation_periods: 5,
        },
    ]
}

/// The seed's alerts on the flow of work: latency, utilization, queue, messages, dead letters,
/// throughput and errors.
fn flow_alarms(f: &Fleet, src: &Sources) -> Vec<Alarm> {
    // Little's law: ready messages over the planned peak rate is how long a message waits
    let ready_threshold = (f.plan.messaging.peak_per_s * 0.25).ceil().max(1.0);
    vec![
        Alarm {
            name: "TaskLatencyHigh",
            description: "Seed rule TaskLatencyHigh (p99 submit-to-start above 500 ms for 5 minutes). The dispatch latency histogram does not reach CloudWatch, so this reads the oldest runnable queued task's age (smith_queue_oldest_age_seconds, average per minute): above 500 ms for 5 minutes, tasks keep waiting longer than the target. Check Backlog and AgentUtilizationHigh.".into(),
            metrics: vec![returning(src.smith("age", "smith_queue_oldest_age_seconds", &src.sup, vec![], "Average"))],
            comparison: "GreaterThanThreshold",
            threshold: 0.5,
            period: 60,
            evaluation_periods: 5,
        },
        Alarm {
            name: "ModerateUtilization",
            description: "Seed rule ModerateUtilization: busy agent slots over all slots of every worker (smith_agent_slots by state) between 70% (the autoscaler's target) and 90% for 15 minutes. The fleet is not growing to the target: check the worker service's scaling and max tasks.".into(),
            metrics: with(
                src.slots(),
                expression(
                    "moderate",
                    "IF(busy / (busy + idle) > 0.7 AND busy / (busy + idle) <= 0.9, 1, 0)",
                    "busy share in (0.7, 0.9]",
                ),
            ),
            comparison: "GreaterThanOrEqualToThreshold",
            threshold: 1.0,
            period: 60,
            evaluation_periods: 15,
        },
        Alarm {
            name: "QueueDepthIncreasing",
            description: "Seed rule QueueDepthIncreasing: more than 100 tasks queued (smith_queue_depth) and the queue growing by more than 0.1 task/s for 10 minutes. Tasks arrive faster than agents finish them; add agent capacity before it becomes a Backlog.".into(),
            metrics: vec![
                src.smith("queue", "smith_queue_depth", &src.sup, vec![], "Average"),
                expression("growing", "IF(RATE(queue) > 0.1 AND queue > 100, 1, 0)", "queue over 100 and growing"),
            ],
            comparison: "GreaterThanOrEqualToThreshold",
            threshold: 1.0,
            period: 300,
            evaluation_periods: 2,
        },
        Alarm {
            name: "AgentUtilizationHigh",
            description: "Seed rule AgentUtilizationHigh: more than 90% of all agent slots busy (smith_agent_slots by state) for 5 minutes. The workers are at their ceiling and new tasks wait: raise the worker service's max tasks or --max-agents.".into(),
            metrics: with(src.slots(), expression("busyshare", "busy / (busy + idle)", "busy share of agent slots")),
            comparison: "GreaterThanThreshold",
            threshold: 0.9,
            period: 60,
            evaluation_periods: 5,
        },
        Alarm {
            name: "MessageLatencyHigh",
            description: format!(
                "Seed rule MessageLatencyHigh (p99 event delivery above 250 ms for 5 minutes). Event delivery latency is a gateway histogram CloudWatch does not get, so this reads the broker: more messages ready and undelivered (AWS/AmazonMQ MessageReadyCount) than 250 ms of the planned peak ({:.0} msg/s) for 5 minutes means consumers lag by more than that. Check the broker's CPU and memory and the gateways.",
                f.plan.messaging.peak_per_s
            ),
            metrics: vec![json!({
                "Id": "ready",
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/AmazonMQ", "MetricName": "MessageReadyCount", "Dimensions": [{"Name": "Broker", "Value": broker_name(f)}]},
                    "Stat": "Maximum",
                },
                "ReturnData": true,
            })],
            comparison: "GreaterThanThreshold",
            threshold: ready_threshold,
            period: 60,
            evaluation_periods: 5,
        },
        Alarm {
            name: "Backlog",
            description: "Seed rule Backlog: a runnable queued task has waited more than 60 s (smith_queue_oldest_age_seconds) for 5 minutes; the platform dispatches within 500 ms when it has capacity. The workers are at their ceiling or none is running: compare smith_scaling_desired_slots with smith_scaling_current_slots.".into(),
            metrics: vec![returning(src.smith("age", "smith_queue_oldest_age_seconds", &src.sup, vec![], "Maximum"))],
            comparison: "GreaterThanThreshold",
            threshold: 60.0,
            period: 60,
            evaluation_periods: 5,
        },
        Alarm {
            name: "DeadLetterSpike",
            description: "Seed rule DeadLetterSpike: more than 10 tasks failed for good on their last attempt in 5 minutes (smith_tasks_dead_lettered_total of the workers and of the supervisors' reaper), all agents together. Read the failed tasks' errors (GET /v1/tasks?status=failed).".into(),
            metrics: vec![
                src.smith("workers", "smith_tasks_dead_lettered_total", &src.wrk, vec![], "Sum"),
                src.smith("reaped", "smith_tasks_dead_lettered_total", &src.sup, vec![], "Sum"),
                expression("dead", "FILL(workers, 0) + FILL(reaped, 0)", "tasks dead-lettered in 5 minutes"),
            ],
            comparison: "GreaterThanThreshold",
            threshold: 10.0,
            period: 300,
            evaluation_periods: 1,
        },
        Alarm {
            name: "ThroughputDrop",
            description: "Seed rule ThroughputDrop (finishing under half the previous hour's rate while tasks wait). CloudWatch alarms cannot look an hour back, so this compares with the arrival rate: for 10 minutes tasks finish (smith_task_attempts_finished_total, final outcomes) at under half the rate they arrive (smith_scaling_arrival_rate, above 0.1/s) while tasks are queued. Look for dead or quarantined workers, open breakers, a slow store.".into(),
            metrics: src.throughput(),
            comparison: "GreaterThanOrEqualToThreshold",
            threshold: 1.0,
            period: 300,
            evaluation_periods: 2,
        },
        Alarm {
            name: "ErrorRateHigh",
            description: "Seed rule ErrorRateHigh: more than 1% of the requests to the gateways answered 5xx (the load balancer's HTTPCode_Target_5XX_Count and HTTPCode_ELB_5XX_Count over RequestCount) for 5 minutes, counted only above 0.2 requests/s. See the gateways' logs.".into(),
            metrics: vec![
                alb_sum("requests", "RequestCount"),
                alb_sum("target5xx", "HTTPCode_Target_5XX_Count"),
                alb_sum("elb5xx", "HTTPCode_ELB_5XX_Count"),
                expression(
                    "errors",
                    "IF(requests > 12 AND (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests > 0.01, 1, 0)",
                    "5xx share above 1% at more than 0.2 requests/s",
                ),
            ],
            comparison: "GreaterThanOrEqualToThreshold",
            threshold: 1.0,
            period: 60,
            evaluation_periods: 5,
        },
    ]
}

pub(super) fn alarms(f: &Fleet, res: &mut Map<String, Value>) {
    let src = Sources { sup: json!(f.job(Role::Supervisor)), wrk: json!(f.job(Role::Worker)) };
    let mut list = capacity_alarms(f);
    list.extend(flow_alarms(f, &src));
    debug_assert_eq!(list.iter().map(|a| a.name).collect::<Vec<_>>(), SEED_ALERTS);
    let actions = json!({"Fn::If": ["HasAlarmTopic", [r("AlarmTopicArn")], no_value()]});
    for a in list {
        let metrics: Vec<Value> = a
            .metrics
            .into_iter()
            .map(|mut m| {
                if m.get("MetricStat").is_some() {
                    m["MetricStat"]["Period"] = json!(a.period);
                }
                m
            })
            .collect();
        res.insert(
            format!("Alarm{}", a.name),
            resource(
                "AWS::CloudWatch::Alarm",
                json!({
                    "AlarmName": format!("{}-{}", f.name, a.name),
                    "AlarmDescription": a.description,
                    "ComparisonOperator": a.comparison,
                    "Threshold": a.threshold,
                    "EvaluationPeriods": a.evaluation_periods,
                    "DatapointsToAlarm": a.evaluation_periods,
                    "TreatMissingData": "notBreaching",
                    "Metrics": metrics,
                    "AlarmActions": actions.clone(),
                    "OKActions": actions.clone(),
                }),
            ),
        );
    }
}

fn returning(mut m: Value) -> Value {
    m["ReturnData"] = json!(true);
    m
}

/// A dashboard metric line: namespace, name, dimension pairs, then its options.
fn line(namespace: &str, metric: &str, dims: &[(&str, &str)], options: Value) -> Value {
    let mut v = vec![json!(namespace), json!(metric)];
    for (n, val) in dims {
        v.push(json!(n));
        v.push(json!(val));
    }
    if options.as_object().is_some_and(|o| !o.is_empty()) {
        v.push(options);
    }
    Value::Array(v)
}

fn math(id: &str, expression: &str, label: &str) -> Value {
    json!([{"id": id, "expression": expression, "label": label}])
}

/// A time-series widget of one-minute points, placed later.
fn graph(title: &str, metrics: Vec<Value>, stat: &str) -> Value {
    let props = json!({
        "title": title,
        "region": "${AWS::Region}",
        "view": "timeSeries",
        "stacked": false,
        "stat": stat,
        "period": 60,
        "metrics": metrics,
    });
    json!({"type": "metric", "properties": props})
}

/// A graph with horizontal lines at the alert thresholds and targets it is read against.
fn thresholds(mut graph: Value, lines: &[(&str, f64)]) -> Value {
    let h: Vec<Value> = lines.iter().map(|(label, value)| json!({"label": label, "value": value})).collect();
    graph["properties"]["annotations"] = json!({"horizontal": h});
    graph
}

/// Lays widgets out two to a row (full-width ones alone) and makes the dashboard resource.
fn dashboard(name: String, widgets: Vec<Value>) -> Value {
    let mut placed = Vec::new();
    let (mut x, mut y) = (0u64, 0u64);
    for mut w in widgets {
        let full = w["type"] != "metric";
        let (width, height) = if full { (24, if w["type"] == "text" { 3 } else { 4 }) } else { (12, 6) };
        if full && x != 0 {
            x = 0;
            y += 6;
        }
        w["x"] = json!(x);
        w["y"] = json!(y);
        w["width"] = json!(width);
        w["height"] = json!(height);
        placed.push(w);
        if full {
            y += height;
        } else if x == 0 {
            x = 12;
        } else {
            x = 0;
            y += height;
        }
    }
    resource(
        "AWS::CloudWatch::Dashboard",
        json!({"DashboardName": name, "DashboardBody": sub(text::json_compact(&json!({"widgets": placed})))}),
    )
}

pub(super) fn dashboards(f: &Fleet, res: &mut Map<String, Value>) {
    let l = Lines { sup: f.job(Role::Supervisor), wrk: f.job(Role::Worker), broker: broker_name(f) };
    let overview = overview(f, &l);
    let performance = performance(&l);
    let store_bus = store_bus(f, &l);
    res.insert("DashboardOverview".into(), dashboard(format!("{}-overview", f.name), overview));
    res.insert("DashboardPerformance".into(), dashboard(format!("{}-performance", f.name), performance));
    res.insert("DashboardStoreBus".into(), dashboard(format!("{}-store-bus", f.name), store_bus));
}

/// The metric lines the dashboards graph, by source: the platform's own (`job` dimension), ECS,
/// Container Insights, the load balancer, the database and the broker.
struct Lines {
    sup: String,
    wrk: String,
    broker: String,
}

const CLUSTER: &str = "${Cluster}";
const LOAD_BALANCER: &str = "${LoadBalancer.LoadBalancerFullName}";
const DB_CLUSTER: &str = "${DatabaseCluster}";

impl Lines {
    fn s(&self, m: &str, o: Value) -> Value {
        line(NAMESPACE, m, &[("job", &self.sup)], o)
    }

    fn w(&self, m: &str, dims: &[(&str, &str)], o: Value) -> Value {
        let mut all = vec![("job", self.wrk.as_str())];
        all.extend_from_slice(dims);
        line(NAMESPACE, m, &all, o)
    }

    fn ecs(&self, metric: &str, role: Role, o: Value) -> Value {
        line("AWS/ECS", metric, &[("ClusterName", CLUSTER), ("ServiceName", &service_name(role))], o)
    }

    fn insights(&self, metric: &str, role: Role, o: Value) -> Value {
        line("ECS/ContainerInsights", metric, &[("ClusterName", CLUSTER), ("ServiceName", &service_name(role))], o)
    }

    fn alb(&self, metric: &str, o: Value) -> Value {
        line("AWS/ApplicationELB", metric, &[("LoadBalancer", LOAD_BALANCER)], o)
    }

    fn rds(&self, metric: &str, o: Value) -> Value {
        line("AWS/RDS", metric, &[("DBClusterIdentifier", DB_CLUSTER)], o)
    }

    fn mq(&self, metric: &str, o: Value) -> Value {
        line("AWS/AmazonMQ", metric, &[("Broker", &self.broker)], o)
    }

    fn per_role(&self, metric: &str, stat: &str) -> Vec<Value> {
        Role::ALL.iter().map(|r| self.ecs(metric, *r, json!({"label": r.name(), "stat": stat}))).collect()
    }
}

/// A role's ECS service name, as a `Fn::Sub` reference.
fn service_name(role: Role) -> String {
    format!("${{{}.Name}}", service_id(role))
}

fn hidden(id: &str) -> Value {
    json!({"id": id, "visible": false})
}

fn label(l: &str) -> Value {
    json!({"label": l})
}

/// The overview dashboard: agent slots, queue, throughput and errors, with the seed's alerts.
fn overview(f: &Fleet, l: &Lines) -> Vec<Value> {
    let ns = NAMESPACE;
    let alarms: Vec<String> = SEED_ALERTS.iter().map(|a| format!("${{Alarm{a}.Arn}}")).collect();
    let overview = vec![
        json!({"type": "text", "properties": {"markdown": format!(
            "## {} — overview\nAgent slots, queue, throughput and errors. `smith_*` metrics come from the supervisors' and workers' `/metrics` through the CloudWatch agent (namespace `{ns}`, dimension `job`); the rest are AWS's. The Grafana dashboards in `deploy/grafana/` show the full set from Prometheus.",
            f.name
        )}}),
        json!({"type": "alarm", "properties": {"title": "The seed's twelve alerts", "alarms": alarms}}),
        graph(
            "Agent slots: desired, current, load",
            vec![
                l.s("smith_scaling_desired_slots", label("desired (autoscaler)")),
                l.s("smith_scaling_current_slots", label("current")),
                l.s("smith_scaling_load", label("load")),
            ],
            "Maximum",
        ),
        graph(
            "Worker tasks",
            vec![
                l.insights("DesiredTaskCount", Role::Worker, label("desired")),
                l.insights("RunningTaskCount", Role::Worker, label("running")),
                l.insights("PendingTaskCount", Role::Worker, label("pending")),
            ],
            "Maximum",
        ),
        thresholds(
            graph(
                "Busy share of agent slots",
                vec![
                    l.w("smith_agent_slots", &[("state", "busy")], hidden("busy")),
                    l.w("smith_agent_slots", &[("state", "idle")], hidden("idle")),
                    math("share", "busy / (busy + idle)", "busy / all slots"),
                ],
                "Sum",
            ),
            &[("target", 0.7), ("AgentUtilizationHigh", 0.9)],
        ),
        graph(
            "Queue",
            vec![
                l.s("smith_queue_depth", label("queued tasks")),
                l.s("smith_queue_oldest_age_seconds", json!({"label": "oldest queued (s)", "yAxis": "right"})),
            ],
            "Maximum",
        ),
        graph(
            "Attempts finished per minute, by outcome",
            ["succeeded", "failed", "cancelled", "timed_out", "budget_exceeded", "retrying", "released", "lost"]
                .iter()
                .map(|o| l.w("smith_task_attempts_finished_total", &[("outcome", o)], label(o)))
                .collect(),
            "Sum",
        ),
        graph(
            "Dispatched and dead-lettered per minute",
            vec![
                l.w("smith_tasks_dispatched_total", &[], label("dispatched")),
                l.w("smith_tasks_dead_lettered_total", &[], label("dead-lettered (workers)")),
                l.s("smith_tasks_dead_lettered_total", label("dead-lettered (reaped)")),
            ],
            "Sum",
        ),
        graph(
            "Gateway requests and errors per minute",
            vec![
                l.alb("RequestCount", label("requests")),
                l.alb("HTTPCode_Target_5XX_Count", label("5xx from gateways")),
                l.alb("HTTPCode_ELB_5XX_Count", label("5xx from the load balancer")),
            ],
            "Sum",
        ),
        graph(
            "Tasks per service",
            Role::ALL.iter().map(|r| l.insights("RunningTaskCount", *r, label(r.name()))).collect(),
            "Maximum",
        ),
    ];
    overview
}

/// The performance dashboard: latencies, the gateway's traffic and the services' CPU.
fn performance(l: &Lines) -> Vec<Value> {
    let performance = vec![
        thresholds(
            graph("CPU utilization, busiest task (%)", l.per_role("CPUUtilization", "Maximum"), "Maximum"),
            &[("HighCPU", 80.0)],
        ),
        thresholds(
            graph("Memory utilization, fullest task (%)", l.per_role("MemoryUtilization", "Maximum"), "Maximum"),
            &[("HighMemory", 85.0)],
        ),
        thresholds(
            graph(
                "Oldest queued task (s): the dispatch wait",
                vec![
                    l.s("smith_queue_oldest_age_seconds", json!({"label": "average", "stat": "Average"})),
                    l.s("smith_queue_oldest_age_seconds", json!({"label": "maximum", "stat": "Maximum"})),
                ],
                "Average",
            ),
            &[("500 ms target", 0.5)],
        ),
        graph(
            "Arrivals and autoscaler utilization",
            vec![
                l.s("smith_scaling_arrival_rate", label("tasks arriving per second")),
                l.s("smith_scaling_utilization", json!({"label": "load / current slots", "yAxis": "right"})),
            ],
            "Maximum",
        ),
        graph(
            "Gateway response time (s)",
            vec![
                l.alb("TargetResponseTime", json!({"label": "p50", "stat": "p50"})),
                l.alb("TargetResponseTime", json!({"label": "p99", "stat": "p99"})),
            ],
            "p99",
        ),
        graph(
            "Load balancer connections (SSE streams are long-lived)",
            vec![
                l.alb("ActiveConnectionCount", label("active")),
                l.alb("NewConnectionCount", label("new")),
                l.alb("RejectedConnectionCount", label("rejected")),
            ],
            "Sum",
        ),
        graph(
            "Healthy gateways",
            vec![line(
                "AWS/ApplicationELB",
                "HealthyHostCount",
                &[("TargetGroup", "${TargetGroup.TargetGroupFullName}"), ("LoadBalancer", LOAD_BALANCER)],
                label("healthy"),
            )],
            "Minimum",
        ),
        graph("Average CPU by service (%)", l.per_role("CPUUtilization", "Average"), "Average"),
    ];
    performance
}

/// The store and bus dashboard.
fn store_bus(f: &Fleet, l: &Lines) -> Vec<Value> {
    let mut store_bus = vec![
        thresholds(
            graph(
                "Aurora capacity (ACU)",
                vec![
                    l.rds("ServerlessDatabaseCapacity", label("ACU")),
                    l.rds("ACUUtilization", json!({"label": "% of max ACU", "yAxis": "right"})),
                ],
                "Maximum",
            ),
            &[("max ACU", f.plan.database.max_acu)],
        ),
        thresholds(
            graph("Aurora connections", vec![l.rds("DatabaseConnections", label("connections"))], "Maximum"),
            &[("plan's limit at max ACU", f.plan.database.max_connections)],
        ),
        graph(
            "Aurora latency (ms)",
            vec![
                l.rds("CommitLatency", label("commit")),
                l.rds("ReadLatency", label("read")),
                l.rds("WriteLatency", label("write")),
            ],
            "Average",
        ),
        graph(
            "Aurora CPU and memory",
            vec![
                l.rds("CPUUtilization", label("CPU (%)")),
                l.rds("FreeableMemory", json!({"label": "freeable memory", "yAxis": "right"})),
            ],
            "Maximum",
        ),
        graph(
            "Broker messages",
            vec![
                l.mq("MessageReadyCount", label("ready")),
                l.mq("MessageUnacknowledgedCount", label("unacknowledged")),
            ],
            "Maximum",
        ),
        graph(
            "Broker rates (messages/s)",
            vec![
                l.mq("PublishRate", label("published")),
                l.mq("AckRate", label("acknowledged")),
                l.mq("ConfirmRate", label("confirmed")),
            ],
            "Average",
        ),
        graph(
            "Broker connections and consumers",
            vec![
                l.mq("ConnectionCount", label("connections")),
                l.mq("ConsumerCount", label("consumers")),
                l.mq("QueueCount", label("queues")),
            ],
            "Maximum",
        ),
    ];
    if f.plan.database.proxy {
        let proxy = "${DatabaseProxy}";
        store_bus.push(graph(
            "RDS Proxy connections",
            vec![
                line("AWS/RDS", "ClientConnections", &[("ProxyName", proxy)], label("from the tasks")),
                line("AWS/RDS", "DatabaseConnections", &[("ProxyName", proxy)], label("to Aurora")),
            ],
            "Maximum",
        ));
    }
    store_bus
}
