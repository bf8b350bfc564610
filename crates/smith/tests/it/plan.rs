//! `smith plan` through the binary: golden figures for the seed model at 10, 100 and 1,000
//! agents (every expected number written out here, worked by hand from the seed's inputs and
//! deploy/prices/us-east-1.toml), the measured model from a baseline file, and bad input.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn smith(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_smith")).args(args).output().expect("run smith")
}

fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&plan_text(&all)).expect("plan JSON")
}

/// `smith plan ARGS` as printed (a table unless ARGS name another format).
fn plan_text(args: &[&str]) -> String {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    let out = smith(&all);
    assert!(out.status.success(), "smith {all:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn assert_contains(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "output lacks {needle:?}:\n{text}");
    }
}

fn num(v: &Value, path: &str) -> f64 {
    let mut at = v;
    for key in path.split('.') {
        at = match key.parse::<usize>() {
            Ok(i) => &at[i],
            Err(_) => &at[key],
        };
    }
    at.as_f64().unwrap_or_else(|| panic!("{path} is not a number: {at}"))
}

/// Asserts each (path, expected) to a thousandth.
fn figures(plan: &Value, expected: &[(&str, f64)]) {
    for (path, want) in expected {
        let got = num(plan, path);
        assert!((got - want).abs() < 1e-3, "{path}: expected {want}, got {got}");
    }
}

/// The monthly amount of the cost line with this key, from lines, optimizations or alternatives.
fn cost(plan: &Value, key: &str) -> f64 {
    for list in ["lines", "optimizations", "alternatives"] {
        if let Some(l) = plan["costs"][list].as_array().unwrap().iter().find(|l| l["key"] == key) {
            return l["monthly"].as_f64().unwrap();
        }
    }
    panic!("no cost line {key}")
}

fn costs(plan: &Value, expected: &[(&str, f64)]) {
    for (key, want) in expected {
        let got = cost(plan, key);
        assert!((got - want).abs() < 0.005, "{key}: expected ${want}, got ${got}");
    }
    let keys: Vec<&str> =
        plan["costs"]["lines"].as_array().unwrap().iter().map(|l| l["key"].as_str().unwrap()).collect();
    let want: Vec<&str> =
        expected.iter().map(|(k, _)| *k).filter(|k| !k.starts_with("optimize.") && !k.starts_with("alt.")).collect();
    assert_eq!(keys, want, "the bill's lines");
}

