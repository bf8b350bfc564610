//! The deployments `smith plan --emit` writes, through the binary, for each profile (seed model,
//! 10, 100 and 1,000 agents): the CloudFormation template passes cfn-lint with no finding and the
//! Kubernetes manifests pass kubernetes-validate (tools installed by .ci/run; required when
//! SMITH_TEST_POSTGRES_URL is set, as ops.rs requires promtool); their structure follows the plan
//! (`smith plan --format json`); the copies in deploy/aws/ and deploy/k8s/ are byte-identical to
//! what the binary writes now; bad input writes nothing; and, with PostgreSQL and NATS, the
//! roles started the way the manifests start them serve their probes and the autoscaler's bounds.
//!
//! Not schema-checked by any tool: the KEDA objects (kubernetes-validate has no schemas for
//! custom resources; the test asserts they are the only unchecked kinds and checks their fields
//! itself), the CloudWatch agent's configuration and the metric math expressions (the test checks
//! that every `smith_*` metric the alarms, dashboards and scaling policy read is one the binary
//! emits and one the agent's configuration sends). Nothing here deploys: there is no AWS account
//! or cluster.

use crate::common::{self, cluster::Database};
use smith_plan::emit::{cpu_quantity, memory_quantity};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

/// (profile, agents): the seed's three loads.
const PROFILES: [(&str, u64); 3] = [("dev", 10), ("staging", 100), ("prod", 1000)];
const NAME: &str = "mistersmith";
/// The Kubernetes versions the manifests are validated against: an old one still in support
/// on the large providers, and kubernetes-validate's newest.
const K8S_VERSIONS: [&str; 2] = ["1.29", "1.37"];

fn smith(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smith")).args(args).output().expect("run smith")
}

fn plan_json(profile: &str, agents: u64) -> Value {
    let n = agents.to_string();
    let out = smith(&["plan", "--agents", &n, "--profile", profile, "--model", "seed", "--format", "json"]);
    assert!(out.status.success(), "smith plan: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("plan JSON")
}

/// Runs `smith plan … --emit TARGET DIR` and returns the files written, by name.
/// The plan of `profile` at `agents`, and what `--emit target` writes for it (in `tmp/<profile>`).
fn planned(target: &str, profile: &str, agents: u64, tmp: &Path) -> (Value, BTreeMap<String, String>) {
    (plan_json(profile, agents), emit(target, profile, agents, &tmp.join(profile)))
}

fn emit(target: &str, profile: &str, agents: u64, dir: &Path) -> BTreeMap<String, String> {
    let n = agents.to_string();
    let d = dir.to_str().unwrap();
    let out = smith(&[
        "plan",
        "--agents",
        &n,
        "--profile",
        profile,
        "--model",
        "seed",
        "--format",
        "json",
        "--emit",
        target,
        d,
    ]);
    assert!(out.status.success(), "smith plan --emit {target}: {}", String::from_utf8_lossy(&out.stderr));
    // stdout stays the plan's JSON; the files written are listed on stderr
    let _: Value = serde_json::from_slice(&out.stdout).expect("stdout is the plan's JSON with --emit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let files = dir_files(dir);
    for name in files.keys() {
        assert!(stderr.contains(&format!("wrote {}", dir.join(name).display())), "{name} not listed: {stderr}");
    }
    files
}

fn dir_files(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for e in entries {
        let e = e.unwrap();
        files.insert(e.file_name().to_string_lossy().into_owned(), common::read(&e.path()));
    }
    files
}

fn run_tool(tool: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The seed's twelve alert names: group `smith` of deploy/prometheus/alerts.yml.
fn seed_alerts() -> BTreeSet<String> {
    let text = common::read(&common::repo("deploy/prometheus/alerts.yml"));
    let mut group = String::new();
    let mut alerts = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(g) = line.strip_prefix("- name:") {
            group = g.trim().to_string();
        } else if let Some(a) = line.strip_prefix("- alert:") {
            if group == "smith" {
                alerts.insert(a.trim().to_string());
            }
        }
    }
    assert_eq!(alerts.len(), 12, "group smith of alerts.yml: {alerts:?}");
    alerts
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn services<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["services"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()
}

/// Every value of `key` anywhere in `v`.
fn all_values<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                all_values(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| all_values(x, key, out)),
        _ => {}
    }
}

fn of_type<'a>(resources: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    resources.as_object().unwrap().iter().filter(|(_, r)| r["Type"] == kind).collect()
}

/// `^a_(b|c)$` → {a_b, a_c}: the CloudWatch agent's metric selectors, which use one group.
fn expand(selector: &str) -> Vec<String> {
    let s = selector.trim_start_matches('^').trim_end_matches('$');
    match (s.find('('), s.find(')')) {
        (Some(open), Some(close)) => {
            s[open + 1..close].split('|').map(|alt| format!("{}{alt}{}", &s[..open], &s[close + 1..])).collect()
        }
        _ => vec![s.to_string()],
    }
}

