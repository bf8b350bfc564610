//! Prints a [`Plan`] as an aligned text table, markdown, or JSON.

use serde::Serialize;

use crate::categories::{self, Category, SEED_TOTAL};
use crate::model::{format_count, format_figure as num, format_money, Plan};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Markdown,
}

impl Format {
    pub fn parse(s: &str) -> crate::Result<Format> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            other => Err(crate::Error::Invalid(format!("unknown format `{other}`: expected table, json or markdown"))),
        }
    }
}

pub fn render(plan: &Plan, format: Format) -> String {
    match format {
        Format::Json => {
            let with = WithCategories { plan, categories: categories::of(plan) };
            serde_json::to_string_pretty(&with).expect("a plan serializes") + "\n"
        }
        Format::Table => sections(plan).iter().map(|s| s.text()).collect::<Vec<_>>().join("\n"),
        Format::Markdown => {
            let title = format!(
                "# MisterSmith plan: {} agents, {} profile, {} model\n\nPrices: {} list prices recorded {}.\n\n",
                format_count(plan.agents as f64),
                plan.profile,
                model_name(plan),
                plan.region,
                plan.prices_date
            );
            title + &sections(plan).iter().map(|s| s.markdown()).collect::<Vec<_>>().join("\n")
        }
    }
}

/// The JSON document: the plan's fields, then its bill in the seed's categories.
#[derive(Serialize)]
struct WithCategories<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    categories: Vec<Category>,
}

fn model_name(plan: &Plan) -> String {
    match (&plan.model, &plan.executor) {
        (crate::Model::Seed, _) => "seed".to_string(),
        (crate::Model::Measured, Some(e)) => format!("measured (`{e}` agents)"),
        (crate::Model::Measured, None) => "measured".to_string(),
    }
}