#[test]
fn seed_model_at_1000_agents_reproduces_the_seed() {
    let p = plan_json(&["--agents", "1000"]);
    assert_eq!(p["profile"], "prod", "1,000 agents is the seed's production load");
    assert_eq!(p["model"], "seed");
    figures(
        &p,
        &[
            // ECS: 1,000 workers of 0.5 vCPU / 1 GB, a 2 vCPU / 4 GB supervisor and gateway.
            ("services.0.vcpu", 2.0),
            ("services.0.memory_gb", 4.0),
            ("services.0.tasks", 1.0),
            ("services.1.vcpu", 0.5),
            ("services.1.memory_gb", 1.0),
            ("services.1.tasks", 1000.0),
            ("services.1.agents_per_task", 1.0),
            ("services.2.tasks", 1.0),
            ("totals.vcpu", 504.0),
            ("totals.memory_gb", 1008.0),
            ("totals.tasks", 1002.0),
            // Messages: 40.5 per agent-minute.
            ("messaging.per_agent_minute", 40.5),
            ("messaging.normal_per_s", 675.0),
            ("messaging.peak_per_s", 3375.0),
            ("messaging.normal_mb_s", 9.3333),
            ("messaging.peak_mb_s", 46.6667),
            ("messaging.per_day", 58_320_000.0),
            ("messaging.per_month", 1_749_600_000.0),
            ("messaging.kinds.0.normal_per_s", 83.3333),
            ("messaging.kinds.1.normal_per_s", 41.6667),
            ("messaging.kinds.2.normal_per_s", 416.6667),
            ("messaging.kinds.2.normal_kb_s", 8333.3333),
            ("messaging.kinds.3.normal_per_s", 33.3333),
            ("messaging.kinds.4.normal_per_s", 100.0),
            // Aurora: 2–32 ACU, 30 connections per ACU.
            ("database.min_acu", 2.0),
            ("database.max_acu", 32.0),
            ("database.avg_acu", 12.0),
            ("database.max_connections", 960.0),
            ("database.connections_needed", 30_060.0),
            ("database.iops.average", 2500.0),
            ("database.iops.peak", 12_500.0),
            ("database.storage_gb", 500.0),
            ("database.storage_growth_gb_month", 407.4),
            ("database.storage_after_12_months_gb", 4898.8),
            ("autoscaling.worker_min_tasks", 1.0),
            ("autoscaling.worker_max_tasks", 1000.0),
        ],
    );
    assert_eq!(p["database"]["proxy"], true);
    assert_eq!(p["messaging"]["broker"]["instance_type"], "mq.m5.2xlarge");
    costs(
        &p,
        &[
            // (2 × $0.04048 + 4 × $0.004445) × 730 h
            ("fargate.supervisor", 72.08),
            // 1,000 × (0.5 × $0.04048 + 1 × $0.004445) × 730 h
            ("fargate.worker", 18_020.05),
            ("fargate.gateway", 72.08),
            // ($0.0225 + 30 LCU × $0.008) × 730 h: 8.33 MB/s of task events is 30 GB an hour
            ("alb", 191.63),
            // 12 ACU × $0.12 × 730 h; 500 GB × $0.10; 500 GB × $0.021; the seed's proxy and transfer
            ("aurora.compute", 1_051.20),
            ("aurora.storage", 50.00),
            ("aurora.backup", 10.50),
            ("aurora.proxy", 50.00),
            ("aurora.transfer", 100.00),
            ("mq.broker", 2_160.00),
            ("mq.transfer", 100.00),
            ("mq.storage", 100.00),
            ("cloudwatch", 200.00),
            // 70% × ($18,020.05 − 1,000 × (0.5 × $0.012144 + $0.0013335) × 730 = $5,406.02)
            ("optimize.spot", -8_829.82),
            // 30% × ($144.16 + 30% × $18,020.05)
            ("optimize.commitment", -1_665.05),
            // 50% × 50% × (70% × $5,406.02 + 30% × 70% × $18,020.05)
            ("optimize.off_hours", -1_892.11),
            // 1,749.6 million events × $1 per million
            ("alt.eventbridge", 1_749.60),
            ("alt.fargate_spot", 5_406.02),
        ],
    );
    let aurora: f64 = ["aurora.compute", "aurora.storage", "aurora.backup", "aurora.proxy", "aurora.transfer"]
        .iter()
        .map(|k| cost(&p, k))
        .sum();
    assert!((aurora - 1_261.70).abs() < 0.005, "Aurora for production is the seed's $1,261.70, got {aurora}");
    figures(&p, &[("costs.on_demand_total", 22_177.54), ("costs.optimized_total", 9_790.56)]);

    // The seed's figures that do not follow from its inputs are corrected, with the reason.
    let corrections = p["corrections"].as_array().unwrap();
    let find = |figure: &str| corrections.iter().find(|c| c["figure"] == figure).unwrap_or_else(|| panic!("{figure}"));
    let cap = find("total peak capacity");
    assert_eq!(cap["seed"], "502 vCPU, 1,004 GB");
    assert_eq!(cap["planner"], "504 vCPU, 1,008 GB");
    let ecs = find("ECS (Fargate) monthly cost");
    assert_eq!(ecs["seed"], "$3,200 (peak capacity)");
    assert_eq!(ecs["planner"], "$18,164.21 on demand");
    assert!(ecs["why"].as_str().unwrap().contains("$18,092.13"), "the seed's own 502/1,004 priced: {}", ecs["why"]);
    let rate = find("normal data rate");
    assert_eq!(rate["seed"], "9.4 MB/s");
    assert_eq!(rate["planner"], "9.33 MB/s");

    // The table says the same to a person.
    assert_contains(
        &plan_text(&["--agents", "1000"]),
        &[
            "1,000 agents, prod profile, seed model",
            "675 msg/s, 9.33 MB/s",
            "3,375 msg/s, 46.67 MB/s",
            "1,749,600,000 (1.75 billion)",
            "960 (30 per ACU)",
            "$1,051.20",
            "$18,020.05",
            "$22,177.54",
            "$9,790.56",
            "Corrections to the seed",
            "504 vCPU, 1,008 GB",
            "$18,164.21 on demand",
            "Warnings",
            "30,060 connections",
        ],
    );
}