#[test]
fn cloudformation_templates_follow_the_plan_and_pass_cfn_lint() {
    let tmp = tempfile::tempdir().unwrap();
    let seeds = seed_alerts();
    let metrics_doc = common::read(&common::repo("docs/metrics.md"));
    let mut templates = Vec::new();
    for (profile, agents) in PROFILES {
        let (plan, files) = planned("cloudformation", profile, agents, tmp.path());
        let dir = tmp.path().join(profile);
        let file = format!("{NAME}.cfn.json");
        assert_eq!(files.keys().collect::<Vec<_>>(), [&file], "{profile}");
        let t: Value = serde_json::from_str(&files[&file]).expect("template JSON");
        let r = &t["Resources"];
        let ctx = format!("{profile} ({agents} agents)");
        let prod = profile == "prod";

        // Aurora Serverless v2 from the plan
        let db = &r["DatabaseCluster"]["Properties"];
        assert_eq!(db["Engine"], "aurora-postgresql", "{ctx}");
        assert_eq!(f(&db["ServerlessV2ScalingConfiguration"]["MinCapacity"]), f(&plan["database"]["min_acu"]), "{ctx}");
        assert_eq!(f(&db["ServerlessV2ScalingConfiguration"]["MaxCapacity"]), f(&plan["database"]["max_acu"]), "{ctx}");
        assert_eq!(db["StorageEncrypted"], true);
        assert_eq!(db["BackupRetentionPeriod"], 7);
        assert_eq!(db["DeletionProtection"], prod, "{ctx}");
        let instances = of_type(r, "AWS::RDS::DBInstance");
        assert_eq!(instances.len(), if prod { 2 } else { 1 }, "{ctx}: instances");
        assert!(instances.iter().all(|(_, i)| i["Properties"]["DBInstanceClass"] == "db.serverless"));
        let proxy = plan["database"]["proxy"].as_bool().unwrap();
        assert_eq!(of_type(r, "AWS::RDS::DBProxy").len(), usize::from(proxy), "{ctx}: RDS Proxy as planned");

        // the broker the plan picked, private
        let b = &r["Broker"]["Properties"];
        let pb = &plan["messaging"]["broker"];
        assert_eq!(b["EngineType"], "RABBITMQ");
        assert_eq!(b["HostInstanceType"], pb["instance_type"], "{ctx}");
        assert_eq!(b["DeploymentMode"], pb["deployment_mode"], "{ctx}");
        assert_eq!(b["PubliclyAccessible"], false);

        // services sized from the plan
        for role in ["supervisor", "worker", "gateway"] {
            let s = services(&plan, role);
            let id = format!("{}{}TaskDefinition", role[..1].to_uppercase(), &role[1..]);
            let td = &r[&id]["Properties"];
            assert_eq!(td["Cpu"], json!(((f(&s["vcpu"]) * 1024.0) as u64).to_string()), "{ctx}: {role} cpu");
            assert_eq!(td["Memory"], json!(((f(&s["memory_gb"]) * 1024.0) as u64).to_string()), "{ctx}: {role} memory");
            let smith = td["ContainerDefinitions"].as_array().unwrap().iter().find(|c| c["Name"] == "smith").unwrap();
            assert_eq!(smith["Command"][0], role);
            // credentials only through Secrets, never in the environment
            let env: Vec<&str> =
                smith["Environment"].as_array().unwrap().iter().map(|e| e["Name"].as_str().unwrap()).collect();
            assert!(!env.iter().any(|n| ["SMITH_STORE", "SMITH_BUS", "SMITH_TOKEN"].contains(n)), "{ctx}: {env:?}");
            let secrets: Vec<&str> =
                smith["Secrets"].as_array().unwrap().iter().map(|e| e["Name"].as_str().unwrap()).collect();
            assert!(secrets.contains(&"SMITH_STORE") && secrets.contains(&"SMITH_BUS"), "{ctx}: {role} {secrets:?}");
            assert!(smith["StopTimeout"].as_u64().unwrap() <= 120, "Fargate stops within 120 s");
        }
        let apt = plan["autoscaling"]["agents_per_task"].as_u64().unwrap();
        let worker_cmd = &r["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"][1]["Command"];
        let cmd: Vec<&str> = worker_cmd.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let at = cmd.iter().position(|a| *a == "--max-agents").expect("--max-agents");
        assert_eq!(cmd[at + 1], apt.to_string(), "{ctx}");
        assert_eq!(r["SupervisorService"]["Properties"]["DesiredCount"], services(&plan, "supervisor")["tasks"]);
        assert_eq!(r["GatewayService"]["Properties"]["DesiredCount"], services(&plan, "gateway")["tasks"]);

        // the worker service: an on-demand floor, the rest in the plan's Spot share
        let strategy = r["WorkerService"]["Properties"]["CapacityProviderStrategy"].as_array().unwrap();
        let weight = |p: &str| strategy.iter().find(|s| s["CapacityProvider"] == p).map_or(0.0, |s| f(&s["Weight"]));
        let share = weight("FARGATE_SPOT") / (weight("FARGATE") + weight("FARGATE_SPOT"));
        assert!((share - f(&plan["autoscaling"]["spot_share"])).abs() < 1e-9, "{ctx}: Spot share {share}");
        let base = strategy.iter().find(|s| s["CapacityProvider"] == "FARGATE").map_or(json!(0), |s| s["Base"].clone());
        assert_eq!(base, plan["autoscaling"]["worker_min_tasks"], "{ctx}: on-demand base");

        // autoscaling on desired_slots, between the plan's bounds
        let st = &r["WorkerScalableTarget"]["Properties"];
        assert_eq!(st["MinCapacity"], plan["autoscaling"]["worker_min_tasks"], "{ctx}");
        assert_eq!(st["MaxCapacity"], plan["autoscaling"]["worker_max_tasks"], "{ctx}");
        let tt = &r["WorkerSlotsPolicy"]["Properties"]["TargetTrackingScalingPolicyConfiguration"];
        assert_eq!(f(&tt["TargetValue"]), 1.0);
        let queries = tt["CustomizedMetricSpecification"]["Metrics"].as_array().unwrap();
        assert_eq!(queries.iter().filter(|q| q["ReturnData"] == true).count(), 1);
        let names: Vec<&str> =
            queries.iter().filter_map(|q| q["MetricStat"]["Metric"]["MetricName"].as_str()).collect();
        assert!(names.contains(&"smith_scaling_desired_slots"), "{ctx}: {names:?}");
        let expr = queries.iter().find(|q| q["ReturnData"] == true).unwrap()["Expression"].as_str().unwrap();
        assert!(expr.starts_with("desired / ") && expr.ends_with(&format!("* {apt})")), "{ctx}: {expr}");
        let min_zero = plan["autoscaling"]["worker_min_tasks"] == 0;
        assert_eq!(
            r.get("WorkerWakePolicy").is_some(),
            min_zero,
            "{ctx}: a wake-from-zero policy where the floor is 0"
        );

        // the seed's twelve alerts, each alarming on exactly one query
        let alarms = of_type(r, "AWS::CloudWatch::Alarm");
        let mut named = BTreeSet::new();
        for (id, a) in &alarms {
            let p = &a["Properties"];
            let name = p["AlarmName"].as_str().unwrap();
            let queries = p["Metrics"].as_array().unwrap_or_else(|| panic!("{id}: no Metrics"));
            assert_eq!(queries.iter().filter(|q| q["ReturnData"] == true).count(), 1, "{ctx}: {id} returns one query");
            let ids: BTreeSet<&str> = queries.iter().map(|q| q["Id"].as_str().unwrap()).collect();
            assert_eq!(ids.len(), queries.len(), "{ctx}: {id} query ids are unique");
            assert!(
                queries.iter().all(|q| q.get("MetricStat").is_none() || q["MetricStat"]["Period"].is_u64()),
                "{id}"
            );
            match name.strip_prefix(&format!("{NAME}-")) {
                Some(seed) if seeds.contains(seed) => assert!(named.insert(seed.to_string()), "{ctx}: {seed} twice"),
                _ => assert_eq!(name, format!("{NAME}-worker-wake"), "{ctx}: an alarm that is no seed alert"),
            }
        }
        assert_eq!(named, seeds, "{ctx}: one alarm per seed alert");

        // three dashboards, by purpose like deploy/grafana's
        let mut dashboards: Vec<&str> = of_type(r, "AWS::CloudWatch::Dashboard")
            .iter()
            .map(|(_, d)| d["Properties"]["DashboardName"].as_str().unwrap())
            .collect();
        dashboards.sort();
        assert_eq!(
            dashboards,
            [format!("{NAME}-overview"), format!("{NAME}-performance"), format!("{NAME}-store-bus")]
        );

        // every smith_* metric read is one the binary emits (docs/metrics.md) and one the agent sends
        check_scraped_metrics(&t, &metrics_doc, &ctx);

        // least privilege: the execution role reads exactly the three secrets the containers get
        let mut secret_refs = Vec::new();
        all_values(&r["ExecutionRole"]["Properties"]["Policies"], "Resource", &mut secret_refs);
        assert!(
            secret_refs.contains(&&json!([{"Ref": "StoreUrlSecret"}, {"Ref": "BusUrlSecret"}, {"Ref": "TokenSecret"}])),
            "{ctx}: {secret_refs:?}"
        );
        assert!(of_type(r, "AWS::IAM::Role")
            .iter()
            .all(|(_, role)| role["Properties"].get("ManagedPolicyArns").is_none()));

        // artifacts: a private bucket, written and read by the workers and gateways through
        // their task role (no static keys), which may touch the artifact prefix only
        let bucket = &r["ArtifactsBucket"];
        assert_eq!(bucket["Type"], "AWS::S3::Bucket", "{ctx}");
        assert_eq!(bucket["DeletionPolicy"], "Retain", "{ctx}");
        let block = &bucket["Properties"]["PublicAccessBlockConfiguration"];
        assert!(block.as_object().unwrap().values().all(|v| v == true), "{ctx}: {block}");
        let grants = &r["SmithTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"];
        assert_eq!(grants.as_array().unwrap().len(), 1, "{ctx}: {grants}");
        assert_eq!(grants[0]["Resource"], json!({"Fn::Sub": "${ArtifactsBucket.Arn}/artifacts/*"}), "{ctx}");
        for (role, stores) in [("Worker", true), ("Gateway", true), ("Supervisor", false)] {
            let def = &r[format!("{role}TaskDefinition")]["Properties"];
            let env = def["ContainerDefinitions"][1]["Environment"].as_array().unwrap();
            let url = env.iter().find(|e| e["Name"] == "SMITH_ARTIFACTS_URL");
            assert_eq!(url.is_some(), stores, "{ctx}: {role}");
            if stores {
                assert_eq!(
                    url.unwrap()["Value"],
                    json!({"Fn::Sub": "s3://${ArtifactsBucket}/artifacts?region=${AWS::Region}"}),
                    "{ctx}"
                );
                assert_eq!(def["TaskRoleArn"], json!({"Fn::GetAtt": ["SmithTaskRole", "Arn"]}), "{ctx}: {role}");
            }
        }

        // the gateway: SSE-friendly load balancer, health on a route the gateway serves
        let attrs = r["LoadBalancer"]["Properties"]["LoadBalancerAttributes"].as_array().unwrap();
        let idle =
            attrs.iter().find(|a| a["Key"] == "idle_timeout.timeout_seconds").unwrap()["Value"].as_str().unwrap();
        assert!(idle.parse::<u64>().unwrap() >= 300, "idle timeout {idle} must be far above the 15 s SSE keep-alive");
        let health = r["TargetGroup"]["Properties"]["HealthCheckPath"].as_str().unwrap();
        assert!(
            common::read(&common::repo("crates/gateway/src/routes.rs")).contains(&format!(".route(\"{health}\"")),
            "{health}"
        );
        for out in ["ApiUrl", "ClusterName", "StoreUrlSecretArn", "BusUrlSecretArn", "TokenSecretArn"] {
            assert!(t["Outputs"].get(out).is_some(), "{ctx}: output {out}");
        }
        // no credential in the template: every password is a dynamic reference to a generated secret
        for key in ["MasterUsername", "MasterUserPassword", "Username", "Password"] {
            let mut found = Vec::new();
            all_values(r, key, &mut found);
            for v in found {
                let text = v["Fn::Sub"].as_str().unwrap_or_else(|| panic!("{ctx}: {key} is {v}"));
                assert!(text.starts_with("{{resolve:secretsmanager:${") && text.ends_with("}}"), "{ctx}: {key} {text}");
            }
        }
        templates.push(dir.join(&file));
    }

    let Some(cfn_lint) = common::tool("SMITH_TEST_CFN_LINT", "cfn-lint", "venv") else { return };
    let mut args = vec!["--"];
    args.extend(templates.iter().map(|p| p.to_str().unwrap()));
    let (ok, text) = run_tool(&cfn_lint, &args);
    // no errors and no warnings: any finding fails
    assert!(ok && text.trim().is_empty(), "cfn-lint found problems:\n{text}");
}

