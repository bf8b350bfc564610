//! The monthly bill in the seed's four cost categories, each beside the seed's own figure with
//! the difference explained from the plan's figures.
//!
//! Every cost line falls in exactly one category, by its key; a line the seed has no category
//! for (the gateway's load balancer) falls in a fifth, "not in the seed", whose seed figure is
//! nothing. So the subtotals add up to the on-demand total and the seed figures to the seed's
//! $7,022.

use serde::{Deserialize, Serialize};

use crate::model::{cents, format_count, format_figure, format_money, CostLine, Model, Plan, Profile, SEED_AMOUNT};

/// The seed's monthly operating costs ("Cost Projections"), at full scale: 1,000 agents in
/// production.
pub const SEED_ECS: f64 = 3_200.0;
pub const SEED_AURORA: f64 = 1_262.0;
pub const SEED_MESSAGING: f64 = 2_360.0;
pub const SEED_MONITORING: f64 = 200.0;
pub const SEED_TOTAL: f64 = 7_022.0;

/// One category of the bill.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Category {
    pub name: String,
    /// The sum of this plan's cost lines in the category.
    pub monthly: f64,
    /// The seed's figure (0 for the lines the seed leaves out).
    pub seed_monthly: f64,
    /// `monthly − seed_monthly`.
    pub difference: f64,
    /// The keys of the cost lines in it.
    pub lines: Vec<String>,
    /// Why the plan's figure is not the seed's.
    pub why: String,
}

/// A category and the cost lines it claims by their keys' prefixes; the last, with none,
/// takes every line no other claims.
struct Rule {
    name: &'static str,
    seed_monthly: f64,
    prefixes: &'static [&'static str],
    why: fn(&Plan, &[&CostLine]) -> String,
}

const RULES: [Rule; 5] = [
    Rule { name: "ECS (Fargate)", seed_monthly: SEED_ECS, prefixes: &["fargate"], why: ecs },
    Rule { name: "Aurora Serverless v2", seed_monthly: SEED_AURORA, prefixes: &["aurora"], why: aurora },
    Rule { name: "Messaging", seed_monthly: SEED_MESSAGING, prefixes: &["mq"], why: messaging },
    Rule { name: "Monitoring", seed_monthly: SEED_MONITORING, prefixes: &["cloudwatch"], why: monitoring },
    Rule { name: "Not in the seed", seed_monthly: 0.0, prefixes: &[], why: not_in_seed },
];