#[test]
fn seed_model_at_100_agents() {
    let p = plan_json(&["--agents", "100"]);
    assert_eq!(p["profile"], "staging");
    figures(
        &p,
        &[
            ("services.1.tasks", 100.0),
            ("totals.vcpu", 54.0),
            ("totals.memory_gb", 108.0),
            ("totals.tasks", 102.0),
            ("messaging.normal_per_s", 67.5),
            ("messaging.peak_per_s", 337.5),
            ("messaging.normal_mb_s", 0.9333),
            ("messaging.peak_mb_s", 4.6667),
            ("messaging.per_day", 5_832_000.0),
            ("messaging.per_month", 174_960_000.0),
            ("database.min_acu", 1.0),
            ("database.max_acu", 8.0),
            ("database.avg_acu", 3.0),
            ("database.max_connections", 240.0),
            ("database.connections_needed", 3_060.0),
            ("database.iops.average", 250.0),
            ("database.storage_gb", 50.0),
            ("database.storage_growth_gb_month", 40.74),
            ("autoscaling.worker_min_tasks", 0.0),
            ("autoscaling.worker_max_tasks", 100.0),
        ],
    );
    assert_eq!(p["database"]["proxy"], false);
    assert_eq!(p["messaging"]["broker"]["instance_type"], "mq.m5.large");
    costs(
        &p,
        &[
            ("fargate.supervisor", 72.08),
            ("fargate.worker", 1_802.01),
            ("fargate.gateway", 72.08),
            // ($0.0225 + 3 LCU × $0.008) × 730 h
            ("alb", 33.95),
            ("aurora.compute", 262.80),
            ("aurora.storage", 5.00),
            ("aurora.backup", 1.05),
            ("mq.broker", 540.00),
            ("cloudwatch", 200.00),
            ("optimize.spot", -882.98),
            ("optimize.commitment", -205.43),
            ("optimize.off_hours", -189.21),
            ("alt.eventbridge", 174.96),
            ("alt.fargate_spot", 540.60),
        ],
    );
    figures(&p, &[("costs.on_demand_total", 2_988.97), ("costs.optimized_total", 1_711.35)]);
    assert_eq!(p["corrections"].as_array().unwrap().len(), 0, "the seed's figures are for 1,000 agents");
}