/// Every `smith_*` metric an alarm, a dashboard or the scaling policy reads must be emitted by
/// the binary (documented in docs/metrics.md) and selected by the CloudWatch agent's
/// configuration for the same job and dimensions, or it never reaches CloudWatch.
fn check_scraped_metrics(t: &Value, metrics_doc: &str, ctx: &str) {
    let r = &t["Resources"];
    let env = r["CollectorTaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"].as_array().unwrap();
    let cw = env.iter().find(|e| e["Name"] == "CW_CONFIG_CONTENT").unwrap()["Value"]["Fn::Sub"].as_str().unwrap();
    let cw: Value = serde_json::from_str(&cw.replace("${AWS::Region}", "us-east-1")).expect("agent config JSON");
    let emf = &cw["logs"]["metrics_collected"]["prometheus"]["emf_processor"];
    assert_eq!(emf["metric_namespace"], "MisterSmith");
    // (job, dimension names, metric) the agent sends
    let mut sent = BTreeSet::new();
    for d in emf["metric_declaration"].as_array().unwrap() {
        let job = d["label_matcher"].as_str().unwrap().trim_start_matches('^').trim_end_matches('$').to_string();
        for dims in d["dimensions"].as_array().unwrap() {
            let dims: Vec<String> = dims.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
            for sel in d["metric_selectors"].as_array().unwrap() {
                for metric in expand(sel.as_str().unwrap()) {
                    sent.insert((job.clone(), dims.clone(), metric));
                }
            }
        }
    }
    // read by alarms and the scaling policy: MetricStat.Metric in the namespace
    let mut read_metrics = Vec::new();
    let mut metrics = Vec::new();
    all_values(r, "Metric", &mut metrics);
    for m in metrics.into_iter().filter(|m| m["Namespace"] == "MisterSmith") {
        let dims = m["Dimensions"].as_array().unwrap();
        let job = dims.iter().find(|d| d["Name"] == "job").unwrap()["Value"].as_str().unwrap().to_string();
        let names: Vec<String> = dims.iter().map(|d| d["Name"].as_str().unwrap().to_string()).collect();
        read_metrics.push((job, names, m["MetricName"].as_str().unwrap().to_string()));
    }
    // read by the dashboards: ["MisterSmith", name, "job", JOB, dim, value, …, {options}]
    for (_, d) in of_type(r, "AWS::CloudWatch::Dashboard") {
        let body = d["Properties"]["DashboardBody"]["Fn::Sub"].as_str().unwrap();
        let body: Value = serde_json::from_str(body).expect("dashboard body JSON");
        assert!(!body["widgets"].as_array().unwrap().is_empty());
        let mut lists = Vec::new();
        all_values(&body, "metrics", &mut lists);
        for line in lists.iter().flat_map(|l| l.as_array().unwrap()) {
            let a = line.as_array().unwrap();
            if a.first() != Some(&json!("MisterSmith")) {
                continue;
            }
            let pairs: Vec<&str> = a[2..].iter().filter_map(|x| x.as_str()).collect();
            let names: Vec<String> = pairs.chunks(2).map(|c| c[0].to_string()).collect();
            let job = pairs.chunks(2).find(|c| c[0] == "job").unwrap()[1].to_string();
            read_metrics.push((job, names, a[1].as_str().unwrap().to_string()));
        }
    }
    assert!(read_metrics.len() > 10, "{ctx}: {read_metrics:?}");
    for (job, dims, metric) in read_metrics {
        assert!(metrics_doc.contains(&format!("`{metric}`")), "{ctx}: {metric} is not in docs/metrics.md");
        assert!(
            sent.contains(&(job.clone(), dims.clone(), metric.clone())),
            "{ctx}: {metric} {{job={job}, dimensions {dims:?}}} is read but the CloudWatch agent does not send it"
        );
    }
}