/// Whether `prefix` names this key or the group it is in (`aurora` claims `aurora.proxy`).
fn claims(prefix: &str, key: &str) -> bool {
    key.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The index into [`RULES`] of the category a cost line with this key falls in.
fn rule_of(key: &str) -> usize {
    RULES.iter().position(|r| r.prefixes.iter().any(|p| claims(p, key))).unwrap_or(RULES.len() - 1)
}

/// The plan's bill by the seed's categories; "not in the seed" only when a line falls in it.
pub fn of(plan: &Plan) -> Vec<Category> {
    let mut out = Vec::new();
    for (idx, rule) in RULES.iter().enumerate() {
        let lines: Vec<&CostLine> = plan.costs.lines.iter().filter(|l| rule_of(&l.key) == idx).collect();
        if lines.is_empty() && rule.seed_monthly == 0.0 {
            continue;
        }
        let monthly = cents(lines.iter().map(|l| l.monthly).sum());
        let difference = cents(monthly - rule.seed_monthly);
        let mut why = (rule.why)(plan, &lines);
        if difference != 0.0 && difference.abs() < 1.0 {
            why += "; the difference is the seed's rounding to the dollar";
        }
        out.push(Category {
            name: rule.name.to_string(),
            monthly,
            seed_monthly: rule.seed_monthly,
            difference,
            lines: lines.iter().map(|l| l.key.clone()).collect(),
            why,
        });
    }
    out
}

/// Why the whole bill is not the seed's $7,022: scale, and the optimized totals side by side.
pub fn total_why(plan: &Plan) -> String {
    let mut why = format!(
        "both on demand; optimized, {} against the seed's $3,500–4,500",
        format_money(plan.costs.optimized_total)
    );
    if let Some(scale) = scale(plan) {
        why += "; ";
        why += &scale;
    }
    why
}

/// The seed priced 1,000 agents in production: says so when this plan is for another fleet.
fn scale(plan: &Plan) -> Option<String> {
    if plan.agents == 1_000 && plan.profile == Profile::Prod {
        return None;
    }
    Some(format!(
        "the seed's figures are for 1,000 agents in production, this plan's for {} on {}",
        format_count(plan.agents as f64),
        plan.profile
    ))
}

/// The seed's correction of `figure`, where the plan makes one.
fn correction(plan: &Plan, figure: &str) -> Option<String> {
    let c = plan.corrections.iter().find(|c| c.figure == figure)?;
    Some(format!("the seed's {} does not follow from its own inputs (corrected: {})", c.seed, c.planner))
}

fn ecs(plan: &Plan, lines: &[&CostLine]) -> String {
    let t = &plan.totals;
    let monthly: f64 = lines.iter().map(|l| l.monthly).sum();
    let mut parts = Vec::new();
    for s in &plan.services {
        let mut part = format!(
            "{} of {} vCPU / {} GB",
            count(s.tasks, &s.name),
            format_figure(s.vcpu),
            format_figure(s.memory_gb)
        );
        if let Some(agents) = s.agents_per_task.filter(|a| *a > 1) {
            part += &format!(" holding {agents} agents each");
        }
        parts.push(part);
    }
    // Size and rate apart: what a vCPU (with its share of memory) costs a month, ours and the seed's.
    let mut why = format!(
        "{} tasks on demand at list prices ({}): {} vCPU / {} GB at {} a vCPU-month with its memory, against the seed's 1,000 one-agent workers of 0.5 vCPU / 1 GB and its 2 vCPU / 4 GB supervisor and gateway: 502 vCPU / 1,004 GB by its count at {}",
        format_count(t.tasks as f64),
        parts.join(", "),
        format_figure(t.vcpu),
        format_figure(t.memory_gb),
        format_money(monthly / t.vcpu.max(f64::MIN_POSITIVE)),
        format_money(SEED_ECS / 502.0)
    );
    for note in [correction(plan, "ECS (Fargate) monthly cost"), scale(plan)].into_iter().flatten() {
        why += "; ";
        why += &note;
    }
    why
}

fn aurora(plan: &Plan, lines: &[&CostLine]) -> String {
    let d = &plan.database;
    let proxy = if d.proxy { ", RDS Proxy" } else { "" };
    let mut why = format!(
        "{} ACU average ({}–{} ACU), {} GB{proxy} for the {} profile against the seed's production cluster of 12 ACU average (2–32 ACU) and 500 GB",
        format_figure(d.avg_acu),
        format_figure(d.min_acu),
        format_figure(d.max_acu),
        format_figure(d.storage_gb),
        plan.profile
    );
    why += &against_seed(lines, &[("aurora.proxy", "RDS Proxy", 50.0), ("aurora.transfer", "data transfer", 100.0)]);
    why += &sources(lines);
    why
}

fn messaging(plan: &Plan, lines: &[&CostLine]) -> String {
    let m = &plan.messaging;
    let b = &m.broker;
    let mut why = format!(
        "{} × {} ({}) for {} msg/s at peak against the seed's Amazon MQ for 3,375 msg/s",
        b.nodes,
        b.instance_type,
        b.deployment_mode,
        format_figure(m.peak_per_s)
    );
    why += &against_seed(
        lines,
        &[("mq.broker", "broker", 2_160.0), ("mq.transfer", "transfer", 100.0), ("mq.storage", "storage", 100.0)],
    );
    why += &sources(lines);
    why
}

fn monitoring(plan: &Plan, lines: &[&CostLine]) -> String {
    const SEED: &str = "the seed's stated $200 for 15 custom metrics, 3 dashboards and 12 alerts";
    if plan.model == Model::Seed {
        return SEED.to_string();
    }
    let details: Vec<&str> = lines.iter().map(|l| l.detail.as_str()).collect();
    format!("CloudWatch at list prices, {}, against {SEED}", details.join("; "))
}

fn not_in_seed(_: &Plan, lines: &[&CostLine]) -> String {
    let items: Vec<&str> = lines.iter().map(|l| l.item.as_str()).collect();
    format!("the seed prices no {}", items.join(", "))
}

/// Each of the seed's production amounts in a category (cost line key, what it is, amount)
/// that this plan's line does not match: `; broker $630.72 (the seed's $2,160.00)`.
fn against_seed(lines: &[&CostLine], seed: &[(&str, &str, f64)]) -> String {
    let mut out = String::new();
    for (key, what, amount) in seed {
        let theirs = format_money(*amount);
        match lines.iter().find(|l| l.key == *key) {
            None => out += &format!("; no {what} (the seed's production {theirs})"),
            Some(l) if (l.monthly - amount).abs() >= 0.005 => {
                out += &format!("; {what} {} (the seed's production {theirs})", format_money(l.monthly))
            }
            Some(_) => {}
        }
    }
    out
}

/// How the lines were priced: at the seed's stated amounts, from the price file, or both.
fn sources(lines: &[&CostLine]) -> String {
    let (stated, priced): (Vec<&CostLine>, Vec<&CostLine>) =
        lines.iter().partition(|l| l.detail.starts_with(SEED_AMOUNT));
    if stated.is_empty() {
        return "; at list prices".to_string();
    }
    if priced.is_empty() {
        return "; the seed's stated amounts".to_string();
    }
    let items: Vec<&str> = stated.iter().map(|l| l.item.as_str()).collect();
    format!("; the seed's stated amounts for {}, the rest at list prices", items.join(" and "))
}

/// `1 gateway`, `2 gateways`.
fn count(n: u64, what: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {what}{s}", format_count(n as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{seed_plan, seed_request};
    use crate::{plan, Baseline, Request};

    /// A baseline like `smith bench --scenario baseline` writes (the one in tests/plan.rs).
    const BASELINE: &str = r#"{
      "scenario": "baseline", "version": 1, "at": "2026-11-27T12:00:00Z", "server": "http://127.0.0.1:8080",
      "host": {"cpus": 2, "memory_bytes": 25769803776},
      "executors": {
        "claude": {"agents": 50, "memory_bytes_per_agent": 200000000, "cpu_per_agent": 0.05, "events_per_task": 40, "task_seconds": 60}
      },
      "sse": {"connections": 1000, "memory_bytes_per_connection": 20000},
      "idle_rss_bytes": 50000000
    }"#;

    fn measured(n: i64, profile: Option<Profile>) -> Plan {
        let baseline = Some(Baseline::parse(BASELINE, "test").unwrap());
        plan(&Request { profile, model: Model::Measured, baseline, ..seed_request(n) }).unwrap()
    }

    fn plans() -> Vec<Plan> {
        let mut all: Vec<Plan> = [1, 10, 11, 100, 101, 1_000, 20_000].into_iter().map(seed_plan).collect();
        all.extend([10, 100, 1_000, 20_000].into_iter().map(|n| measured(n, None)));
        all.push(measured(10, Some(Profile::Prod)));
        all
    }

    #[test]
    fn every_cost_line_lands_in_exactly_one_category() {
        for p in plans() {
            let cats = of(&p);
            for l in &p.costs.lines {
                let holders: Vec<&str> =
                    cats.iter().filter(|c| c.lines.contains(&l.key)).map(|c| c.name.as_str()).collect();
                assert_eq!(holders.len(), 1, "{} agents: {} is in {holders:?}", p.agents, l.key);
                let claimed = RULES.iter().filter(|r| r.prefixes.iter().any(|pre| claims(pre, &l.key))).count();
                assert!(claimed <= 1, "{} is claimed by {claimed} categories' prefixes", l.key);
            }
            let listed: usize = cats.iter().map(|c| c.lines.len()).sum();
            assert_eq!(listed, p.costs.lines.len(), "{} agents", p.agents);
        }
    }

    #[test]
    fn lines_fall_where_the_seed_would_put_them() {
        let p = seed_plan(1_000);
        let cats = of(&p);
        let keys = |name: &str| cats.iter().find(|c| c.name == name).unwrap().lines.clone();
        assert_eq!(keys("ECS (Fargate)"), ["fargate.supervisor", "fargate.worker", "fargate.gateway"]);
        assert_eq!(
            keys("Aurora Serverless v2"),
            ["aurora.compute", "aurora.storage", "aurora.backup", "aurora.proxy", "aurora.transfer"]
        );
        assert_eq!(keys("Messaging"), ["mq.broker", "mq.transfer", "mq.storage"]);
        assert_eq!(keys("Monitoring"), ["cloudwatch"]);
        assert_eq!(keys("Not in the seed"), ["alb"]);
        assert!(!claims("mq", "mqx.broker") && claims("cloudwatch", "cloudwatch") && claims("aurora", "aurora.io"));
    }

    #[test]
    fn subtotals_sum_to_the_total_and_seed_figures_are_the_seeds() {
        for p in plans() {
            let cats = of(&p);
            let sum: f64 = cats.iter().map(|c| c.monthly).sum();
            assert!(
                (sum - p.costs.on_demand_total).abs() < 0.005,
                "{} agents: {sum} ≠ {}",
                p.agents,
                p.costs.on_demand_total
            );
            let seed: Vec<(&str, f64)> = cats.iter().map(|c| (c.name.as_str(), c.seed_monthly)).collect();
            assert_eq!(
                seed,
                [
                    ("ECS (Fargate)", 3_200.0),
                    ("Aurora Serverless v2", 1_262.0),
                    ("Messaging", 2_360.0),
                    ("Monitoring", 200.0),
                    ("Not in the seed", 0.0),
                ]
            );
            assert_eq!(seed.iter().map(|(_, v)| v).sum::<f64>(), SEED_TOTAL);
            for c in &cats {
                assert!((c.difference - (c.monthly - c.seed_monthly)).abs() < 0.005, "{}", c.name);
                assert!(!c.why.is_empty(), "{}", c.name);
            }
        }
    }

    #[test]
    fn the_seed_model_at_full_scale_explains_each_difference() {
        let cats = of(&seed_plan(1_000));
        let get = |name: &str| cats.iter().find(|c| c.name == name).unwrap();
        let ecs = get("ECS (Fargate)");
        assert_eq!((ecs.monthly, ecs.difference), (18_164.21, 14_964.21));
        assert!(ecs.why.contains("1,002 tasks on demand at list prices (1 supervisor of 2 vCPU / 4 GB, 1,000 workers of 0.5 vCPU / 1 GB, 1 gateway of 2 vCPU / 4 GB): 504 vCPU / 1,008 GB at $36.04 a vCPU-month"), "{}", ecs.why);
        assert!(ecs.why.contains("502 vCPU / 1,004 GB by its count at $6.37"), "{}", ecs.why);
        assert!(ecs.why.contains("$18,164.21 on demand"), "the correction is named: {}", ecs.why);
        let aurora = get("Aurora Serverless v2");
        assert_eq!((aurora.monthly, aurora.difference), (1_261.70, -0.30));
        assert!(aurora.why.contains("rounding to the dollar"), "{}", aurora.why);
        let mq = get("Messaging");
        assert_eq!((mq.monthly, mq.difference), (2_360.0, 0.0));
        assert!(mq.why.contains("3 × mq.m5.2xlarge") && mq.why.contains("the seed's stated amounts"), "{}", mq.why);
        assert!(!mq.why.contains("the seed's production"), "every amount is the seed's: {}", mq.why);
        assert_eq!(get("Monitoring").difference, 0.0);
        assert!(get("Not in the seed").why.contains("Application Load Balancer"));
        assert!(!total_why(&seed_plan(1_000)).contains("this plan's for"));
        assert!(total_why(&seed_plan(10)).contains("this plan's for 10 on dev"));
    }

    #[test]
    fn the_measured_model_says_what_it_priced() {
        let cats = of(&measured(1_000, None));
        let get = |name: &str| cats.iter().find(|c| c.name == name).unwrap();
        assert!(
            get("ECS (Fargate)").why.contains("38 workers of 2 vCPU / 8 GB holding 27 agents each"),
            "{}",
            get("ECS (Fargate)").why
        );
        let mq = &get("Messaging").why;
        assert!(mq.contains("at list prices"), "{mq}");
        assert!(mq.contains("broker $630.72 (the seed's production $2,160.00); no transfer"), "{mq}");
        let aurora = &get("Aurora Serverless v2").why;
        assert!(aurora.contains("RDS Proxy $131.40 (the seed's production $50.00); no data transfer"), "{aurora}");
        assert!(get("Monitoring").why.contains("at list prices, 15 metrics"), "{}", get("Monitoring").why);
    }
}