#[test]
fn seed_model_at_10_agents() {
    let p = plan_json(&["--agents", "10"]);
    assert_eq!(p["profile"], "dev");
    figures(
        &p,
        &[
            ("services.1.tasks", 10.0),
            ("totals.vcpu", 9.0),
            ("totals.memory_gb", 18.0),
            ("totals.tasks", 12.0),
            ("messaging.normal_per_s", 6.75),
            ("messaging.peak_per_s", 33.75),
            ("messaging.normal_mb_s", 0.0933),
            ("messaging.per_month", 17_496_000.0),
            ("database.min_acu", 0.5),
            ("database.max_acu", 2.0),
            ("database.avg_acu", 1.0),
            ("database.max_connections", 60.0),
            ("database.connections_needed", 360.0),
            ("database.iops.average", 25.0),
            ("database.storage_gb", 10.0),
            ("database.storage_growth_gb_month", 4.074),
        ],
    );
    assert_eq!(p["messaging"]["broker"]["instance_type"], "mq.t3.micro");
    assert_eq!(p["messaging"]["broker"]["deployment_mode"], "SINGLE_INSTANCE");
    costs(
        &p,
        &[
            ("fargate.supervisor", 72.08),
            ("fargate.worker", 180.20),
            ("fargate.gateway", 72.08),
            // ($0.0225 + 1 LCU minimum × $0.008) × 730 h
            ("alb", 22.27),
            ("aurora.compute", 87.60),
            ("aurora.storage", 1.00),
            ("aurora.backup", 0.21),
            ("mq.broker", 13.50),
            ("cloudwatch", 200.00),
            ("optimize.spot", -88.30),
            ("optimize.commitment", -59.47),
            ("optimize.off_hours", -18.92),
            ("alt.eventbridge", 17.50),
            ("alt.fargate_spot", 54.06),
        ],
    );
    figures(&p, &[("costs.on_demand_total", 648.94), ("costs.optimized_total", 482.25)]);
}

