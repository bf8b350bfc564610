//! `smith approvals`: the requests agents made of people, and the answers (docs/approvals.md).

use crate::client::{print_value, Client};
use crate::ClientOpts;
use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ApprovalsCommand {
    /// Requests, newest first (pending ones unless `--all`).
    List {
        /// Every request, answered ones too.
        #[arg(long)]
        all: bool,
        /// Only this task's.
        #[arg(long)]
        task: Option<String>,
    },
    /// Allow a tool call (optionally with edited arguments, a JSON object).
    Allow {
        task: String,
        approval: String,
        #[arg(long, short)]
        message: Option<String>,
        #[arg(long, value_name = "JSON")]
        input: Option<String>,
    },
    /// Deny a tool call (or decline a question).
    Deny {
        task: String,
        approval: String,
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Answer a question.
    Answer { task: String, approval: String, text: String },
}

pub async fn approvals(command: ApprovalsCommand, opts: ClientOpts) -> Result<ExitCode> {
    let client = Client::new(&opts)?;
    let (task, approval, body) = match command {
        ApprovalsCommand::List { all, task } => {
            let mut query = vec![];
            if !all {
                query.push("status=pending".to_string());
            }
            if let Some(t) = task {
                query.push(format!("task_id={t}"));
            }
            let v = client.get(&format!("/v1/approvals?{}", query.join("&"))).await?;
            if opts.json {
                print_value(true, &v);
            } else {
                println!("{:<38} {:<38} {:<9} {:<9} {:<16} WHAT", "ID", "TASK", "KIND", "STATUS", "AGENT");
                v["items"].as_array().into_iter().flatten().for_each(row);
            }
            return Ok(ExitCode::SUCCESS);
        }
        ApprovalsCommand::Allow { task, approval, message, input } => {
            let input: Option<Value> = input
                .map(|i| serde_json::from_str(&i))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--input is not JSON: {e}"))?;
            (task, approval, json!({"decision": "allow", "message": message, "input": input}))
        }
        ApprovalsCommand::Deny { task, approval, message } => {
            (task, approval, json!({"decision": "deny", "message": message}))
        }
        ApprovalsCommand::Answer { task, approval, text } => (task, approval, json!({"answer": text})),
    };
    // unset options are left out rather than sent as null
    let body: serde_json::Map<String, Value> = body
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let answered = client.post(&format!("/v1/tasks/{task}/approvals/{approval}"), &Value::Object(body)).await?;
    print_value(opts.json, &answered);
    Ok(ExitCode::SUCCESS)
}

fn row(a: &Value) {
    let what = match (&a["tool"], a["text"].as_str()) {
        (Value::Object(t), _) => format!("{} {}", t["name"].as_str().unwrap_or(""), t["input"]),
        (_, Some(text)) => text.to_string(),
        _ => String::new(),
    };
    println!(
        "{:<38} {:<38} {:<9} {:<9} {:<16} {}",
        a["id"].as_str().unwrap_or(""),
        a["task_id"].as_str().unwrap_or(""),
        a["kind"].as_str().unwrap_or(""),
        a["status"].as_str().unwrap_or(""),
        a["agent"].as_str().unwrap_or(""),
        smith_core::task::truncate(&what, 200)
    );
}
