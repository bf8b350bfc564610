//! `smith schedule create|list|get|pause|resume|delete`: a tenant's cron schedules over the
//! API (docs/schedules.md).

use std::process::ExitCode;

use anyhow::Result;
use serde_json::{json, Value};

use crate::client::Client;
use crate::webhooks::encode;
use crate::ClientOpts;

#[derive(clap::Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Submit a task of AGENT on a cron timetable.
    Create {
        agent: String,
        /// Five fields (`minute hour day-of-month month day-of-week`), six with seconds first,
        /// or @hourly/@daily/@weekly/@monthly/@yearly.
        #[arg(long)]
        cron: String,
        /// The fired tasks' input: JSON, or else a string.
        #[arg(long, default_value = "{}")]
        input: String,
        /// An IANA zone the expression is read in (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// skip (default), enqueue or cancel_previous: what a fire does while the previous run
        /// is unfinished.
        #[arg(long)]
        overlap: Option<String>,
        /// After an outage, missed fires this recent are run (e.g. 10m); default none.
        #[arg(long)]
        catchup: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        priority: Option<u8>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// List schedules with their next fire.
    List,
    /// A schedule and its next fire times.
    Get {
        id: String,
        /// How many next fire times to show.
        #[arg(long)]
        upcoming: Option<usize>,
    },
    Pause {
        id: String,
    },
    /// Resume at the first fire time after now.
    Resume {
        id: String,
    },
    /// Delete a schedule (its fired tasks stay).
    Delete {
        id: String,
    },
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn header() {
    println!(
        "{:<38} {:<20} {:<12} {:<18} {:<16} {:<8} {:<28} LAST TASK",
        "ID", "NAME", "AGENT", "CRON", "TIMEZONE", "STATE", "NEXT FIRE"
    );
}

fn print_schedule(s: &Value) {
    let state = if s["paused"] == true { "paused" } else { "active" };
    println!(
        "{:<38} {:<20} {:<12} {:<18} {:<16} {:<8} {:<28} {}",
        text(s, "id"),
        text(s, "name"),
        text(s, "agent"),
        text(s, "cron"),
        text(s, "timezone"),
        state,
        text(s, "next_fire_at"),
        text(s, "last_task_id")
    );
}

fn print_one(v: &Value, json_out: bool) {
    if json_out {
        println!("{v}");
        return;
    }
    header();
    print_schedule(v);
    for t in v["upcoming"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        println!("  next: {t}");
    }
    println!(
        "  overlap {}, catchup {}, skipped {}, missed {}",
        text(v, "overlap"),
        text(v, "catchup"),
        text(v, "skipped"),
        text(v, "missed")
    );
}

pub async fn schedule(cmd: ScheduleCommand, opts: ClientOpts) -> Result<ExitCode> {
    let c = Client::new(&opts)?;
    let path = |id: &str| format!("/v1/schedules/{}", encode(id));
    match cmd {
        ScheduleCommand::Create { agent, cron, input, timezone, overlap, catchup, name, priority, paused } => {
            let input: Value = serde_json::from_str(&input).unwrap_or(Value::String(input));
            let body = json!({"agent": agent, "cron": cron, "input": input, "timezone": timezone, "overlap": overlap,
                              "catchup": catchup, "name": name, "priority": priority, "paused": paused});
            print_one(&c.post("/v1/schedules", &body).await?, opts.json);
        }
        ScheduleCommand::List => {
            let v = c.get("/v1/schedules").await?;
            if opts.json {
                println!("{v}");
                return Ok(ExitCode::SUCCESS);
            }
            header();
            for s in v["items"].as_array().into_iter().flatten() {
                print_schedule(s);
            }
        }
        ScheduleCommand::Get { id, upcoming } => {
            let query = upcoming.map(|n| format!("?upcoming={n}")).unwrap_or_default();
            print_one(&c.get(&format!("{}{query}", path(&id))).await?, opts.json);
        }
        ScheduleCommand::Pause { id } => {
            print_one(&c.post(&format!("{}/pause", path(&id)), &json!({})).await?, opts.json)
        }
        ScheduleCommand::Resume { id } => {
            print_one(&c.post(&format!("{}/resume", path(&id)), &json!({})).await?, opts.json)
        }
        ScheduleCommand::Delete { id } => {
            c.delete(&path(&id)).await?;
            if !opts.json {
                println!("deleted schedule {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