#[test]
fn an_explicit_profile_overrides_the_default_and_prices_can_be_replaced() {
    let p = plan_json(&["--agents", "10", "--profile", "prod"]);
    assert_eq!(p["profile"], "prod");
    figures(&p, &[("database.max_acu", 32.0), ("database.avg_acu", 12.0)]);
    assert!(p["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("one supervisor")));

    // Twice the ACU price doubles the compute line and nothing else.
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.toml");
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prices/us-east-1.toml"))
            .unwrap();
    std::fs::write(&prices, text.replace("acu_hour = 0.12", "acu_hour = 0.24")).unwrap();
    let q = plan_json(&["--agents", "1000", "--prices", prices.to_str().unwrap()]);
    assert!((cost(&q, "aurora.compute") - 2_102.40).abs() < 0.005);
    assert!((cost(&q, "fargate.worker") - 18_020.05).abs() < 0.005);

    let md = plan_text(&["--agents", "100", "--format", "markdown"]);
    assert!(md.starts_with("# MisterSmith plan: 100 agents, staging profile, seed model"), "{md}");
    assert!(md.contains("## Monthly cost") && md.contains("| on-demand total | $2,988.97 |"), "{md}");
}

/// A baseline like `smith bench --scenario baseline` writes: an agent of 200 MB using 0.05 vCPU,
/// 40 events per 60 s task; 20 KB per SSE connection; 50 MB of process base.
const BASELINE: &str = r#"{
  "scenario": "baseline", "version": 1, "at": "2026-11-27T12:00:00Z", "server": "http://127.0.0.1:8080",
  "host": {"cpus": 2, "memory_bytes": 25769803776},
  "executors": {
    "claude": {"agents": 50, "memory_bytes_per_agent": 200000000, "cpu_per_agent": 0.05, "events_per_task": 40, "task_seconds": 60},
    "sleep": {"agents": 200, "memory_bytes_per_agent": 20000, "cpu_per_agent": 0.0001, "events_per_task": 3, "task_seconds": 10}
  },
  "sse": {"connections": 1000, "memory_bytes_per_connection": 20000},
  "idle_rss_bytes": 50000000
}"#;

#[test]
fn measured_model_sizes_from_the_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline.json");
    std::fs::write(&file, BASELINE).unwrap();
    let f = file.to_str().unwrap();
    let p = plan_json(&["--agents", "1000", "--model", "measured", "--baseline", f]);
    assert_eq!(p["model"], "measured");
    assert_eq!(p["executor"], "claude", "the default executor is the one using the most memory");
    // The cheapest Fargate size at 70%: 2 vCPU / 8 GB holds min(2 × 0.7 / 0.05 = 28,
    // (8 × 0.7 − 0.05) / 0.2 = 27.75) = 27 agents; 1,000 agents need 38 tasks.
    figures(
        &p,
        &[
            ("services.1.vcpu", 2.0),
            ("services.1.memory_gb", 8.0),
            ("services.1.agents_per_task", 27.0),
            ("services.1.tasks", 38.0),
            ("services.0.tasks", 2.0),
            ("services.2.tasks", 2.0),
            ("autoscaling.agents_per_task", 27.0),
            // 40 events per 60 s task: 40 task messages per agent-minute.
            ("messaging.kinds.2.per_agent_minute", 40.0),
            ("messaging.per_agent_minute", 55.5),
            ("messaging.normal_per_s", 925.0),
            // 38 × (2 × $0.04048 + 8 × $0.004445) × 730 h
        ],
    );
    assert!((cost(&p, "fargate.worker") - 3_232.26).abs() < 0.005, "{}", cost(&p, "fargate.worker"));
    // RDS Proxy priced: max(12, 8) ACU × $0.015 × 730 h.
    assert!((cost(&p, "aurora.proxy") - 131.40).abs() < 0.005);
    // The broker from the price file: 3 × mq.m5.large × $0.288 × 730 h.
    assert!((cost(&p, "mq.broker") - 630.72).abs() < 0.005);

    let small = plan_json(&["--agents", "10", "--model", "measured", "--baseline", f]);
    figures(&small, &[("services.1.vcpu", 1.0), ("services.1.memory_gb", 3.0), ("services.1.tasks", 1.0)]);
    // A measurement too small to see reads 0: planned as free, with a warning.
    let zero = dir.path().join("zero.json");
    std::fs::write(
        &zero,
        BASELINE.replace("\"memory_bytes_per_connection\": 20000", "\"memory_bytes_per_connection\": 0"),
    )
    .unwrap();
    let z = plan_json(&["--agents", "1000", "--model", "measured", "--baseline", zero.to_str().unwrap()]);
    figures(&z, &[("services.2.tasks", 2.0)]);
    assert!(
        z["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("memory per SSE connection (1000 connections)")),
        "{}",
        z["warnings"]
    );
    let sleep = plan_json(&["--agents", "1000", "--model", "measured", "--baseline", f, "--executor", "sleep"]);
    assert_eq!(sleep["executor"], "sleep");
    figures(&sleep, &[("services.1.agents_per_task", 100.0), ("services.1.tasks", 10.0)]);
}

#[test]
fn bad_input_is_refused_with_a_clear_error_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let default_prices =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prices/us-east-1.toml"))
            .unwrap();
    let broken = write("broken.toml", "region = \"us-east-1\"\ndate = \n");
    let negative = write("negative.toml", &default_prices.replace("vcpu_hour = 0.04048", "vcpu_hour = -1"));
    let missing = write("missing.toml", &default_prices.replace("[eventbridge]", "[eventbridge_typo]"));
    let not_baseline = write(
        "tasks.json",
        r#"{"scenario": "tasks", "version": 1, "at": "x", "executors": {}, "sse": {"connections": 1, "memory_bytes_per_connection": 1}, "idle_rss_bytes": 1}"#,
    );
    let baseline = write("baseline.json", BASELINE);
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--agents", "-1"], &["--agents must be at least 1, not -1"]),
        (vec!["--agents", "0"], &["--agents must be at least 1, not 0"]),
        (vec!["--agents", "lots"], &["invalid value 'lots'"]),
        (vec!["--agents", "100001"], &["more than this planner sizes"]),
        (vec!["--agents", "10", "--profile", "qa"], &["unknown profile `qa`", "dev, staging or prod"]),
        (vec!["--agents", "10", "--model", "guess"], &["unknown model `guess`"]),
        (vec!["--agents", "10", "--format", "xml"], &["unknown format `xml`"]),
        (vec!["--agents", "10", "--prices", &broken], &["price file", "broken.toml"]),
        (vec!["--agents", "10", "--prices", &negative], &["fargate.vcpu_hour", "0 or more"]),
        (vec!["--agents", "10", "--prices", &missing], &["eventbridge_typo"]),
        (
            vec!["--agents", "10", "--prices", "/nonexistent/prices.toml"],
            &["cannot read price file /nonexistent/prices.toml"],
        ),
        (
            vec!["--agents", "10", "--model", "measured", "--baseline", "/nonexistent/baseline.json"],
            &["cannot read baseline /nonexistent/baseline.json"],
        ),
        // without --baseline, the built-in one's executors are the choice
        (
            vec!["--agents", "10", "--model", "measured", "--executor", "codex"],
            &["no executor `codex`", "claude-code, process-sleep, sleep"],
        ),
        (vec!["--agents", "10", "--model", "measured", "--baseline", &not_baseline], &["`tasks` scenario"]),
        (
            vec!["--agents", "10", "--model", "measured", "--baseline", &baseline, "--executor", "codex"],
            &["no executor `codex`", "claude, sleep"],
        ),
        (vec!["--agents", "10", "--baseline", &baseline], &["--model measured"]),
    ];
    for (args, words) in cases {
        let mut all = vec!["plan"];
        all.extend_from_slice(&args);
        let out = smith(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.stdout.is_empty(), "{args:?} printed a plan anyway");
        for w in words {
            assert!(err.contains(w), "{args:?}: stderr lacks {w:?}: {err}");
        }
    }
}

