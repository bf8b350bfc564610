//! Cron schedules through the real binary (docs/schedules.md): a schedule every 2 s on `smith
//! up` fires once per fire time; `skip` never runs two at once and records its skips; pause,
//! resume and delete over the API and the CLI; bad input is a 422 naming the field and creates
//! nothing; another tenant sees none of it; and on PostgreSQL + NATS, a `kill -9` of the leading
//! supervisor neither skips nor repeats a fire time.

use crate::common;

use common::cluster::{Cluster, Role, Services};
use common::{micros, Api, Opts, Smith};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const TWO_S: i64 = 2_000_000;

async fn create(api: &Api, body: Value) -> Value {
    let (status, created) = api.post("/v1/schedules", &body).await;
    assert_eq!(status, 201, "create a schedule: {created}");
    created
}

/// The tasks a schedule fired, oldest fire first.
async fn runs(api: &Api, agent: &str, schedule: &str) -> Vec<Value> {
    let mut tasks: Vec<Value> = api
        .list_all(&format!("agent={agent}"))
        .await
        .into_iter()
        .filter(|t| t["metadata"]["schedule_id"] == json!(schedule))
        .collect();
    tasks.sort_by_key(|t| micros(&t["metadata"]["fire_time"]));
    tasks
}

/// The fire times of `tasks`, checked: one task per fire time, every 2 s without a gap, each
/// task created at or after its fire time and keyed by it.
fn fire_times(schedule: &str, tasks: &[Value]) -> Vec<i64> {
    let times: Vec<i64> = tasks.iter().map(|t| micros(&t["metadata"]["fire_time"])).collect();
    let distinct: BTreeSet<i64> = times.iter().copied().collect();
    assert_eq!(distinct.len(), times.len(), "a fire time fired twice: {times:?}");
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], TWO_S, "a fire time was skipped: {times:?}");
    }
    for t in tasks {
        let fire = &t["metadata"]["fire_time"];
        assert!(micros(&t["created_at"]) >= micros(fire), "fired early: {t}");
        assert_eq!(t["idempotency_key"], json!(format!("schedule:{schedule}:{}", fire.as_str().unwrap())), "{t}");
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_two_seconds_for_twenty_seconds_is_ten_tasks_one_per_fire_time() {
    let s = Smith::start(Opts::new()).await;
    let api = s.api();
    let created = create(
        &api,
        json!({"name": "pulse", "agent": "echo", "input": {"beat": true}, "cron": "*/2 * * * * *",
               "timezone": "America/New_York", "overlap": "enqueue", "metadata": {"team": "ops"}}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let upcoming: Vec<i64> = created["upcoming"].as_array().unwrap().iter().map(micros).collect();
    assert_eq!(upcoming.len(), 5, "{created}");
    assert!(upcoming.windows(2).all(|p| p[1] - p[0] == TWO_S), "{created}");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (status, paused) = api.post(&format!("/v1/schedules/{id}/pause"), &json!({})).await;
    assert_eq!((status.as_u16(), &paused["paused"]), (200, &json!(true)), "{paused}");
    let tasks = runs(&api, "echo", &id).await;
    let times = fire_times(&id, &tasks);
    assert!((9..=11).contains(&times.len()), "{} tasks in 20 s: {times:?}", times.len());
    assert_eq!(tasks[0]["metadata"]["team"], "ops", "the schedule's metadata is copied: {}", tasks[0]);
    assert_eq!(tasks[0]["input"], json!({"beat": true}));
    let (_, now) = api.get(&format!("/v1/schedules/{id}")).await;
    assert_eq!(now["last_fire_at"], tasks.last().unwrap()["metadata"]["fire_time"], "{now}");
    assert_eq!((now["skipped"].as_u64(), now["missed"].as_u64()), (Some(0), Some(0)), "{now}");
    assert!(now["next_fire_at"].is_null() && now["upcoming"] == json!([]), "paused: {now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_never_overlaps_a_slow_run_and_records_the_skips() {
    let s = Smith::start(Opts::new()).await;
    let api = s.api();
    let created =
        create(&api, json!({"agent": "sleep", "input": 5000, "cron": "*/2 * * * * *", "overlap": "skip"})).await;
    let id = created["id"].as_str().unwrap().to_string();
    // sampled while it runs: never two runs of the schedule running at once
    let until = Instant::now() + Duration::from_secs(14);
    let mut samples = 0;
    while Instant::now() < until {
        let running = runs(&api, "sleep", &id).await.into_iter().filter(|t| t["status"] == "running").count();
        assert!(running <= 1, "{running} runs of one `skip` schedule at once");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.post(&format!("/v1/schedules/{id}/pause"), &json!({})).await;
    let tasks = runs(&api, "sleep", &id).await;
    assert!(samples > 20 && tasks.len() >= 2, "{samples} samples, {} runs", tasks.len());
    // and by the record: each run started after the one before it had finished
    for pair in tasks.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let done = micros(&before["finished_at"]);
        assert!(done > 0 && micros(&after["created_at"]) >= done, "overlap: {before} then {after}");
    }
    let (_, now) = api.get(&format!("/v1/schedules/{id}")).await;
    assert!(now["skipped"].as_u64().unwrap() >= 3, "the passed-over fires are recorded: {now}");
    assert!(now["last_skipped_at"].is_string(), "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_over_the_tenants_quota_is_refused_and_counted_missed() {
    // one slot and at most two tasks waiting: the schedule's fires fill the queue, and the
    // fires after that are refused as a submission over the quota would be
    let config = "[quotas]\nmax_queued = 2\n\
                  [agents.solo]\nexecutor = \"builtin\"\nbuiltin = \"sleep\"\nconcurrency = 1\n";
    let s = Smith::start(Opts::new().config(config)).await;
    let api = s.api();
    let created =
        create(&api, json!({"agent": "solo", "input": 60_000, "cron": "* * * * * *", "overlap": "enqueue"})).await;
    let id = created["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(7)).await;
    api.post(&format!("/v1/schedules/{id}/pause"), &json!({})).await;
    let tasks = runs(&api, "solo", &id).await;
    let waiting = tasks.iter().filter(|t| t["status"] == "queued").count();
    assert_eq!(tasks.len(), 3, "one running and two queued, no more: {tasks:#?}");
    assert_eq!(waiting, 2, "{tasks:#?}");
    let (_, now) = api.get(&format!("/v1/schedules/{id}")).await;
    assert!(now["missed"].as_u64().unwrap() >= 3, "the refused fires are counted missed: {now}");
    // as a submission of the tenant's is refused
    let (status, _) = api.post("/v1/tasks", &json!({"agent": "solo", "input": 1})).await;
    assert_eq!(status, 429);
    let (_, metrics) = api.get("/metrics").await;
    let refused = metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("smith_schedule_fires_total{outcome=\"refused\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(refused >= 3.0, "smith_schedule_fires_total{{outcome=\"refused\"}} = {refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_delete_bad_input_and_tenant_walls() {
    let s = Smith::start(Opts::new().token("root-token")).await;
    let root = s.api();
    let key = |tenant: &str| {
        let root = root.clone();
        let tenant = tenant.to_string();
        async move {
            let (status, body) =
                root.post("/v1/keys", &json!({"tenant": tenant, "scopes": ["tasks:read", "tasks:write"]})).await;
            assert_eq!(status, 201, "{body}");
            Api::new(&root.base, Some(body["secret"].as_str().unwrap().to_string()))
        }
    };
    let (acme, globex) = (key("acme").await, key("globex").await);

    // bad input: a 422 naming the field (valid JSON, an invalid value), and nothing created
    for (body, field) in [
        (json!({"agent": "echo", "cron": "* * *"}), "cron"),
        (json!({"agent": "echo", "cron": "61 * * * *"}), "cron"),
        (json!({"agent": "echo", "cron": "0 0 30 2 *"}), "cron"),
        (json!({"agent": "echo", "cron": "* * * * *", "timezone": "Mars/Olympus"}), "timezone"),
        (json!({"agent": "nobody", "cron": "* * * * *"}), "agent"),
        (json!({"agent": "echo", "cron": "* * * * *", "overlap": "sometimes"}), "overlap"),
        (json!({"agent": "echo", "cron": "* * * * *", "catchup": "soon"}), "catchup"),
    ] {
        let (status, err) = acme.post("/v1/schedules", &body).await;
        assert_eq!(status, 422, "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{body}: the error names {field}: {message}");
    }
    let (_, list) = acme.get("/v1/schedules").await;
    assert_eq!(list["items"], json!([]), "a refused schedule is not created: {list}");

    // pause and resume: nothing fires while paused, and it fires again after
    let created = create(&acme, json!({"agent": "echo", "input": "tick", "cron": "* * * * * *"})).await;
    let id = created["id"].as_str().unwrap().to_string();
    common::cluster::eventually("a first run", WAIT, || async {
        let n = runs(&acme, "echo", &id).await.len();
        if n > 0 {
            Ok(())
        } else {
            Err("no run yet".to_string())
        }
    })
    .await;
    let (status, paused) = acme.post(&format!("/v1/schedules/{id}/pause"), &json!({})).await;
    assert_eq!(status, 200, "{paused}");
    let before = runs(&acme, "echo", &id).await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(runs(&acme, "echo", &id).await.len(), before, "a paused schedule fired");
    let resumed_at = common::cluster::now_micros();
    let (status, resumed) = acme.post(&format!("/v1/schedules/{id}/resume"), &json!({})).await;
    assert_eq!((status.as_u16(), &resumed["paused"]), (200, &json!(false)), "{resumed}");
    assert!(micros(&resumed["next_fire_at"]) > resumed_at, "no fire from the pause is run: {resumed}");
    let tasks = common::cluster::eventually("a run after resuming", WAIT, || async {
        let tasks = runs(&acme, "echo", &id).await;
        if tasks.len() > before {
            Ok(tasks)
        } else {
            Err(format!("{} runs", tasks.len()))
        }
    })
    .await;
    let fires: Vec<i64> = tasks.iter().map(|t| micros(&t["metadata"]["fire_time"])).collect();
    assert!(fires[before..].iter().all(|f| *f > resumed_at), "fires of the paused time ran: {fires:?}");

    // the tenant wall: globex sees none of it, and cannot touch it
    let path = format!("/v1/schedules/{id}");
    for (status, body) in [
        globex.get(&path).await,
        globex.post(&format!("{path}/pause"), &json!({})).await,
        globex.post(&format!("{path}/resume"), &json!({})).await,
        globex.send(globex.request(reqwest::Method::DELETE, &path)).await,
    ] {
        assert_eq!(status, 404, "{body}");
        assert!(!body.to_string().contains(&id), "{body}");
    }
    let (_, list) = globex.get("/v1/schedules").await;
    assert_eq!(list["items"], json!([]), "{list}");
    let (_, mine) = acme.get(&path).await;
    assert_eq!(mine["paused"], false, "globex changed acme's schedule: {mine}");

    // the CLI, as acme
    let server = vec!["--server".to_string(), root.base.clone(), "--token".to_string(), acme.token.clone().unwrap()];
    let out = smith(
        &server,
        &[
            "schedule",
            "create",
            "echo",
            "--cron",
            "0 30 7 * * MON-FRI",
            "--timezone",
            "Europe/Berlin",
            "--name",
            "standup",
            "--paused",
        ],
    )
    .await;
    assert!(out.contains("standup") && out.contains("paused"), "{out}");
    let listed = smith(&server, &["schedule", "list"]).await;
    assert!(listed.contains("standup") && listed.contains(&id), "{listed}");
    let (_, all) = acme.get("/v1/schedules").await;
    let standup = all["items"].as_array().unwrap().iter().find(|s| s["name"] == "standup").expect("standup")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = smith(&server, &["schedule", "resume", &standup]).await;
    assert!(out.contains("active") && out.contains("next:"), "{out}");
    let out = smith(&server, &["schedule", "get", &standup, "--upcoming", "3"]).await;
    assert_eq!(out.matches("next:").count(), 3, "{out}");
    smith(&server, &["schedule", "pause", &standup]).await;
    smith(&server, &["schedule", "delete", &standup]).await;
    let (status, _) = acme.get(&format!("/v1/schedules/{standup}")).await;
    assert_eq!(status, 404, "deleted");
    let (status, _) = acme.send(acme.request(reqwest::Method::DELETE, &path)).await;
    assert_eq!(status, 204);
    assert!(
        !tasks.is_empty() && acme.get_task(tasks[0]["id"].as_str().unwrap()).await["id"].is_string(),
        "its runs stay"
    );
}

/// Runs the CLI with `server` (address and credential) and `args`; its stdout.
async fn smith(server: &[String], args: &[&str]) -> String {
    let all: Vec<&str> = server.iter().map(String::as_str).chain(args.iter().copied()).collect();
    let (code, out, err) = common::cli(&all, WAIT).await;
    assert_eq!(code, 0, "smith {all:?}: {err}");
    out
}

/// The supervisor that leads now, by its heartbeat.
async fn leader(api: &Api) -> Option<String> {
    common::cluster::nodes(api)
        .await
        .into_iter()
        .find(|n| n["role"] == "supervisor" && n["status"] == "alive" && n["load"]["leader"] == true)
        .and_then(|n| n["id"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_kill_9_of_the_leader_neither_skips_nor_repeats_a_fire_time() {
    let Some(services) = Services::from_env() else { return };
    let cluster = Cluster::new(&services, "[store]\npool_size = 4\n").await;
    let mut sups = [cluster.start(Role::Supervisor).await, cluster.start(Role::Supervisor).await];
    let _worker = cluster.start(Role::Worker).await;
    let gateway = cluster.start(Role::Gateway).await;
    let api = gateway.api();
    let first = common::cluster::eventually("a leader", WAIT, || async {
        leader(&api).await.ok_or_else(|| "no supervisor leads".to_string())
    })
    .await;
    let created = create(
        &api,
        json!({"agent": "echo", "input": "pulse", "cron": "*/2 * * * * *", "overlap": "enqueue", "catchup": "1m"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let li = sups.iter().position(|s| s.logged_node(&first)).unwrap_or_else(|| panic!("no supervisor logged {first}"));
    sups[li].kill9().await;
    eprintln!("killed leader {first} {:?} after the schedule was created", started.elapsed());
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(started.elapsed())).await;
    let (status, paused) = api.post(&format!("/v1/schedules/{id}/pause"), &json!({})).await;
    assert_eq!(status, 200, "{paused}");
    let next = leader(&api).await;
    assert!(next.as_deref().is_some_and(|n| n != first), "the standby leads: {next:?}");
    let tasks = runs(&api, "echo", &id).await;
    let times = fire_times(&id, &tasks);
    assert!((9..=11).contains(&times.len()), "{} tasks in 20 s across the failover: {times:?}", times.len());
}
