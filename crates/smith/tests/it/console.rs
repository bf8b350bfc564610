//! The web console end to end: a real `smith up`, its console driven in headless Chromium
//! through chromedriver (W3C WebDriver, spoken here over HTTP with reqwest). From the pages it
//! submits a `stream` task and watches its events arrive live — across a `kill -9` and restart
//! of the server, after which the page resumes with `Last-Event-ID` with no gap and no
//! duplicate —, cancels a running task, holds a two-turn session, watches discoveries and
//! messages arrive, and reads the nodes and scaling pages; every effect is checked through the
//! API. A second run has a token and TLS: the console asks for the token once, keeps it in the
//! tab's session storage only, and works with it. Every page is saved as a screenshot (the
//! README shows them) in `SMITH_CONSOLE_SCREENSHOTS`, default `target/tmp/console-screenshots`.
//!
//! The browser is Debian's `chromium` and `chromium-driver` (.ci/run installs them), found
//! through `SMITH_TEST_CHROMIUM` and `SMITH_TEST_CHROMEDRIVER` or on `PATH`; without them the
//! tests skip, except in CI.

use crate::common;

use common::{Api, Opts, Smith};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// A file on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// (chromium, chromedriver), or `None` (after saying so) when either is missing outside CI.
fn tools() -> Option<(PathBuf, PathBuf)> {
    let var = |k: &str| std::env::var_os(k).filter(|p| !p.is_empty()).map(PathBuf::from);
    let chromium = var("SMITH_TEST_CHROMIUM").or_else(|| on_path("chromium")).or_else(|| on_path("chromium-browser"));
    let driver = var("SMITH_TEST_CHROMEDRIVER").or_else(|| on_path("chromedriver"));
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            // CI sets the service URLs and installs both: there a missing one is a failure
            if std::env::var_os("SMITH_TEST_POSTGRES_URL").is_some() {
                panic!("chromium or chromedriver missing: apt-get install chromium chromium-driver, or set SMITH_TEST_CHROMIUM and SMITH_TEST_CHROMEDRIVER");
            }
            println!("skipped: chromium and chromedriver not installed (set SMITH_TEST_CHROMIUM and SMITH_TEST_CHROMEDRIVER)");
            None
        }
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = std::env::var_os("SMITH_CONSOLE_SCREENSHOTS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A chromedriver process and one headless Chromium session on it; both end on drop.
struct Browser {
    driver: tokio::process::Child,
    http: reqwest::Client,
    session: String,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start(chromium: &Path, chromedriver: &Path) -> Browser {
        let port = free_port();
        // its own process group, which Chromium's processes join: dropped, the group goes whole
        let driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                if r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::Builder::new().prefix("smith-chromium-").tempdir().expect("profile dir");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-proxy-server".into(),
            "--no-first-run".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let resp = http.post(format!("{base}/session")).json(&caps).send().await.expect("new session");
        let body: Value = resp.json().await.expect("session JSON");
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start Chromium: {body}"))
            .to_string();
        let mut b = Browser {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            shots: screenshot_dir(),
            _profile: profile,
        };
        b.resize(DESKTOP).await;
        b
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self.http.request(method.clone(), format!("{}{path}", self.session)).timeout(WAIT);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        assert!(status.is_success(), "webdriver {method} {path}: {status} {v}");
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// Shows a page of the console already loaded (as its links do: the page is not reloaded,
    /// so the overview's samples are kept).
    async fn show(&self, hash: &str) {
        self.js("location.hash = arguments[0]", json!([hash])).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    async fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// [`Browser::js`] without arguments.
    async fn run(&self, script: &str) -> Value {
        self.js(script, json!([])).await
    }

    /// Waits for the page of a new object (`#/<kind>/<uuid>`) and returns the object's id.
    async fn opened(&self, what: &str, kind: &str) -> String {
        let expr = format!("/^#\\/{kind}\\/[0-9a-f-]{{36}}$/.test(location.hash) && location.hash");
        id_of(&self.until(what, &expr).await, &format!("#/{kind}/"))
    }

    /// [`Browser::wait`] for an expression without arguments.
    async fn until(&self, what: &str, expr: &str) -> Value {
        self.wait(what, expr, json!([])).await
    }

    /// Polls the expression until it is truthy and returns it; fails after `WAIT` with a
    /// screenshot of the page.
    async fn wait(&self, what: &str, expr: &str, args: Value) -> Value {
        let deadline = Instant::now() + WAIT;
        let script = format!("return ({expr});");
        loop {
            let v = self.js(&script, args.clone()).await;
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                self.shot("failure").await;
                let text = self.run("return document.body.innerText").await;
                panic!("the page never showed {what} (last value {v}); its text:\n{}", text.as_str().unwrap_or(""));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self.cmd(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css}))).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    /// Clicks an enabled element, finding it again if the page replaced it meanwhile (a list
    /// that refreshed).
    async fn click(&self, css: &str) {
        for _ in 0..5 {
            self.wait(
                &format!("an enabled {css}"),
                "document.querySelector(arguments[0]) && !document.querySelector(arguments[0]).disabled",
                json!([css]),
            )
            .await;
            let id = self.element(css).await;
            let url = format!("{}/element/{id}/click", self.session);
            let resp = self.http.post(url).json(&json!({})).timeout(WAIT).send().await.expect("webdriver click");
            if resp.status().is_success() {
                return;
            }
            let v: Value = resp.json().await.unwrap_or_default();
            assert_eq!(v["value"]["error"], "stale element reference", "click {css}: {v}");
        }
        panic!("{css} was replaced under every click");
    }

    /// Types into a field (as keystrokes, replacing what it held).
    async fn type_into(&self, css: &str, text: &str) {
        self.wait(&format!("the field {css}"), "document.querySelector(arguments[0])", json!([css])).await;
        let id = self.element(css).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.cmd(reqwest::Method::POST, &format!("/element/{id}/value"), Some(json!({"text": text}))).await;
    }

    /// Picks an option of a `<select>` as a person would (the page hears `change`).
    async fn select(&self, css: &str, value: &str) {
        self.wait(
            &format!("option {value} of {css}"),
            "document.querySelector(arguments[0] + ' option[value=\"' + arguments[1] + '\"]')",
            json!([css, value]),
        )
        .await;
        self.js("const s = document.querySelector(arguments[0]); s.value = arguments[1]; s.dispatchEvent(new Event('change'));", json!([css, value])).await;
    }

    async fn resize(&mut self, (width, height): (u32, u32)) {
        self.cmd(reqwest::Method::POST, "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    /// Saves the viewport as `<name>.png` in the screenshot dir.
    async fn shot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64_decode(b64.as_str().expect("screenshot is base64"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot {name} is not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// What the page logged that points at a bug: uncaught errors and refused by the CSP.
    async fn page_errors(&self) -> Vec<String> {
        let logs = self.http.post(format!("{}/se/log", self.session)).json(&json!({"type": "browser"})).send().await;
        let Ok(resp) = logs else { return Vec::new() };
        let v: Value = resp.json().await.unwrap_or_default();
        v["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str())
            .filter(|m| m.contains("Uncaught") || m.contains("Content Security Policy") || m.contains("TypeError"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and every Chromium process it started: killing chromedriver alone would
        // leave the browser running, re-parented, after the test
        if let Some(pid) = self.driver.id() {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.driver.start_kill();
    }
}

/// Standard base64 (the screenshots chromedriver returns), without a crate for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn id_of(hash: &Value, prefix: &str) -> String {
    let h = hash.as_str().unwrap_or_else(|| panic!("no hash: {hash}"));
    h.strip_prefix(prefix).unwrap_or_else(|| panic!("{h} does not start with {prefix}")).to_string()
}

/// The seq numbers the task page shows, in order.
async fn shown_seqs(b: &Browser) -> Vec<u64> {
    let v =
        b.run("return [...document.querySelectorAll('#events li[data-seq]')].map(li => Number(li.dataset.seq))").await;
    serde_json::from_value(v).expect("numbers")
}

async fn mcp(api: &Api, task: &str, tool: &str, args: Value) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args}});
    let (status, v) =
        api.send(api.request(reqwest::Method::POST, "/mcp").header("x-smith-task", task).json(&body)).await;
    assert_eq!(status, 200, "{tool}: {v}");
    assert_ne!(v["result"]["isError"], true, "{tool}: {v}");
}

/// As `task`, shares a discovery of `kind`.
async fn share(api: &Api, task: &str, kind: &str, content: &str, confidence: f64) {
    mcp(api, task, "share_discovery", json!({"type": kind, "content": content, "confidence": confidence})).await
}

/// An agent that leaves one artifact.
const KEEPER: &str = "[agents.keeper]\nexecutor = \"process\"\ncommand = \"sh\"\n\
    args = [\"-c\", \"mkdir -p \\\"$SMITH_ARTIFACTS/out\\\" && echo kept > \\\"$SMITH_ARTIFACTS/out/hello.txt\\\"\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_watches_and_drives_the_fleet() {
    let Some((chromium, chromedriver)) = tools() else { return };
    let started = Instant::now();
    let port = free_port();
    let mut smith = Smith::start(Opts::new().listen(&format!("127.0.0.1:{port}")).config(KEEPER)).await;
    let api = smith.api();
    let mut b = Browser::start(&chromium, &chromedriver).await;
    let base = api.base.clone();

    // the overview, with no token needed on loopback
    b.goto(&format!("{base}/")).await;
    b.until("the connection indicator", "document.querySelector('#conn').textContent === 'connected'").await;
    b.until("the agents table", "document.querySelector('#agents tr[data-agent=stream]')").await;

    // submit a `stream` task from the tasks page: its page opens and its events arrive live
    b.show("#/tasks").await;
    b.select("#submit-agent", "stream").await;
    b.type_into("#submit-input", r#"{"events": 60, "bytes": 24, "interval_ms": 100}"#).await;
    b.click("#submit-task").await;
    let stream_id = b.opened("the new task's page", "tasks").await;
    let task = api.get_task(&stream_id).await;
    assert_eq!(task["agent"], "stream");
    assert_eq!(
        task["input"],
        json!({"events": 60, "bytes": 24, "interval_ms": 100}),
        "the page sends the input as JSON"
    );
    b.until("output events", "document.querySelectorAll('#events li[data-kind=output]').length >= 5").await;
    let task = api.get_task(&stream_id).await;
    assert_eq!(task["status"], "running", "events are shown while the task runs, not after: {task}");

    // the server dies mid-stream and comes back on the same port: the page resumes
    let before = shown_seqs(&b).await;
    smith.restart().await;
    b.wait(
        "the stream resumed after the restart",
        "document.querySelector('#stream-state').dataset.reconnects >= 1 && document.querySelectorAll('#events li[data-seq]').length > arguments[0]",
        json!([before.len()]),
    )
    .await;
    let done = api.wait_terminal(&stream_id, Duration::from_secs(60)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    b.until("the terminal event", "document.querySelector('#events li[data-kind=\"task.succeeded\"]')").await;
    b.until("the task's status", "document.querySelector('#task-status [data-status=succeeded]')").await;
    let shown = shown_seqs(&b).await;
    let logged: Vec<u64> = api.events(&stream_id, WAIT).await.iter().map(|f| f.num()).collect();
    assert_eq!(shown, logged, "the page shows the task's whole log, in order, without gap or duplicate");
    assert!(done["attempt"].as_u64() >= Some(2), "the restart cost an attempt: {done}");
    b.until("both attempts", "document.querySelectorAll('#attempts tr[data-attempt]').length >= 2").await;
    b.run("document.querySelector('.event-box').scrollTop = 0").await;
    b.shot("task").await;

    // cancel a running task from the list
    let sleeper = api.submit_id(json!({"agent": "sleep", "input": 600000})).await;
    api.wait_status(&sleeper, "running", WAIT).await;
    b.show("#/tasks?agent=sleep").await;
    let row = format!("tr[data-task-id=\"{sleeper}\"]");
    b.until("the running sleep task", &format!("document.querySelector('{row}[data-status=running]')")).await;
    b.shot("tasks").await;
    b.click(&format!("{row} button[data-action=cancel]")).await;
    api.wait_status(&sleeper, "cancelled", WAIT).await;
    b.until("the cancelled row", &format!("document.querySelector('{row}[data-status=cancelled]')")).await;

    // search the list, retry the cancelled task, and cancel the retry from its own page
    b.type_into("#search", &sleeper[sleeper.len() - 8..]).await;
    b.until(
        "one search hit",
        &format!("document.querySelectorAll('#task-rows tr').length === 1 && document.querySelector('{row}')"),
    )
    .await;
    b.click(&format!("{row} button[data-action=retry]")).await;
    let hash = b.wait("the retry's page", "/^#\\/tasks\\/[0-9a-f-]{36}$/.test(location.hash) && !location.hash.includes(arguments[0]) && location.hash", json!([sleeper])).await;
    let retry = api.get_task(&id_of(&hash, "#/tasks/")).await;
    assert_eq!((&retry["agent"], &retry["input"]), (&json!("sleep"), &json!(600000)), "{retry}");
    assert_eq!(retry["metadata"]["retry_of"], json!(sleeper), "{retry}");
    let retry_id = retry["id"].as_str().expect("id").to_string();
    api.wait_status(&retry_id, "running", WAIT).await;
    b.click("#task-actions button[data-action=cancel]").await;
    api.wait_status(&retry_id, "cancelled", WAIT).await;
    b.until("the retry's cancelled status", "document.querySelector('#task-status [data-status=cancelled]')").await;

    // a session of two turns, as a chat
    b.show("#/sessions").await;
    b.select("#session-agent", "echo").await;
    b.type_into("#session-input", "What is the queue depth?").await;
    b.click("#start-session").await;
    let session_id = b.opened("the session's page", "sessions").await;
    b.until("the first answer", "document.querySelectorAll('#chat .turn[data-status=succeeded]').length === 1").await;
    b.type_into("#say-input", "And the throughput?").await;
    b.click("#say-send").await;
    b.until("the second answer", "document.querySelectorAll('#chat .turn[data-status=succeeded]').length === 2").await;
    let answer = b.run("return document.querySelector('#chat .turn:last-child .bubble.agent .said').textContent").await;
    assert_eq!(answer, "And the throughput?", "echo answers with the turn's input");
    let (status, session) = api.get(&format!("/v1/sessions/{session_id}")).await;
    assert_eq!(status, 200, "{session}");
    let turns = session["turns"].as_array().expect("turns");
    let inputs: Vec<&Value> = turns.iter().map(|t| &t["input"]).collect();
    assert_eq!(inputs, [&json!("What is the queue depth?"), &json!("And the throughput?")], "{session}");
    assert!(turns.iter().all(|t| t["status"] == "succeeded"), "{session}");
    b.shot("session").await;
    b.show("#/sessions").await;
    b.until("the session in the list", &format!("document.querySelector('tr[data-session-id=\"{session_id}\"]')"))
        .await;
    b.shot("sessions").await;

    // discoveries and messages: the history, then one live
    share(&api, &stream_id, "insight", "p99 latency doubles past 800 queued tasks", 0.8).await;
    mcp(&api, &stream_id, "send_message", json!({"to_agent": "echo", "body": "please summarise the run"})).await;
    b.show("#/feed").await;
    b.until("the feed's history", "document.querySelectorAll('#feed li[data-kind]').length === 2").await;
    share(&api, &sleeper, "anomaly", "a sleeper was cancelled", 0.95).await;
    let live = b.until("the live discovery", "[...document.querySelectorAll('#feed li[data-kind=discovery]')].find(li => li.textContent.includes('a sleeper was cancelled'))").await;
    assert!(live.is_object(), "{live}");
    b.shot("feed").await;

    // approvals: a task asks a person; the page lists the request and its buttons answer it
    let asker = api.submit_id(json!({"agent": "sleep", "input": 600000})).await;
    api.wait_status(&asker, "running", WAIT).await;
    let ask = json!({"reason": "deploy to prod", "tool": "deploy", "input": {"env": "prod"}});
    mcp(&api, &asker, "request_approval", ask).await;
    api.wait_status(&asker, "waiting_input", WAIT).await;
    b.show("#/approvals").await;
    b.until("the pending request", "document.querySelector('#approval-rows').textContent.includes('deploy to prod')")
        .await;
    b.shot("approvals").await;
    b.type_into("#approval-rows .approval-note", "not today").await;
    b.click("#approval-rows .approval-deny").await;
    let deadline = Instant::now() + WAIT;
    let answered = loop {
        let (_, list) = api.get(&format!("/v1/tasks/{asker}/approvals")).await;
        if list["items"][0]["status"] != "pending" {
            break list["items"][0].clone();
        }
        assert!(Instant::now() < deadline, "the console's Deny did not answer: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (answered["status"].as_str(), answered["answer"]["message"].as_str()),
        (Some("denied"), Some("not today"))
    );
    b.until("the list emptied", "document.querySelector('#approval-rows').textContent.includes('Nobody is waiting')")
        .await;
    api.cancel(&asker).await;

    // nodes: the three roles of this smith up, alive, as the API says
    let (_, nodes) = api.get("/v1/nodes").await;
    let alive = nodes["items"].as_array().expect("items").iter().filter(|n| n["status"] == "alive").count();
    b.show("#/nodes").await;
    for role in ["supervisor", "worker", "gateway"] {
        b.until(
            &format!("an alive {role}"),
            &format!("document.querySelector('#node-rows tr[data-role={role}][data-status=alive]')"),
        )
        .await;
    }
    let rows = b.run("return document.querySelectorAll('#node-rows tr[data-status=alive]').length").await;
    assert_eq!(rows, json!(alive), "{nodes}");
    b.shot("nodes").await;

    // scaling: the page shows the autoscaler's figures
    b.show("#/scaling").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, sc) = api.get("/v1/scaling").await;
        let shown = b.run("const d = document.querySelector('[data-figure=desired]'); const a = document.querySelector('[data-figure=actual]'); return d && a ? [Number(d.textContent), Number(a.textContent)] : null").await;
        if shown == json!([sc["desired_slots"], sc["current_slots"]]) {
            break;
        }
        assert!(Instant::now() < deadline, "the scaling page shows {shown}, the API {sc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.shot("scaling").await;

    // webhooks: a subscription (IPv6's discard prefix: nothing answers, so its deliveries wait to be
    // sent again) and its delivery log, a generated secret shown once after subscribing
    b.show("#/webhooks").await;
    b.run("document.querySelector('#hook-url').value = 'https://[100::1]/hook'; document.querySelector('#hook-kinds').value = 'task.*'; document.querySelector('#create-hook').click(); return null").await;
    b.until("the secret, shown once", "document.querySelector('#hook-secret code')?.textContent.startsWith('whsec_')")
        .await;
    b.until("the subscription listed", "document.querySelectorAll('#hook-rows tr').length === 1").await;
    api.run(json!({"agent": "echo", "input": "for the webhook"}), WAIT).await;
    b.until("its deliveries", "document.querySelectorAll('#delivery-log tr[data-delivery]').length >= 3").await;
    b.shot("webhooks").await;

    // schedules: listed with the next fire; Pause and Resume from the page
    let (status, sch) = api
        .post(
            "/v1/schedules",
            &json!({"name": "nightly report", "agent": "echo", "cron": "0 30 2 * * *", "timezone": "Europe/Berlin"}),
        )
        .await;
    assert_eq!(status, 201, "{sch}");
    let sch_path = format!("/v1/schedules/{}", sch["id"].as_str().unwrap());
    b.show("#/schedules").await;
    b.until("the schedule with its next fire", "document.querySelector('#schedule-rows').textContent.includes('nightly report') && !!document.querySelector('#schedule-rows .next-fire').textContent.trim()").await;
    b.shot("schedules").await;
    b.click("#schedule-rows .schedule-pause").await;
    b.until("paused", "!!document.querySelector('#schedule-rows .schedule-resume')").await;
    assert_eq!(api.get(&sch_path).await.1["paused"], true, "the page paused it");
    b.click("#schedule-rows .schedule-resume").await;
    b.until("resumed", "!!document.querySelector('#schedule-rows .schedule-pause')").await;
    assert_eq!(api.get(&sch_path).await.1["paused"], false, "the page resumed it");

    // the overview, under some load: its charts have the samples taken since the page loaded
    b.show("#/").await;
    b.until("charts with lines", "document.querySelectorAll('svg.chart path.line').length >= 3").await;
    for _ in 0..8 {
        for i in 0..25 {
            api.submit(json!({"agent": "echo", "input": format!("load {i}")})).await;
        }
        for _ in 0..4 {
            api.submit(json!({"agent": "sleep", "input": 2500})).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    b.until("a throughput figure", "document.querySelector('#cards').textContent.includes('/s')").await;
    b.shot("overview").await;

    // a task's artifacts, each with a download button
    let (kept, _) = api.run(json!({"agent": "keeper", "input": ""}), Duration::from_secs(30)).await;
    b.show(&format!("#/tasks/{kept}")).await;
    b.until(
        "the task's artifact",
        "document.querySelector('#artifacts tr[data-name=\"out/hello.txt\"] button.download')",
    )
    .await;
    b.click("#artifacts tr[data-name=\"out/hello.txt\"] button.download").await;
    b.shot("task-artifacts").await;

    // a phone's width
    b.resize(PHONE).await;
    b.show(&format!("#/tasks/{stream_id}")).await;
    b.until("the task at a phone's width", "document.querySelector('#events li[data-kind=\"task.succeeded\"]')").await;
    b.run("document.querySelector('#attempts').scrollIntoView()").await;
    let overflow = b.run("return document.documentElement.scrollWidth - window.innerWidth").await;
    assert!(overflow.as_i64() <= Some(0), "the page is wider than a phone by {overflow} px");
    b.shot("task-phone").await;
    b.show("#/").await;
    b.until("the overview at a phone's width", "document.querySelectorAll('svg.chart path.line').length >= 3").await;
    b.shot("overview-phone").await;

    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    println!("console test: {:?}; screenshots in {}", started.elapsed(), b.shots.display());
}

/// A self-signed certificate for 127.0.0.1 from the `openssl` CLI (as tests/tls.rs makes them).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
        .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the openssl CLI ({e}); .ci/run installs it"));
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (dir.join("cert.pem"), dir.join("key.pem"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_asks_for_the_token_once_and_works_over_tls() {
    let Some((chromium, chromedriver)) = tools() else { return };
    let certs = tempfile::Builder::new().prefix("smith-console-tls-").tempdir().expect("temp dir");
    let (cert, key) = self_signed(certs.path());
    let token = "console-test-token";
    let smith = Smith::start(
        Opts::new()
            .token(token)
            .arg("--tls-cert")
            .arg(cert.to_str().expect("utf-8"))
            .arg("--tls-key")
            .arg(key.to_str().expect("utf-8")),
    )
    .await;
    let base = smith.base.clone();
    assert!(base.starts_with("https://"), "{base}");
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).no_proxy().build().expect("client");
    let api = Api { base: base.clone(), token: Some(token.into()), http: http.clone() };
    let anonymous = Api { base: base.clone(), token: None, http };
    let (status, _) = anonymous.get("/v1/tasks").await;
    assert_eq!(status, 401, "the API needs the token");
    let (status, page) = anonymous.get("/").await;
    assert_eq!(status, 200, "the console itself is public: {page}");

    let b = Browser::start(&chromium, &chromedriver).await;
    b.goto(&format!("{base}/")).await;
    b.until("the sign-in dialog", "document.querySelector('#login').open").await;
    b.shot("sign-in").await;

    // a wrong token is refused and asked again; the right one is taken
    b.type_into("#login-token", "not-the-token").await;
    b.click("#login-form button[type=submit]").await;
    b.until(
        "the refusal",
        "document.querySelector('#login').open && document.querySelector('#login-why').textContent.includes('refused')",
    )
    .await;
    b.type_into("#login-token", token).await;
    b.click("#login-form button[type=submit]").await;
    b.until(
        "the signed-in page",
        "!document.querySelector('#login').open && document.querySelector('#conn').textContent === 'signed in'",
    )
    .await;
    b.until("the agents table", "document.querySelector('#agents tr[data-agent=echo]')").await;

    // kept in this tab's session storage only: no cookie, no local storage, not in the URL
    let stored = b
        .run("return [sessionStorage.getItem('smith.token'), localStorage.length, document.cookie, location.href]")
        .await;
    assert_eq!(stored[0], token, "{stored}");
    assert_eq!(stored[1], 0, "{stored}");
    assert_eq!(stored[2], "", "{stored}");
    assert!(!stored[3].as_str().unwrap_or("").contains(token), "{stored}");

    // it works: a task submitted from the page, audited as the token's
    b.goto(&format!("{base}/#/tasks")).await;
    b.until(
        "no second prompt",
        "!document.querySelector('#login').open && document.querySelector('#submit-agent option[value=echo]')",
    )
    .await;
    b.select("#submit-agent", "echo").await;
    b.type_into("#submit-input", "over TLS").await;
    b.click("#submit-task").await;
    let id = b.opened("the new task's page", "tasks").await;
    let done = api.wait_terminal(&id, WAIT).await;
    assert_eq!((&done["status"], &done["result"]), (&json!("succeeded"), &json!("over TLS")), "{done}");
    b.until("its events", "document.querySelector('#events li[data-kind=\"task.succeeded\"]')").await;
    let (_, audit) = api.get("/v1/audit?action=task.submit&limit=1000").await;
    let record = audit["items"].as_array().expect("items").iter().find(|r| r["target"] == json!(id)).cloned();
    assert_eq!(record.as_ref().map(|r| &r["actor"]), Some(&json!("token")), "{audit}");

    // a reload keeps the sign-in (same tab); signing out forgets it
    b.cmd(reqwest::Method::POST, "/refresh", Some(json!({}))).await;
    b.show("#/nodes").await;
    b.until(
        "the nodes without a prompt",
        "!document.querySelector('#login').open && document.querySelector('#node-rows tr[data-status=alive]')",
    )
    .await;
    b.click("#signout").await;
    b.until(
        "the prompt after signing out",
        "document.querySelector('#login').open && sessionStorage.getItem('smith.token') === null",
    )
    .await;

    let errors = b.page_errors().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}