#[test]
fn the_checked_in_baselines_plan() {
    // bench/baseline-*.json are `smith bench --scenario baseline` on this kind of machine
    // (BENCHMARKS.md): the planner must keep reading what the bench writes, old files included.
    for name in ["baseline-2026-11-27.json", "baseline-2026-12-07.json"] {
        checked_in_baseline_plans(name);
    }
}

fn checked_in_baseline_plans(name: &str) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench").join(name);
    let f = file.to_str().unwrap();
    let b: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for (executor, e) in b["executors"].as_object().unwrap() {
        let p = plan_json(&["--agents", "1000", "--model", "measured", "--baseline", f, "--executor", executor]);
        let w = &p["services"][1];
        let (per_task, tasks) = (w["agents_per_task"].as_f64().unwrap(), w["tasks"].as_f64().unwrap());
        assert!(per_task * tasks >= 1000.0, "{executor}: {w}");
        // Each task holds its agents' measured memory within 70% of the task's memory.
        let need_gb =
            (b["idle_rss_bytes"].as_f64().unwrap() + per_task * e["memory_bytes_per_agent"].as_f64().unwrap()) / 1e9;
        assert!(need_gb <= w["memory_gb"].as_f64().unwrap() * 0.7 + 1e-9, "{executor}: {need_gb} GB in {w}");
        // Task messages per agent-minute come from the measured events and durations.
        let want = e["events_per_task"].as_f64().unwrap() * 60.0 / e["task_seconds"].as_f64().unwrap();
        assert!((num(&p, "messaging.kinds.2.per_agent_minute") - want).abs() < 1e-3, "{executor}");
    }
}

/// The `categories` of a plan's JSON as (name, monthly, seed_monthly, difference).
fn categories(plan: &Value) -> Vec<(String, f64, f64, f64)> {
    let cats = plan["categories"].as_array().expect("a categories list");
    cats.iter()
        .map(|c| {
            assert!(!c["why"].as_str().unwrap().is_empty(), "{c}");
            let f = |k: &str| c[k].as_f64().unwrap_or_else(|| panic!("{k} in {c}"));
            (c["name"].as_str().unwrap().to_string(), f("monthly"), f("seed_monthly"), f("difference"))
        })
        .collect()
}