#[test]
fn kubernetes_manifests_follow_the_plan_and_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let mut all_files = Vec::new();
    for (profile, agents) in PROFILES {
        let (plan, files) = planned("k8s", profile, agents, tmp.path());
        let dir = tmp.path().join(profile);
        let ctx = format!("{profile} ({agents} agents)");
        let mut objects: BTreeMap<(String, String), Value> = BTreeMap::new();
        for (file, text) in &files {
            for doc in yaml::documents(text) {
                let key =
                    (doc["kind"].as_str().unwrap().to_string(), doc["metadata"]["name"].as_str().unwrap().to_string());
                if doc["kind"] != "Namespace" {
                    assert_eq!(doc["metadata"]["namespace"], NAME, "{ctx}: {key:?}");
                }
                assert!(objects.insert(key.clone(), doc).is_none(), "{ctx}: {key:?} twice ({file})");
            }
            all_files.push(dir.join(file));
        }
        let get = |kind: &str, name: &str| {
            objects.get(&(kind.to_string(), name.to_string())).unwrap_or_else(|| panic!("{ctx}: no {kind} {name}"))
        };
        // the operator's Secret is not shipped; everything reads its documented keys
        assert!(!objects.keys().any(|(k, _)| k == "Secret"), "{ctx}: credentials shipped");
        let mut refs = Vec::new();
        for o in objects.values() {
            all_values(o, "secretKeyRef", &mut refs);
        }
        assert!(!refs.is_empty());
        for r in &refs {
            assert_eq!(r["name"], format!("{NAME}-secrets"), "{ctx}");
            assert!(["store-url", "bus-url", "token"].contains(&r["key"].as_str().unwrap()), "{ctx}: {r}");
        }
        assert!(files["00-namespace.yaml"].contains("store-url") && files["00-namespace.yaml"].contains("bus-url"));

        let apt = plan["autoscaling"]["agents_per_task"].as_u64().unwrap();
        for role in ["supervisor", "worker", "gateway"] {
            let d = get("Deployment", &format!("{NAME}-{role}"));
            let s = services(&plan, role);
            let spec = &d["spec"]["template"]["spec"];
            let c = &spec["containers"][0];
            assert_eq!(c["args"][0], role);
            assert_eq!(c["resources"]["requests"]["cpu"], cpu_quantity(f(&s["vcpu"])), "{ctx}: {role}");
            assert_eq!(c["resources"]["requests"]["memory"], memory_quantity(f(&s["memory_gb"])), "{ctx}: {role}");
            assert_eq!(c["resources"]["limits"], c["resources"]["requests"], "{ctx}: {role}");
            assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
            // probes on the routes the process serves
            let routes = common::read(&common::repo("crates/gateway/src/routes.rs"))
                + &common::read(&common::repo("crates/gateway/src/lib.rs"));
            for probe in ["readinessProbe", "livenessProbe"] {
                let path = c[probe]["httpGet"]["path"].as_str().unwrap();
                assert!(routes.contains(&format!(".route(\"{path}\"")), "{ctx}: {role} {probe} {path}");
            }
            if role == "worker" {
                assert!(d["spec"].get("replicas").is_none(), "KEDA owns the worker count");
                let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
                let at = args.iter().position(|a| *a == "--max-agents").unwrap();
                assert_eq!(args[at + 1], apt.to_string(), "{ctx}");
                // covers the worker's 110 s drain
                assert!(spec["terminationGracePeriodSeconds"].as_u64().unwrap() >= 120, "{ctx}");
            } else {
                assert_eq!(d["spec"]["replicas"], s["tasks"], "{ctx}: {role} replicas");
            }
            assert!(objects.contains_key(&("PodDisruptionBudget".to_string(), format!("{NAME}-{role}"))));
        }
        let gw = get("Service", &format!("{NAME}-gateway"));
        assert_eq!(gw["spec"]["ports"][0]["port"], 80);
        assert_eq!(gw["spec"]["ports"][0]["targetPort"], "http");

        // KEDA: not schema-checked by kubernetes-validate, so every field that matters is checked here
        let so = get("ScaledObject", &format!("{NAME}-worker"));
        assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
        assert_eq!(
            so["spec"]["scaleTargetRef"],
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": format!("{NAME}-worker")})
        );
        assert_eq!(so["spec"]["minReplicaCount"], plan["autoscaling"]["worker_min_tasks"], "{ctx}");
        assert_eq!(so["spec"]["maxReplicaCount"], plan["autoscaling"]["worker_max_tasks"], "{ctx}");
        let triggers = so["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1);
        let t = &triggers[0];
        assert_eq!(t["type"], "metrics-api");
        assert_eq!(t["metricType"], "AverageValue");
        assert_eq!(t["metadata"]["valueLocation"], "desired_slots");
        assert_eq!(t["metadata"]["format"], "json");
        assert_eq!(
            t["metadata"]["targetValue"],
            apt.to_string(),
            "{ctx}: replicas = desired_slots / agents per worker"
        );
        assert_eq!(t["metadata"]["url"], format!("http://{NAME}-gateway.{NAME}.svc/v1/scaling"));
        assert_eq!(t["metadata"]["authMode"], "bearer");
        let auth = get("TriggerAuthentication", t["authenticationRef"]["name"].as_str().unwrap());
        assert_eq!(
            auth["spec"]["secretTargetRef"],
            json!([{"parameter": "token", "name": format!("{NAME}-secrets"), "key": "token"}])
        );
        // the supervisor's autoscaler is bounded by the same fleet
        let config = get("ConfigMap", &format!("{NAME}-config"));
        let sup: toml::Value = toml::from_str(config["data"]["supervisor.toml"].as_str().unwrap()).unwrap();
        let max = plan["autoscaling"]["worker_max_tasks"].as_u64().unwrap() * apt;
        assert_eq!(sup["scaling"]["max_agents"].as_integer(), Some(max as i64), "{ctx}");
        for role in ["supervisor", "worker", "gateway"] {
            let t: toml::Value = toml::from_str(config["data"][format!("{role}.toml")].as_str().unwrap()).unwrap();
            assert_eq!(
                t["store"]["pool_size"].as_integer(),
                services(&plan, role)["pool_size"].as_i64(),
                "{ctx}: {role}"
            );
        }
    }

    let Some(validate) = common::tool("SMITH_TEST_K8S_VALIDATE", "kubernetes-validate", "venv") else { return };
    for version in K8S_VERSIONS {
        let mut args = vec!["--strict", "-k", version];
        args.extend(all_files.iter().map(|p| p.to_str().unwrap()));
        let (ok, text) = run_tool(&validate, &args);
        assert!(ok, "kubernetes-validate {version} failed:\n{text}");
        // kubernetes-validate has schemas for Kubernetes' own kinds only: it warns for the KEDA
        // custom resources (checked above) and must check everything else
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let keda = line.starts_with("WARN")
                && line.contains("Couldn't find schema for kind")
                && line.contains("api version keda.sh/v1alpha1")
                && (line.contains("kind ScaledObject ") || line.contains("kind TriggerAuthentication "));
            assert!(
                line.starts_with("INFO") && line.contains(" passed ") || keda,
                "kubernetes-validate {version}: {line}"
            );
        }
        assert_eq!(text.matches(" passed for resource ").count(), 11 * PROFILES.len(), "{text}");
    }
}