struct Section {
    title: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Section {
    fn new(title: &str, header: &[&str]) -> Section {
        Section { title: title.to_string(), header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn text(&self) -> String {
        if self.header.is_empty() {
            return format!("{}\n", self.title);
        }
        let cols = self.header.len();
        let mut width = vec![0; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (c, cell) in r.iter().enumerate() {
                width[c] = width[c].max(cell.chars().count());
            }
        }
        // A column of figures is right-aligned; words and the last column are left as they are.
        let numeric: Vec<bool> = (0..cols)
            .map(|c| {
                c + 1 < cols
                    && self.rows.iter().any(|r| !r[c].is_empty())
                    && self.rows.iter().all(|r| r[c].is_empty() || r[c] == "-" || is_figure(&r[c]))
            })
            .collect();
        let fmt_row = |r: &Vec<String>| {
            let cells: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    let pad = width[c] - cell.chars().count();
                    if c + 1 == cols {
                        cell.clone()
                    } else if numeric[c] {
                        format!("{}{cell}", " ".repeat(pad))
                    } else {
                        format!("{cell}{}", " ".repeat(pad))
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        };
        let mut out = format!("{}\n", self.title);
        out += &format!("{}\n", fmt_row(&self.header));
        for r in &self.rows {
            out += &format!("{}\n", fmt_row(r));
        }
        out
    }

    fn markdown(&self) -> String {
        if self.header.is_empty() {
            return String::new();
        }
        let esc = |s: &String| s.replace('|', "\\|");
        let mut out = format!("## {}\n\n", self.title);
        out += &format!("| {} |\n", self.header.iter().map(esc).collect::<Vec<_>>().join(" | "));
        out += &format!("|{}|\n", vec!["---"; self.header.len()].join("|"));
        for r in &self.rows {
            out += &format!("| {} |\n", r.iter().map(esc).collect::<Vec<_>>().join(" | "));
        }
        out
    }
}

/// A figure: digits with separators, an optional sign and dollar sign.
fn is_figure(s: &str) -> bool {
    let s = s.trim_start_matches(['-', '$']);
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '.')
}

fn sections(plan: &Plan) -> Vec<Section> {
    let mut out = Vec::new();
    for part in [title, services, database, messages, costs, seed_categories, autoscaling, notes] {
        part(plan, &mut out);
    }
    out
}

/// The plan's title line.
fn title(plan: &Plan, out: &mut Vec<Section>) {
    let mut head = Section::new(
        &format!(
            "MisterSmith plan: {} agents, {} profile, {} model ({} prices of {})",
            format_count(plan.agents as f64),
            plan.profile,
            model_name(plan),
            plan.region,
            plan.prices_date
        ),
        &[],
    );
    head.header.clear();
    out.push(head);
}

/// The ECS services and their totals.
fn services(plan: &Plan, out: &mut Vec<Section>) {
    let mut s = Section::new(
        "ECS services (Fargate)",
        &["service", "vCPU", "memory GB", "tasks", "min", "max", "agents/task", "pool", "vCPU total", "GB total"],
    );
    for svc in &plan.services {
        s.row(vec![
            svc.name.clone(),
            num(svc.vcpu),
            num(svc.memory_gb),
            num(svc.tasks as f64),
            num(svc.min_tasks as f64),
            num(svc.max_tasks as f64),
            svc.agents_per_task.map_or("-".to_string(), |a| num(a as f64)),
            num(svc.pool_size as f64),
            num(svc.vcpu_total),
            num(svc.memory_gb_total),
        ]);
    }
    s.row(vec![
        "total".into(),
        String::new(),
        String::new(),
        num(plan.totals.tasks as f64),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        num(plan.totals.vcpu),
        num(plan.totals.memory_gb),
    ]);
    out.push(s);
}

/// The database: capacity, connections, IOPS and storage.
fn database(plan: &Plan, out: &mut Vec<Section>) {
    let d = &plan.database;
    let mut s = Section::new(&format!("Database: {}", d.engine), &["figure", "value"]);
    s.row(vec!["ACU range".into(), format!("{} – {}", num(d.min_acu), num(d.max_acu))]);
    s.row(vec!["ACU average".into(), num(d.avg_acu)]);
    s.row(vec![
        "connections at max ACU".into(),
        format!("{} ({} per ACU)", num(d.max_connections), num(d.connections_per_acu)),
    ]);
    for p in &d.pools {
        s.row(vec![
            format!("pool: {}", p.service),
            format!("{} × {} = {}", num(p.per_task as f64), num(p.tasks as f64), num(p.connections as f64)),
        ]);
    }
    s.row(vec!["connections needed".into(), num(d.connections_needed as f64)]);
    s.row(vec!["RDS Proxy".into(), if d.proxy { "yes".into() } else { "no".into() }]);
    s.row(vec![
        "IOPS".into(),
        format!(
            "{} average ({} writes + {} reads), {} peak",
            num(d.iops.average),
            num(d.iops.writes),
            num(d.iops.reads),
            num(d.iops.peak)
        ),
    ]);
    s.row(vec!["storage".into(), format!("{} GB", num(d.storage_gb))]);
    s.row(vec![
        "storage growth".into(),
        format!(
            "{} GB/month ({} GB after 12 months)",
            num(d.storage_growth_gb_month),
            num(d.storage_after_12_months_gb)
        ),
    ]);
    out.push(s);
}

/// Message rates by kind and the broker that carries them.
fn messages(plan: &Plan, out: &mut Vec<Section>) {
    let m = &plan.messaging;
    let mut s = Section::new("Messages", &["kind", "per agent-minute", "size KB", "msg/s", "peak msg/s", "KB/s"]);
    for k in &m.kinds {
        s.row(vec![
            k.kind.clone(),
            num(k.per_agent_minute),
            num(k.size_kb),
            num(k.normal_per_s),
            num(k.peak_per_s),
            num(k.normal_kb_s),
        ]);
    }
    s.row(vec![
        "total".into(),
        num(m.per_agent_minute),
        String::new(),
        num(m.normal_per_s),
        num(m.peak_per_s),
        num(m.normal_mb_s * 1_000.0),
    ]);
    out.push(s);
    let mut s = Section::new("Message volume", &["figure", "value"]);
    s.row(vec!["normal".into(), format!("{} msg/s, {} MB/s", num(m.normal_per_s), num(m.normal_mb_s))]);
    s.row(vec![
        "peak".into(),
        format!("{} msg/s, {} MB/s ({} × normal)", num(m.peak_per_s), num(m.peak_mb_s), num(m.peak_factor)),
    ]);
    s.row(vec!["per day".into(), format_count(m.per_day)]);
    s.row(vec!["per month".into(), format!("{} ({:.2} billion)", format_count(m.per_month), m.per_month / 1e9)]);
    s.row(vec![
        "broker".into(),
        format!(
            "Amazon MQ for {}: {} × {} ({}), about {} msg/s",
            m.broker.engine,
            m.broker.nodes,
            m.broker.instance_type,
            m.broker.deployment_mode,
            num(m.broker.capacity_per_s)
        ),
    ]);
    out.push(s);
}

/// The monthly bill line by line, and the alternatives left out of it.
fn costs(plan: &Plan, out: &mut Vec<Section>) {
    let c = &plan.costs;
    let mut s = Section::new("Monthly cost", &["line", "USD/month", "how"]);
    for l in &c.lines {
        s.row(vec![l.item.clone(), format_money(l.monthly), l.detail.clone()]);
    }
    s.row(vec!["on-demand total".into(), format_money(c.on_demand_total), String::new()]);
    for l in &c.optimizations {
        s.row(vec![l.item.clone(), format_money(l.monthly), l.detail.clone()]);
    }
    s.row(vec!["optimized total".into(), format_money(c.optimized_total), String::new()]);
    out.push(s);
    let mut s = Section::new("Alternatives (not in the totals)", &["line", "USD/month", "how"]);
    for l in &c.alternatives {
        s.row(vec![l.item.clone(), format_money(l.monthly), l.detail.clone()]);
    }
    out.push(s);
}

/// The bill in the seed's cost categories, each beside the seed's figure, and the totals.
fn seed_categories(plan: &Plan, out: &mut Vec<Section>) {
    let mut s =
        Section::new("Monthly cost by the seed's categories", &["category", "USD/month", "seed", "difference", "why"]);
    for c in categories::of(plan) {
        s.row(vec![c.name, format_money(c.monthly), format_money(c.seed_monthly), format_money(c.difference), c.why]);
    }
    let total = plan.costs.on_demand_total;
    s.row(vec![
        "total".into(),
        format_money(total),
        format_money(SEED_TOTAL),
        format_money(total - SEED_TOTAL),
        categories::total_why(plan),
    ]);
    out.push(s);
}

/// The workers' autoscaling.
fn autoscaling(plan: &Plan, out: &mut Vec<Section>) {
    let a = &plan.autoscaling;
    let mut s = Section::new("Autoscaling", &["figure", "value"]);
    s.row(vec![
        "worker metric".into(),
        format!("`{}` from GET /v1/scaling, target {:.0}%", a.metric, a.target_utilization * 100.0),
    ]);
    s.row(vec![
        "worker tasks".into(),
        format!(
            "{} – {} ({} agent slots each)",
            num(a.worker_min_tasks as f64),
            num(a.worker_max_tasks as f64),
            num(a.agents_per_task as f64)
        ),
    ]);
    out.push(s);
}

/// Corrections to the seed, warnings and the assumptions every figure rests on.
fn notes(plan: &Plan, out: &mut Vec<Section>) {
    if !plan.corrections.is_empty() {
        let mut s = Section::new("Corrections to the seed", &["figure", "seed", "planner", "why"]);
        for k in &plan.corrections {
            s.row(vec![k.figure.clone(), k.seed.clone(), k.planner.clone(), k.why.clone()]);
        }
        out.push(s);
    }
    if !plan.warnings.is_empty() {
        let mut s = Section::new("Warnings", &["", "warning"]);
        for (i, w) in plan.warnings.iter().enumerate() {
            s.row(vec![format!("{}.", i + 1), w.clone()]);
        }
        out.push(s);
    }
    let mut s = Section::new("Assumptions", &["name", "value", "from"]);
    for a in &plan.assumptions {
        s.row(vec![a.name.clone(), a.value.clone(), a.source.clone()]);
    }
    out.push(s);
}