#[test]
fn the_bill_stands_beside_the_seeds_cost_categories() {
    // The seed model at the seed's scale: its four categories, and the load balancer it leaves out.
    let p = plan_json(&["--agents", "1000"]);
    let want = [
        ("ECS (Fargate)", 18_164.21, 3_200.0),
        ("Aurora Serverless v2", 1_261.70, 1_262.0),
        ("Messaging", 2_360.0, 2_360.0),
        ("Monitoring", 200.0, 200.0),
        ("Not in the seed", 191.63, 0.0),
    ];
    let got = categories(&p);
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((name, monthly, seed, difference), (want_name, want_monthly, want_seed)) in got.iter().zip(want) {
        assert_eq!(name, want_name);
        assert!((monthly - want_monthly).abs() < 0.005, "{name}: {monthly}");
        assert_eq!(*seed, want_seed, "{name}");
        assert!((difference - (want_monthly - want_seed)).abs() < 0.005, "{name}: {difference}");
    }
    let ecs = &p["categories"][0];
    assert_eq!(ecs["lines"], serde_json::json!(["fargate.supervisor", "fargate.worker", "fargate.gateway"]));
    assert!(ecs["why"].as_str().unwrap().contains("1,000 workers of 0.5 vCPU / 1 GB"), "{}", ecs["why"]);

    // Every line of the bill in exactly one category, for both models; the seed's figures add
    // up to its $7,022 and the subtotals to the on-demand total.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("baseline.json");
    std::fs::write(&file, BASELINE).unwrap();
    let f = file.to_str().unwrap();
    for args in [
        vec!["--agents", "10"],
        vec!["--agents", "1000"],
        vec!["--agents", "1000", "--model", "measured", "--baseline", f],
    ] {
        let p = plan_json(&args);
        let cats = categories(&p);
        let seed: f64 = cats.iter().map(|c| c.2).sum();
        assert_eq!(seed, 7_022.0, "{args:?}");
        let sum: f64 = cats.iter().map(|c| c.1).sum();
        assert!((sum - num(&p, "costs.on_demand_total")).abs() < 0.005, "{args:?}: {sum}");
        let mut keys: Vec<&str> = p["categories"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["lines"].as_array().unwrap())
            .map(|k| k.as_str().unwrap())
            .collect();
        let mut lines: Vec<&str> =
            p["costs"]["lines"].as_array().unwrap().iter().map(|l| l["key"].as_str().unwrap()).collect();
        keys.sort();
        lines.sort();
        assert_eq!(keys, lines, "{args:?}");
    }
    let m = plan_json(&["--agents", "1000", "--model", "measured", "--baseline", f]);
    assert!((categories(&m)[2].1 - 690.72).abs() < 0.005, "the broker and its storage at list prices");

    // The table and the markdown show the same categories and the totals against $7,022.
    assert_contains(
        &plan_text(&["--agents", "1000"]),
        &[
            "Monthly cost by the seed's categories",
            "category               USD/month       seed  difference  why",
            "ECS (Fargate)         $18,164.21  $3,200.00  $14,964.21  1,002 tasks on demand",
            "Aurora Serverless v2   $1,261.70  $1,262.00      -$0.30",
            "Messaging              $2,360.00  $2,360.00       $0.00",
            "Monitoring               $200.00    $200.00       $0.00",
            "Not in the seed          $191.63      $0.00     $191.63  the seed prices no Application Load Balancer",
            "total                 $22,177.54  $7,022.00  $15,155.54",
        ],
    );
    assert_contains(
        &plan_text(&["--agents", "10", "--format", "markdown"]),
        &[
            "## Monthly cost by the seed's categories",
            "| category | USD/month | seed | difference | why |",
            "| ECS (Fargate) | $324.36 | $3,200.00 | -$2,875.64 | 12 tasks on demand",
            "| Monitoring | $200.00 | $200.00 | $0.00 |",
            "| total | $648.94 | $7,022.00 | -$6,373.06 |",
            "this plan's for 10 on dev",
        ],
    );
}

/// The built-in baseline: what `smith plan --model measured` sizes from without --baseline.
const CHECKED_IN: &str = "bench/baseline-2026-12-07.json";