#[test]
fn checked_in_copies_are_what_smith_plan_writes() {
    let tmp = tempfile::tempdir().unwrap();
    for (profile, agents) in PROFILES {
        for (target, folder) in [("cloudformation", "aws"), ("k8s", "k8s")] {
            let dir = tmp.path().join(format!("{folder}-{profile}"));
            let fresh = emit(target, profile, agents, &dir);
            let copy_dir = common::repo(&format!("deploy/{folder}/{profile}"));
            let copy = dir_files(&copy_dir);
            let regenerate = format!(
                "deploy/{folder}/{profile} differs from what smith writes now; regenerate it:\n  rm -rf deploy/{folder}/{profile} && cargo run --release -p smith -- plan --agents {agents} --profile {profile} --model seed --emit {target} deploy/{folder}/{profile}"
            );
            assert_eq!(copy.keys().collect::<Vec<_>>(), fresh.keys().collect::<Vec<_>>(), "{regenerate}");
            for (file, text) in &fresh {
                assert!(copy[file] == *text, "{file}: {regenerate}");
            }
        }
    }
}

#[test]
fn bad_emit_input_is_refused_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "a".repeat(41);
    for (args, needles) in [
        (vec!["--emit", "nonsense", "out"], vec!["nonsense", "cloudformation", "k8s"]),
        (vec!["--emit", "k8s", "out", "--name", "Bad_Name"], vec!["Bad_Name", "DNS-1123"]),
        (vec!["--emit", "cloudformation", "out", "--name=-smith"], vec!["-smith", "DNS-1123"]),
        (vec!["--emit", "cfn", "out", "--name", &long], vec!["at most 40"]),
        (vec!["--emit", "k8s", "out", "--image", "bad image"], vec!["bad image"]),
        (vec!["--emit", "k8s"], vec!["--emit <TARGET> <DIR>"]),
        (vec!["--name", "smith"], vec!["--emit"]),
    ] {
        let out_dir = tmp.path().join("out");
        let mut all = vec!["plan", "--agents", "10", "--model", "seed"];
        all.extend(args.iter().map(|a| if *a == "out" { out_dir.to_str().unwrap() } else { a }));
        let out = smith(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: {n:?} not in {stderr}");
        }
        assert!(!out_dir.exists(), "{args:?} wrote {}", out_dir.display());
        assert!(out.stdout.is_empty(), "{args:?} printed a plan");
    }
}

