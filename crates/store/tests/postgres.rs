//! The store conformance suite against PostgreSQL, plus what only a networked store promises:
//! reopening keeps everything, migrations apply once however many processes start at once, two
//! processes writing the feed keep it commit-ordered, running caps hold across processes, a
//! failing write does not fail its batch, and bad URLs, unreachable servers and missing
//! databases fail fast and say why.
//!
//! Needs `SMITH_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`); without
//! it each test that needs a server prints why it is skipped and passes. Every test works in a
//! schema of its own, `smith_test_<uuid>`; schemas left by runs more than an hour ago are dropped.
#![cfg(feature = "postgres")]

use serde_json::json;
use smith_core::{AgentDef, AuditQuery, Code, EventDraft, Micros, NewAuditRecord, NewTask, Outcome, Usage};
use smith_store::conformance::{claim_request, reopening_keeps_everything, tail_audit, tail_feed, Writers};
use smith_store::{ClaimRequest, Error, FeedFilter, OpenOptions, RunningCaps, Store};
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::time::{Duration, Instant};

const URL_VAR: &str = "SMITH_TEST_POSTGRES_URL";

fn options() -> OpenOptions {
    // two writers per store, as with the default pool, in a pool small enough for the stores of
    // tests running at once
    OpenOptions { fsync: false, pool_size: 16, ..Default::default() }
}

/// The test server's URL, or `None` after printing the skip line.
fn server() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) => Some(url),
        Err(_) => {
            println!("skipped: {URL_VAR} not set");
            None
        }
    }
}