#[test]
fn the_measured_model_sizes_claude_code_agents_from_the_checked_in_baseline_by_default() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(CHECKED_IN);
    let f = file.to_str().unwrap();
    let b: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let p = plan_json(&["--agents", "1000", "--model", "measured"]);
    assert_eq!(p["model"], "measured");
    assert_eq!(p["executor"], "claude-code", "the seed sized Claude Code agents");
    // The plan names the baseline it used, and says it is the built-in one.
    let used = &p["assumptions"][0];
    assert_eq!(used["name"], "baseline", "{used}");
    assert_eq!(used["source"], "built in", "{used}");
    let value = used["value"].as_str().unwrap();
    assert!(value.contains("bench/baseline-2026-12-07.json (built in)"), "{value}");
    assert!(value.contains(b["at"].as_str().unwrap()) && value.contains("`claude-code`"), "{value}");

    // The same figures as the checked-in file given by path with --executor claude-code.
    let given = plan_json(&["--agents", "1000", "--model", "measured", "--baseline", f, "--executor", "claude-code"]);
    for part in ["services", "totals", "database", "messaging", "costs", "autoscaling"] {
        assert_eq!(p[part], given[part], "{part}");
    }
    assert_eq!(given["assumptions"][0]["source"], "--baseline");

    // Sized from the measured Claude Code agent: its memory within 70% of each task's memory,
    // its CPU within 70% of the task's vCPU, and its task messages per agent-minute.
    let e = &b["executors"]["claude-code"];
    let w = &p["services"][1];
    let (per_task, tasks) = (num(w, "agents_per_task"), num(w, "tasks"));
    assert!(per_task * tasks >= 1000.0, "{w}");
    let need_gb = (num(&b, "idle_rss_bytes") + per_task * num(e, "memory_bytes_per_agent")) / 1e9;
    assert!(need_gb <= num(w, "memory_gb") * 0.7 + 1e-9, "{need_gb} GB in {w}");
    assert!(per_task * num(e, "cpu_per_agent") <= num(w, "vcpu") * 0.7 + 1e-9, "{w}");
    let want = num(e, "events_per_task") * 60.0 / num(e, "task_seconds");
    assert!((num(&p, "messaging.kinds.2.per_agent_minute") - want).abs() < 1e-3);

    // --executor still picks another; --baseline another file, whose own default applies
    // (the 2026-11-27 file has no claude-code: the executor using the most memory).
    let sleep = plan_json(&["--agents", "1000", "--model", "measured", "--executor", "sleep"]);
    assert_eq!(sleep["executor"], "sleep");
    assert!(sleep["assumptions"][0]["value"].as_str().unwrap().contains("`sleep`"));
    let old = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/baseline-2026-11-27.json");
    let before = plan_json(&["--agents", "1000", "--model", "measured", "--baseline", old.to_str().unwrap()]);
    assert_eq!(before["executor"], "process-sleep");
    assert!(before["assumptions"][0]["value"].as_str().unwrap().contains("baseline-2026-11-27.json"));

    // The table and markdown say which baseline and executor too.
    for format in ["table", "markdown"] {
        let out = smith(&["plan", "--agents", "1000", "--model", "measured", "--format", format]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("measured (`claude-code` agents)"), "{format}: {text}");
        assert!(text.contains("bench/baseline-2026-12-07.json (built in)"), "{format}: {text}");
    }

    // A deployment emitted from it names the command that makes it again: no --baseline needed.
    let dir = tempfile::tempdir().unwrap();
    let out =
        smith(&["plan", "--agents", "1000", "--model", "measured", "--emit", "k8s", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut commands = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        commands.extend(text.lines().filter(|l| l.contains("smith plan --agents")).map(str::to_string));
    }
    assert!(!commands.is_empty());
    for c in &commands {
        assert!(c.contains("smith plan --agents 1000 --profile prod --model measured --executor claude-code"), "{c}");
    }
}