/// Variables that would change how a role under test behaves (the tests' own environment).
const SMITH_ENV: [&str; 12] = [
    "SMITH_LISTEN",
    "SMITH_DATA_DIR",
    "SMITH_CONFIG",
    "SMITH_TOKEN",
    "SMITH_SERVER",
    "SMITH_MAX_AGENTS",
    "SMITH_MIN_AGENTS",
    "SMITH_DRAIN_TIMEOUT",
    "SMITH_METRICS_LISTEN",
    "SMITH_STORE",
    "SMITH_BUS",
    "SMITH_LOG",
];

/// Polls `check` every 100 ms until it gives a value or `secs` pass.
async fn within<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what} within {secs} s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The Kubernetes manifests' commands, run: each role starts with its Deployment's args (listen
/// addresses moved to free loopback ports, the data dir to a temp dir), its env (the Secret's
/// keys filled in) and its ConfigMap key as `smith.toml`; serves its probes' paths on its probe
/// port; the autoscaler reports the plan's bounds on `/v1/scaling` (what KEDA reads); and the
/// worker drains and exits cleanly on SIGTERM. Needs PostgreSQL and NATS
/// (SMITH_TEST_POSTGRES_URL, SMITH_TEST_NATS_URL), like the distributed tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_commands_run() {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(pg), Some(nats)) = (get("SMITH_TEST_POSTGRES_URL"), get("SMITH_TEST_NATS_URL")) else {
        println!("skipped: SMITH_TEST_POSTGRES_URL / SMITH_TEST_NATS_URL not set");
        return;
    };
    let (profile, agents) = PROFILES[1];
    let plan = plan_json(profile, agents);
    let tmp = tempfile::tempdir().unwrap();
    let files = emit("k8s", profile, agents, &tmp.path().join("k8s"));
    let objects: Vec<Value> = files.values().flat_map(|t| yaml::documents(t)).collect();
    let find = |kind: &str, name: &str| {
        objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap().clone()
    };
    let config = find("ConfigMap", &format!("{NAME}-config"));
    let db = Database::create(&pg).await;
    let token = "deploy-test-token";
    let secrets = BTreeMap::from([
        ("store-url", db.url.clone()),
        ("bus-url", format!("{nats}?namespace=deploy{:x}", fastrand::u64(..))),
        ("token", token.to_string()),
    ]);
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().unwrap();
    let mut procs = Vec::new();
    for role in ["supervisor", "worker", "gateway"] {
        let dir = tmp.path().join(role);
        std::fs::create_dir_all(&dir).unwrap();
        let pod = find("Deployment", &format!("{NAME}-{role}"))["spec"]["template"]["spec"].clone();
        let c = &pod["containers"][0];
        let mut args: Vec<String> =
            c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        for i in 1..args.len() {
            match args[i - 1].as_str() {
                "--metrics-listen" | "--listen" => args[i] = "127.0.0.1:0".into(),
                "--data-dir" => args[i] = dir.join("data").display().to_string(),
                _ => {}
            }
        }
        let toml_path = dir.join("smith.toml");
        std::fs::write(&toml_path, config["data"][format!("{role}.toml")].as_str().unwrap()).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_smith"));
        cmd.args(&args).current_dir(&dir).kill_on_drop(true).stdin(std::process::Stdio::null());
        for k in SMITH_ENV {
            cmd.env_remove(k);
        }
        for e in c["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            let value = match (name, e["value"].as_str()) {
                ("SMITH_CONFIG", _) => toml_path.display().to_string(),
                ("HOME", _) => dir.display().to_string(),
                (_, Some(v)) => v.to_string(),
                (_, None) => secrets[e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap()].clone(),
            };
            cmd.env(name, value);
        }
        cmd.stdout(std::fs::File::create(dir.join("stdout")).unwrap());
        cmd.stderr(std::fs::File::create(dir.join("stderr")).unwrap());
        let child = cmd.spawn().expect("spawn smith");
        let log = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let addr = within(60, &format!("{role} serving"), || {
            let (text, prefix) = if role == "gateway" {
                (log("stdout"), "smith listening on http://")
            } else {
                (log("stderr"), "serving /metrics addr=")
            };
            let line = text.lines().find(|l| l.contains(prefix))?;
            Some(line[line.find(prefix).unwrap() + prefix.len()..].trim().to_string())
        })
        .await;
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let path = c[probe]["httpGet"]["path"].as_str().unwrap();
            let url = format!("http://{addr}{path}");
            let status = http.get(&url).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            assert_eq!(status, 200, "{role} {probe} {url}\n{}", log("stderr"));
        }
        procs.push((role, child, dir));
    }
    // what KEDA reads, bounded by the plan's fleet
    let gateway = {
        let text = std::fs::read_to_string(tmp.path().join("gateway/stdout")).unwrap();
        text.lines().find_map(|l| l.strip_prefix("smith listening on ")).unwrap().trim().to_string()
    };
    let apt = plan["autoscaling"]["agents_per_task"].as_u64().unwrap();
    let mut scaling = Value::Null;
    for _ in 0..150 {
        let r = http.get(format!("{gateway}/v1/scaling")).bearer_auth(token).send().await;
        if let Some(r) = r.ok().filter(|r| r.status().is_success()) {
            scaling = r.json().await.unwrap();
            if scaling["workers"].as_u64() >= Some(1) {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        scaling["max_agents"].as_u64(),
        Some(plan["autoscaling"]["worker_max_tasks"].as_u64().unwrap() * apt),
        "{scaling}"
    );
    assert_eq!(scaling["min_agents"].as_u64(), Some(plan["autoscaling"]["worker_min_tasks"].as_u64().unwrap() * apt));
    assert!(scaling["desired_slots"].is_u64(), "{scaling}");
    assert_eq!(scaling["workers"], 1, "{scaling}");
    // a worker drains and exits on SIGTERM, well inside its grace period
    let grace = find("Deployment", &format!("{NAME}-worker"))["spec"]["template"]["spec"]
        ["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    for (role, mut child, dir) in procs.into_iter().rev() {
        let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(std::time::Duration::from_secs(grace), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{role} did not stop within {grace} s"))
            .unwrap();
        let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
        assert!(status.success(), "{role} exited {status}\n{stderr}");
        if role == "worker" {
            assert!(stderr.contains("drained"), "{stderr}");
        }
    }
    drop(db);
}

/// Enough YAML to read what `smith plan --emit k8s` writes: block maps and sequences, plain and
/// double-quoted scalars, `{}`/`[]`, literal blocks (`|`, `|-`, `|+`), `---` between documents
/// and `#` comment lines at the left margin. Anything else is a test failure, not a guess.
mod yaml {
    use serde_json::{Map, Value};

    pub fn documents(text: &str) -> Vec<Value> {
        let mut docs = Vec::new();
        let mut current: Vec<String> = Vec::new();
        for line in text.lines() {
            if line == "---" {
                docs.push(parse(std::mem::take(&mut current)));
            } else if !line.starts_with('#') {
                current.push(line.to_string());
            }
        }
        docs.push(parse(current));
        docs
    }

    fn parse(mut lines: Vec<String>) -> Value {
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        let mut i = 0;
        let v = node(&mut lines, &mut i, 0);
        assert_eq!(i, lines.len(), "unparsed YAML from line {i}: {:?}", lines.get(i));
        v
    }

    fn indent(l: &str) -> usize {
        l.len() - l.trim_start_matches(' ').len()
    }

    fn node(lines: &mut [String], i: &mut usize, at: usize) -> Value {
        if lines[*i][at..].starts_with('-') {
            seq(lines, i, at)
        } else {
            map(lines, i, at)
        }
    }

    fn seq(lines: &mut [String], i: &mut usize, at: usize) -> Value {
        let mut items = Vec::new();
        while *i < lines.len() && indent(&lines[*i]) == at && lines[*i][at..].starts_with('-') {
            let rest = lines[*i][at + 1..].to_string();
            if rest.is_empty() {
                *i += 1;
                items.push(node(lines, i, at + 2));
            } else if rest.starts_with(' ') && is_entry(&rest[1..]) {
                // `- key: value`: the item is a map starting on this line, two columns in
                lines[*i].replace_range(at..at + 1, " ");
                items.push(map(lines, i, at + 2));
            } else {
                items.push(scalar(rest.trim()));
                *i += 1;
            }
        }
        Value::Array(items)
    }

    fn is_entry(s: &str) -> bool {
        key_split(s).is_some()
    }

    /// `key: rest` or `key:` → (key, rest).
    fn key_split(s: &str) -> Option<(String, String)> {
        if let Some(stripped) = s.strip_prefix('"') {
            let end = stripped.find("\":")? + 1;
            let key: String = serde_json::from_str(&s[..=end]).ok()?;
            return Some((key, s[end + 2..].trim().to_string()));
        }
        if let Some(p) = s.find(": ") {
            return Some((s[..p].to_string(), s[p + 2..].to_string()));
        }
        s.strip_suffix(':').map(|k| (k.to_string(), String::new()))
    }

    fn map(lines: &mut [String], i: &mut usize, at: usize) -> Value {
        let mut m = Map::new();
        while *i < lines.len() && indent(&lines[*i]) == at && !lines[*i][at..].starts_with('-') {
            let (key, rest) = key_split(&lines[*i][at..]).unwrap_or_else(|| panic!("not a map entry: {:?}", lines[*i]));
            *i += 1;
            let value = if rest.is_empty() {
                let inner = indent(&lines[*i]);
                assert!(inner > at, "{key}: no value");
                node(lines, i, inner)
            } else if rest.starts_with('|') {
                block(lines, i, at + 2, &rest)
            } else {
                scalar(&rest)
            };
            assert!(m.insert(key.clone(), value).is_none(), "{key} twice");
        }
        Value::Object(m)
    }

    fn block(lines: &mut [String], i: &mut usize, at: usize, header: &str) -> Value {
        let mut body = Vec::new();
        while *i < lines.len() && (lines[*i].is_empty() || indent(&lines[*i]) >= at) {
            body.push(if lines[*i].is_empty() { "" } else { &lines[*i][at..] }.to_string());
            *i += 1;
        }
        let trailing = body.iter().rev().take_while(|l| l.is_empty()).count();
        let content = body[..body.len() - trailing].join("\n");
        let text = match header {
            "|" => content + "\n",
            "|-" => content,
            "|+" => content + &"\n".repeat(trailing + 1),
            other => panic!("block header {other:?}"),
        };
        Value::String(text)
    }

    fn scalar(s: &str) -> Value {
        match s {
            "{}" => Value::Object(Map::new()),
            "[]" => Value::Array(Vec::new()),
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ if s.starts_with('"') => serde_json::from_str(s).unwrap_or_else(|e| panic!("{s}: {e}")),
            _ => serde_json::from_str::<serde_json::Number>(s).map(Value::Number).unwrap_or_else(|_| {
                assert!(
                    !s.starts_with(['\'', '{', '[', '&', '*', '!', '|', '>', '%', '@', '`']),
                    "unsupported scalar {s}"
                );
                Value::String(s.to_string())
            }),
        }
    }
}