fn with_param(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

/// A URL to a new, empty schema of the test database.
async fn fresh_schema(url: &str) -> String {
    static SWEEP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let mut conn = PgConnection::connect(url).await.expect("connect to the test database");
    SWEEP.get_or_init(|| sweep_old_schemas(url)).await;
    let schema = format!("smith_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::Executor::execute(&mut conn, format!("CREATE SCHEMA {schema}").as_str()).await.expect("create schema");
    let _ = conn.close().await;
    with_param(url, &format!("options[search_path]={schema}"))
}

/// Two stores on one new schema of the test server (its URL returned too): two processes
/// sharing a database. `None` after printing the skip line.
async fn two_processes() -> Option<(String, [Arc<dyn Store>; 2])> {
    let url = fresh_schema(&server()?).await;
    let stores =
        [smith_store::open(&url, &options()).await.unwrap(), smith_store::open(&url, &options()).await.unwrap()];
    Some((url, stores))
}

/// Starts `n` writers, `write(w, store)`, taking turns between the two processes' stores.
fn writers_on<Fut>(stores: &[Arc<dyn Store>; 2], n: usize, write: impl Fn(usize, Arc<dyn Store>) -> Fut) -> Writers
where
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Writers::start(n, |w| write(w, stores[w % 2].clone()))
}

/// Drops the test schemas of runs that ended long ago (their names carry a UUIDv7's time).
async fn sweep_old_schemas(url: &str) {
    let Ok(mut conn) = PgConnection::connect(url).await else { return };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'smith\\_test\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let hour_ago = Micros::now().0 / 1000 - 3_600_000;
    for name in names {
        let Ok(id) = uuid::Uuid::parse_str(name.trim_start_matches("smith_test_")) else { continue };
        let Some((secs, nanos)) = id.get_timestamp().map(|t| t.to_unix()) else { continue };
        if (secs as i64) * 1000 + i64::from(nanos / 1_000_000) < hour_ago {
            let _ = sqlx::Executor::execute(&mut conn, format!("DROP SCHEMA {name} CASCADE").as_str()).await;
        }
    }
    let _ = conn.close().await;
}

async fn fresh_store() -> Arc<dyn Store> {
    let url = std::env::var(URL_VAR).expect("the suite skips before asking for a store");
    let url = fresh_schema(&url).await;
    smith_store::open(&url, &options()).await.expect("open postgres store")
}

mod conformance {
    smith_store::store_conformance!(skip_unless_env = "SMITH_TEST_POSTGRES_URL", super::fresh_store());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_tasks_events_idempotency_agents_and_nodes() {
    let Some(server) = server() else { return };
    let url = fresh_schema(&server).await;
    let store = smith_store::open(&url, &options()).await.unwrap();
    let input = json!({"q": 1, "nul": "\u{0}", "big": u64::MAX, "f": 0.1});
    let r =
        reopening_keeps_everything(store, input, || async { smith_store::open(&url, &options()).await.unwrap() }).await;
    assert_eq!(r.appended_pos, r.cursor_before + 1, "positions continue without a gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_apply_once_however_many_processes_start_at_once() {
    let Some(server) = server() else { return };
    let url = fresh_schema(&server).await;
    let mut starts = tokio::task::JoinSet::new();
    for i in 0..6 {
        let url = url.clone();
        starts.spawn(async move {
            if i % 2 == 0 {
                smith_store::migrate(&url).await.map(|_| ())
            } else {
                smith_store::open(&url, &options()).await.map(|_| ())
            }
        });
    }
    while let Some(res) = starts.join_next().await {
        res.unwrap().expect("a concurrent start failed");
    }
    let again = smith_store::migrate(&url).await.unwrap();
    assert!(again.contains("nothing to apply"), "{again}");

    let mut conn = PgConnection::connect(&url).await.unwrap();
    let versions: Vec<i32> = sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    let builtins: i64 = sqlx::query_scalar("SELECT count(*) FROM agents").fetch_one(&mut conn).await.unwrap();
    assert_eq!(builtins as usize, AgentDef::builtins().len());

    // A database migrated by a newer binary is refused, not misread.
    sqlx::query("INSERT INTO schema_migrations (version) VALUES (999)").execute(&mut conn).await.unwrap();
    let err = smith_store::open(&url, &options()).await.err().expect("a newer schema");
    assert!(err.to_string().contains("newer than this binary"), "{err}");
}

/// Two stores on one schema are two processes: positions stay commit-ordered and gapless across
/// them, so a reader tailing the feed meanwhile sees every event exactly once; and a claim never
/// comes back empty while a committed task waits (each writer claims right after submitting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_stays_commit_ordered_across_processes() {
    let Some((_, stores)) = two_processes().await else { return };
    let writers = writers_on(&stores, 6, |w, s| async move {
        let worker = format!("w{w}");
        for i in 0..15 {
            s.submit(NewTask::new("echo", json!(i))).await.unwrap();
            for c in s.claim(&claim_request(&worker, "echo", 1)).await.unwrap() {
                let drafts = (0..3).map(|n| EventDraft::output(json!(n))).collect();
                s.append(c.task.id, c.task.attempt, drafts).await.unwrap();
                let ok = Outcome::Succeeded { result: json!(w), usage: Usage::default() };
                s.complete(c.task.id, c.task.attempt, vec![], ok).await.unwrap();
            }
            s.append_system(json!({"writer": w})).await.unwrap();
        }
    });
    let seen = tail_feed(&stores[1], &writers, 11).await;
    writers.finish().await;
    let all = stores[0].feed(0, &FeedFilter::default(), 100_000).await.unwrap().events;
    assert_eq!(all.len(), 90 * 6 + 90);
    let positions: Vec<u64> = all.iter().map(|e| e.pos).collect();
    assert_eq!(positions, (1..=all.len() as u64).collect::<Vec<_>>(), "positions are gapless");
    assert_eq!(seen, all, "the tail saw every event once, in order");
}

/// Two processes' workers claiming and finishing one tenant's tasks as fast as they can never
/// run more of them at once than its cap: claims of every process are serialized, and each
/// counts what runs when it begins. The stored start and end times say so (a claim's start is
/// read after the lock, so after the end of every task whose slot it took).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_caps_hold_across_processes() {
    let Some((_, stores)) = two_processes().await else { return };
    for tenant in ["acme", "globex"] {
        for i in 0..24 {
            let mut t = NewTask::new(if i % 2 == 0 { "echo" } else { "sleep" }, json!(i));
            t.tenant = tenant.into();
            stores[0].submit(t).await.unwrap();
        }
    }
    let caps = Arc::new(RunningCaps { default: Some(3), tenants: [("globex".to_string(), 5)].into() });
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..6 {
        let (s, caps) = (stores[w % 2].clone(), caps.clone());
        workers.spawn(async move {
            let wants = vec![("echo".to_string(), 2), ("sleep".to_string(), 2)];
            let req = ClaimRequest {
                worker: format!("w{w}"),
                lease: Duration::from_secs(600),
                wants,
                limit: None,
                caps,
                keys: Default::default(),
            };
            let mut idle = 0;
            while idle < 50 {
                let got = s.claim(&req).await.unwrap();
                idle = if got.is_empty() { idle + 1 } else { 0 };
                if got.is_empty() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                for c in got {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    let ok = Outcome::Succeeded { result: json!(w), usage: Usage::default() };
                    s.complete(c.task.id, c.task.attempt, vec![], ok).await.unwrap();
                }
            }
        });
    }
    workers.join_all().await;
    for (tenant, cap) in [("acme", 3), ("globex", 5)] {
        let q = smith_store::TaskQuery { tenant: Some(tenant.into()), limit: 100, ..Default::default() };
        let tasks = stores[1].list_tasks(&q).await.unwrap().items;
        assert_eq!(tasks.len(), 24);
        let mut edges = Vec::new();
        for t in &tasks {
            assert_eq!(t.status, smith_core::TaskStatus::Succeeded, "{t:?}");
            edges.push((t.started_at.unwrap().0, 1));
            edges.push((t.finished_at.unwrap().0, -1));
        }
        edges.sort();
        let (mut now, mut most) = (0, 0);
        for (_, d) in edges {
            now += d;
            most = most.max(now);
        }
        assert_eq!(most, cap, "{tenant}'s tasks running at once, by their stored times");
    }
}

/// Audit ids are handed out under the feed lock, so they too are commit-ordered and gapless
/// across processes: a reader paging with `after` meanwhile sees every record once. Writes the
/// server rejects in the same batches (their batch is run again job by job) lose no record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_ids_stay_commit_ordered_across_processes() {
    let Some((url, stores)) = two_processes().await else { return };
    let writers = writers_on(&stores, 6, |w, s| async move {
        for i in 0..30 {
            let record = NewAuditRecord {
                at: Micros::now(),
                actor: format!("key:{w}"),
                tenant: "acme".into(),
                action: "task.submit".into(),
                target: Some(i.to_string()),
                source: "127.0.0.1:1".into(),
                status: 201,
            };
            let (audited, submitted) = tokio::join!(s.append_audit(record), async {
                let mut new = NewTask::new("echo", json!(i));
                if i % 5 == 2 {
                    new.tenant = "bad\u{0}tenant".into();
                }
                s.submit(new).await
            });
            audited.unwrap();
            assert_eq!(submitted.is_err(), i % 5 == 2);
        }
    });
    let seen = tail_audit(&stores[1], &writers, 11).await;
    writers.finish().await;
    let all = stores[0].audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(all.len(), 180);
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), (1..=180).collect::<Vec<u64>>(), "ids are gapless");
    assert_eq!(seen, all, "the tail saw every record once, in order");

    // Append-only in the schema too, whatever SQL a future change adds.
    let mut conn = PgConnection::connect(&url).await.unwrap();
    for sql in ["UPDATE audit SET status = 200", "DELETE FROM audit", "TRUNCATE audit"] {
        let err = sqlx::Executor::execute(&mut conn, sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

/// A write the server rejects (a NUL byte in a text column) fails alone: its batch is run again
/// job by job, and every other write in it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_write_fails_alone_and_its_batch_commits() {
    let Some(server) = server() else { return };
    let store = smith_store::open(&fresh_schema(&server).await, &options()).await.unwrap();
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..200 {
        let s = store.clone();
        submits.spawn(async move {
            let mut new = NewTask::new("echo", json!(i));
            if i % 20 == 7 {
                new.tenant = "bad\u{0}tenant".into();
            }
            (i, s.submit(new).await)
        });
    }
    let mut ok = 0;
    while let Some(res) = submits.join_next().await {
        let (i, res) = res.unwrap();
        match res {
            Ok(sub) => {
                assert!(i % 20 != 7, "a NUL tenant was stored");
                assert!(sub.created);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(i % 20, 7, "a good submission failed: {e}");
                assert_eq!(e.code(), Code::Unprocessable, "{e}");
            }
        }
    }
    assert_eq!(ok, 190);
    assert_eq!(store.queue_stats().await.unwrap().queued, 190);
    let feed = store.feed(0, &FeedFilter::default(), 1000).await.unwrap().events;
    assert_eq!(feed.len(), 190, "a rolled-back write left events behind");
    assert_eq!(feed.last().unwrap().pos, 190);
}

/// Liveness writes never queue behind the feed lock: while another session holds it (a batch of
/// events stuck on a slow commit), an append waits for it, and a heartbeat and another worker's
/// lease renewal still go through at once. (They used to share the writer's batches: a healthy
/// worker's heartbeat once waited 1.8 s and the supervisor quarantined it.) A renewal waits only
/// for a batch that is changing the same task's row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_and_renewals_do_not_wait_for_the_feed_lock() {
    let Some(server) = server() else { return };
    let url = fresh_schema(&server).await;
    let store = smith_store::open(&url, &options()).await.unwrap();
    let t = store.submit(NewTask::new("echo", json!(1))).await.unwrap().task;
    store.claim(&claim_request("w1", "echo", 1)).await.unwrap();
    let other = store.submit(NewTask::new("echo", json!(2))).await.unwrap().task;
    store.claim(&claim_request("w2", "echo", 1)).await.unwrap();

    let mut holder = PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    // the feed lock's key: the store's class and the events table's oid as an int4
    sqlx::query(
        "SELECT pg_advisory_xact_lock(1397573188, \
             ((('events'::regclass::oid::int8 + 2147483648) % 4294967296) - 2147483648)::int4)",
    )
    .execute(&mut holder)
    .await
    .unwrap();
    let s = store.clone();
    let append = tokio::spawn(async move { s.append(t.id, 1, vec![EventDraft::output(json!("late"))]).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!append.is_finished(), "the append should wait for the feed lock");

    let node = smith_core::Node {
        id: "w1".into(),
        role: smith_core::NodeRole::Worker,
        version: "test".into(),
        address: None,
        status: smith_core::NodeStatus::Alive,
        started_at: Micros::now(),
        heartbeat_at: Micros::now(),
        load: json!({}),
    };
    let beat = tokio::time::timeout(Duration::from_secs(20), store.heartbeat(&node));
    assert_eq!(beat.await.expect("the heartbeat waited for the feed lock").unwrap(), smith_core::NodeStatus::Alive);
    let renew = tokio::time::timeout(Duration::from_secs(20), store.renew("w2", Duration::from_secs(60)));
    let held = renew.await.expect("the renewal waited for the feed lock").unwrap();
    assert_eq!(held.iter().map(|h| (h.id, h.attempt)).collect::<Vec<_>>(), [(other.id, 1)]);
    assert!(!append.is_finished(), "the append still waits");

    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    let written = append.await.unwrap().unwrap();
    assert_eq!(written.len(), 1);
}

/// Opening fails within the connect timeout, with an error that names the problem.
async fn open_error(url: &str) -> (Error, Duration) {
    let started = Instant::now();
    let err = smith_store::open(url, &options()).await.err().expect("open must fail");
    (err, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_unreachable_servers_fail_fast_with_clear_errors() {
    let (err, _) = open_error("postgres://smith:secret@127.0.0.1:notaport/db").await;
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("invalid PostgreSQL URL") && !err.to_string().contains("secret"), "{err}");

    // Nothing listens on port 1: refused at once.
    let (err, took) = open_error("postgres://smith@127.0.0.1:1/db").await;
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // A server that accepts and never answers: the connect timeout ends the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let (err, took) = open_error(&format!("postgres://smith@127.0.0.1:{port}/db")).await;
    hold.abort();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.to_string().contains("no answer within 5 s"), "{err}");
    assert!(took < Duration::from_secs(7), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_a_configuration_error_that_names_it() {
    let Some(server) = server() else { return };
    let mut url = url_without_query(&server);
    let slash = url.rfind('/').expect("a database in the URL");
    url.truncate(slash);
    url.push_str("/smith_no_such_database");
    let (err, took) = open_error(&url).await;
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("smith_no_such_database"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

fn url_without_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// The store answers with `Unavailable`, not a panic, once its server is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_fail_cleanly_when_the_schema_is_gone() {
    let Some(server) = server() else { return };
    let url = fresh_schema(&server).await;
    let store = smith_store::open(&url, &options()).await.unwrap();
    store.submit(NewTask::new("echo", json!(1))).await.unwrap();
    let mut conn = PgConnection::connect(&server).await.unwrap();
    let schema = url.rsplit('=').next().unwrap().to_string();
    sqlx::Executor::execute(&mut conn, format!("DROP SCHEMA {schema} CASCADE").as_str()).await.unwrap();
    let err = store.submit(NewTask::new("echo", json!(2))).await.expect_err("no tables");
    assert_eq!(err.code(), Code::Internal, "{err}");
    store.get_task(smith_core::TaskId::new()).await.expect_err("no tables");
    assert!(store.queue_stats().await.is_err());
}

/// Connections the server drops (a restart, an administrator) are replaced: the next write
/// reconnects before its batch, a read fails at most once per dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_replaced() {
    let Some(server) = server() else { return };
    let name = format!("smith_test_{}", uuid::Uuid::now_v7().simple());
    let url = with_param(&fresh_schema(&server).await, &format!("application_name={name}"));
    let store = smith_store::open(&url, &options()).await.unwrap();
    let first = store.submit(NewTask::new("echo", json!(1))).await.unwrap().task;
    assert!(store.get_task(first.id).await.unwrap().is_some());

    let mut conn = PgConnection::connect(&server).await.unwrap();
    let killed: Vec<bool> =
        sqlx::query_scalar("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1")
            .bind(&name)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(!killed.is_empty() && killed.iter().all(|k| *k), "{killed:?}");

    let second = store.submit(NewTask::new("echo", json!(2))).await.expect("the writer reconnects");
    let mut failures = 0;
    loop {
        match store.get_task(second.task.id).await {
            Ok(got) => {
                assert_eq!(got, Some(second.task));
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::Unavailable, "{e}");
                failures += 1;
                assert!(failures <= 16, "reads keep failing: {e}");
            }
        }
    }
}
