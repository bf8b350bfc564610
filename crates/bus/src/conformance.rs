//! The conformance suite every bus backend must pass, run per backend by [`bus_conformance!`](crate::bus_conformance).
//!
//! Each check takes a fresh `Arc<dyn Bus>` and panics on failure. Only the trait
//! contract is tested, so a networked broker passes unchanged: messages are awaited
//! with a timeout, the suite pauses briefly after subscribing (a real broker needs the
//! subscription to reach it), and every check uses its own random subject prefix
//! because tests run concurrently against one shared server.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::{Bus, Error, Message, Subscription};

/// How long to wait for a message that should arrive.
const ARRIVAL: Duration = Duration::from_secs(2);
/// How long to wait before concluding that a message will not arrive.
const SILENCE: Duration = Duration::from_millis(150);
/// Pause after subscribing so a broker has the subscription before we publish.
const SETTLE: Duration = Duration::from_millis(50);

/// Runs every check as one `#[tokio::test]`, each with a fresh bus from the async
/// `$factory` expression. The calling crate needs `tokio` (with `macros`) as a
/// dependency; invoke once per module, e.g.
///
/// ```no_run
/// mod memory {
///     smith_bus::bus_conformance!(async { smith_bus::open("memory://").await.unwrap() });
/// }
/// ```
///
/// A backend that needs a server can skip every check, with a printed reason, while an
/// environment variable is unset; the factory runs only when it is set:
///
/// ```no_run
/// mod nats {
///     smith_bus::bus_conformance!(
///         skip_unless_env = "SMITH_TEST_NATS_URL",
///         smith_bus::conformance::open_env("SMITH_TEST_NATS_URL", "")
///     );
/// }
/// ```
///
/// `networked` runs every check on the bus at the URL the variable names, opened afresh for
/// each, and also those only a networked backend passes (see
/// [`no_responders_is_reported_at_once`] and the two after it):
///
/// ```no_run
/// mod conformance {
///     smith_bus::bus_conformance!(networked, skip_unless_env = "SMITH_TEST_NATS_URL");
/// }
/// ```
#[macro_export]
macro_rules! bus_conformance {
    (skip_unless_env = $var:literal, $factory:expr) => {
        $crate::bus_conformance!(@checks { $crate::bus_conformance!(@skip $var); } $factory);
    };
    (networked, skip_unless_env = $var:literal) => {
        $crate::bus_conformance!(@checks { $crate::bus_conformance!(@skip $var); }
            $crate::conformance::open_env($var, ""));
        $crate::bus_conformance!(@networked { $crate::bus_conformance!(@skip $var); } $var);
    };
    ($factory:expr) => {
        $crate::bus_conformance!(@checks {} $factory);
    };
    (@skip $var:literal) => {
        if ::std::env::var_os($var).is_none() {
            ::std::println!("skipped: {} not set", $var);
            return;
        }
    };
    (@networked $skip:block $var:literal) => {
        #[tokio::test]
        async fn no_responders_is_reported_at_once() {
            $skip
            let bus = $crate::conformance::open_env($var, "").await;
            $crate::conformance::no_responders_is_reported_at_once(bus).await;
        }

        #[tokio::test]
        async fn full_subscriber_drops_only_its_own() {
            $skip
            let bus = $crate::conformance::open_env($var, "capacity=16").await;
            $crate::conformance::full_subscriber_drops_only_its_own(bus, 16).await;
        }

        #[tokio::test]
        async fn subscription_ends_when_the_bus_is_dropped() {
            $skip
            let bus = $crate::conformance::open_env($var, "").await;
            $crate::conformance::subscription_ends_when_the_bus_is_dropped(bus).await;
        }
    };
    (@checks $skip:block $factory:expr) => {
        $crate::bus_conformance!(@tests $skip $factory;
            exact_subject_in_order,
            single_token_wildcard,
            tail_wildcard,
            no_delivery_to_non_matching,
            every_subscriber_gets_a_copy,
            queue_group_delivers_once_per_group,
            request_reply_round_trip,
            request_without_responders,
            request_times_out,
            invalid_subjects_rejected,
            dropped_subscription_stops_receiving,
            order_preserved_for_10k_messages,
        );
    };
    (@tests $skip:block $factory:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                $skip
                let bus: ::std::sync::Arc<dyn $crate::Bus> = $factory.await;
                $crate::conformance::$check(bus).await;
            }
        )*
    };
}

/// A subject (or prefix) no other test run shares: `cfm.<random>.<name>`.
pub fn unique(name: &str) -> String {
    format!("cfm.{:016x}.{name}", fastrand::u64(..))
}

fn text(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn settle() {
    tokio::time::sleep(SETTLE).await;
}

async fn next(sub: &mut Subscription, what: &str) -> Message {
    match tokio::time::timeout(ARRIVAL, sub.recv()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("{what}: subscription closed"),
        Err(_) => panic!("{what}: nothing arrived within {ARRIVAL:?}"),
    }
}

/// Receives messages until `marker` arrives; returns the payloads seen before it.
/// Since one publisher's messages arrive in order, whatever was published before the
/// marker and is not returned was not delivered.
async fn until_marker(sub: &mut Subscription, marker: &str, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let message = next(sub, what).await;
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        if payload == marker {
            return seen;
        }
        seen.push(payload);
    }
}

async fn publish(bus: &Arc<dyn Bus>, subject: &str, payload: &str) {
    if let Err(e) = bus.publish(subject, text(payload)).await {
        panic!("publish to {subject}: {e}");
    }
}

/// Publishes each `(suffix, payload)` on `{prefix}{suffix}`, in order.
async fn publish_each(bus: &Arc<dyn Bus>, prefix: &str, messages: &[(&str, &str)]) {
    for (suffix, payload) in messages {
        publish(bus, &format!("{prefix}{suffix}"), payload).await;
    }
}

async fn subscribe(bus: &Arc<dyn Bus>, pattern: &str) -> Subscription {
    match bus.subscribe(pattern).await {
        Ok(sub) => sub,
        Err(e) => panic!("subscribe to {pattern}: {e}"),
    }
}

/// Messages on one subject arrive with their subject and payload, in publish order.
pub async fn exact_subject_in_order(bus: Arc<dyn Bus>) {
    let subject = unique("exact");
    let mut sub = subscribe(&bus, &subject).await;
    settle().await;
    for i in 0..5 {
        publish(&bus, &subject, &format!("m{i}")).await;
    }
    for i in 0..5 {
        let message = next(&mut sub, "exact subject").await;
        assert_eq!(message.subject, subject);
        assert_eq!(message.payload, text(&format!("m{i}")));
        assert_eq!(message.reply, None);
    }
}

/// `*` matches exactly one token, in any position.
pub async fn single_token_wildcard(bus: Arc<dyn Bus>) {
    let p = unique("star");
    let mut last = subscribe(&bus, &format!("{p}.*")).await;
    let mut middle = subscribe(&bus, &format!("{p}.*.end")).await;
    settle().await;
    let messages = [("", "bare"), (".a", "one"), (".a.b", "two"), (".a.end", "middle"), (".a.b.end", "deep")];
    publish_each(&bus, &p, &messages).await;
    publish(&bus, &format!("{p}.end"), "marker").await;
    // `{p}.end` matches `{p}.*`, so it is both a message and the marker there.
    assert_eq!(until_marker(&mut last, "marker", "p.*").await, ["one"]);
    publish(&bus, &format!("{p}.z.end"), "marker").await;
    assert_eq!(until_marker(&mut middle, "marker", "p.*.end").await, ["middle"]);
}

/// `>` matches one or more trailing tokens, never zero.
pub async fn tail_wildcard(bus: Arc<dyn Bus>) {
    let p = unique("tail");
    let mut sub = subscribe(&bus, &format!("{p}.>")).await;
    settle().await;
    publish_each(&bus, &p, &[("", "zero"), (".a", "one"), (".a.b.c", "three"), ("x.a", "other prefix")]).await;
    publish(&bus, &format!("{p}.end"), "marker").await;
    assert_eq!(until_marker(&mut sub, "marker", "p.>").await, ["one", "three"]);
}

/// A subscription sees nothing published on other subjects.
pub async fn no_delivery_to_non_matching(bus: Arc<dyn Bus>) {
    let p = unique("exclusive");
    let subject = format!("{p}.a.b");
    let mut sub = subscribe(&bus, &subject).await;
    settle().await;
    for other in
        [p.clone(), format!("{p}.a"), format!("{p}.a.b.c"), format!("{p}.a.c"), format!("{p}.x.b"), format!("{p}.A.b")]
    {
        publish(&bus, &other, "stray").await;
    }
    publish(&bus, &subject, "marker").await;
    assert!(until_marker(&mut sub, "marker", "exact").await.is_empty());
    let extra = tokio::time::timeout(SILENCE, sub.recv()).await;
    assert!(extra.is_err(), "unexpected message: {extra:?}");
}

/// Every plain subscriber, exact or wildcard, gets its own copy of each message.
pub async fn every_subscriber_gets_a_copy(bus: Arc<dyn Bus>) {
    let p = unique("fanout");
    let subject = format!("{p}.x");
    let mut subs = Vec::new();
    for pattern in [subject.clone(), subject.clone(), format!("{p}.*"), format!("{p}.>")] {
        subs.push(subscribe(&bus, &pattern).await);
    }
    settle().await;
    for i in 0..3 {
        publish(&bus, &subject, &i.to_string()).await;
    }
    for (n, sub) in subs.iter_mut().enumerate() {
        for i in 0..3 {
            let message = next(sub, &format!("subscriber {n}")).await;
            assert_eq!(message.payload, text(&i.to_string()), "subscriber {n}");
        }
    }
}

/// Each queue group gets each message exactly once, spread over its members; plain
/// subscribers still get every message.
pub async fn queue_group_delivers_once_per_group(bus: Arc<dyn Bus>) {
    const N: usize = 90;
    let p = unique("queue");
    let subject = format!("{p}.job");
    // (group, members)
    let groups = [("workers", 3), ("auditors", 2)];
    let mut streams = Vec::new();
    for (g, (group, members)) in groups.iter().enumerate() {
        for m in 0..*members {
            let sub = match bus.queue_subscribe(&subject, group).await {
                Ok(sub) => sub,
                Err(e) => panic!("queue_subscribe {group}: {e}"),
            };
            streams.push(sub.map(move |message| (Some((g, m)), message)).boxed());
        }
    }
    let plain = subscribe(&bus, &format!("{p}.*")).await;
    streams.push(plain.map(|message| (None, message)).boxed());
    let mut all = futures_util::stream::select_all(streams);
    settle().await;

    for i in 0..N {
        publish(&bus, &subject, &i.to_string()).await;
    }

    // received[g][m] = payloads member m of group g got
    let mut received: Vec<Vec<Vec<usize>>> = groups.iter().map(|(_, members)| vec![Vec::new(); *members]).collect();
    let mut plain_received = Vec::new();
    let expected = N * (groups.len() + 1);
    for count in 0..expected {
        let Ok(Some((member, message))) = tokio::time::timeout(ARRIVAL, all.next()).await else {
            panic!("only {count} of {expected} deliveries arrived");
        };
        let i: usize = std::str::from_utf8(&message.payload).unwrap().parse().unwrap();
        match member {
            Some((g, m)) => received[g][m].push(i),
            None => plain_received.push(i),
        }
    }
    let extra = tokio::time::timeout(SILENCE, all.next()).await;
    assert!(extra.is_err(), "delivered more than once: {extra:?}");

    assert_eq!(plain_received, (0..N).collect::<Vec<_>>(), "plain subscriber");
    for (g, (group, _)) in groups.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for (m, got) in received[g].iter().enumerate() {
            assert!(!got.is_empty(), "{group} member {m} got nothing of {N}");
            for &i in got {
                assert!(seen.insert(i), "{group} got message {i} twice");
            }
        }
        assert_eq!(seen.len(), N, "{group} missed messages");
    }
}

/// A request reaches a responder with a reply subject and the answer comes back;
/// responding to a message without a reply subject is an error.
pub async fn request_reply_round_trip(bus: Arc<dyn Bus>) {
    let subject = unique("echo");
    let mut service = subscribe(&bus, &subject).await;
    settle().await;

    publish(&bus, &subject, "no reply wanted").await;
    let plain = next(&mut service, "plain publish").await;
    assert_eq!(plain.reply, None);
    assert!(bus.respond(&plain, text("x")).await.is_err());

    let responder = bus.clone();
    let task = tokio::spawn(async move {
        let request = next(&mut service, "request").await;
        assert!(request.reply.is_some(), "request without reply subject");
        let answer = String::from_utf8_lossy(&request.payload).to_uppercase();
        responder.respond(&request, text(&answer)).await.unwrap();
        request
    });
    let reply = match bus.request(&subject, text("ping"), ARRIVAL).await {
        Ok(reply) => reply,
        Err(e) => panic!("request: {e}"),
    };
    assert_eq!(reply.payload, text("PING"));
    let request = task.await.unwrap();
    assert_eq!(request.subject, subject);
    assert_eq!(request.payload, text("ping"));
    assert_eq!(Some(reply.subject), request.reply);
}

/// A request nobody listens to fails: `NoResponders` where the backend can tell, else `Timeout`.
pub async fn request_without_responders(bus: Arc<dyn Bus>) {
    let subject = unique("void");
    let started = Instant::now();
    let result = bus.request(&subject, text("anyone?"), Duration::from_millis(500)).await;
    match result {
        Err(Error::NoResponders(_)) | Err(Error::Timeout) => {}
        other => panic!("expected NoResponders or Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < ARRIVAL, "took {:?}", started.elapsed());
}

/// A request whose responder never answers times out after about `timeout`.
pub async fn request_times_out(bus: Arc<dyn Bus>) {
    let subject = unique("silent");
    let mut service = subscribe(&bus, &subject).await;
    settle().await;
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let result = bus.request(&subject, text("hello?"), timeout).await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout)), "expected Timeout, got {result:?}");
    assert!(elapsed >= timeout, "gave up after {elapsed:?}");
    assert!(elapsed < ARRIVAL, "took {elapsed:?}");
    // The request did reach the responder.
    assert_eq!(next(&mut service, "request").await.payload, text("hello?"));
}

/// Malformed subjects and patterns are rejected with `InvalidSubject`.
pub async fn invalid_subjects_rejected(bus: Arc<dyn Bus>) {
    let expect_invalid = |what: String, result: Result<(), Error>| match result {
        Err(Error::InvalidSubject(_)) => {}
        other => panic!("{what}: expected InvalidSubject, got {other:?}"),
    };
    let long = format!("a.{}", "b".repeat(crate::subjects::MAX_SUBJECT_LEN));
    let bad_subjects = ["", "a..b", ".a", "a.", "a.*", "*", "a.>", ">", "a b", "a\tb", "a.b\n"];
    for subject in bad_subjects.iter().copied().chain([long.as_str()]) {
        expect_invalid(format!("publish {subject:?}"), bus.publish(subject, text("x")).await);
        expect_invalid(format!("request {subject:?}"), bus.request(subject, text("x"), SILENCE).await.map(drop));
    }
    let bad_patterns = ["", "a..b", "a.>.b", ">.a", "a b", "a.* "];
    for pattern in bad_patterns.iter().copied().chain([long.as_str()]) {
        expect_invalid(format!("subscribe {pattern:?}"), bus.subscribe(pattern).await.map(drop));
        expect_invalid(format!("queue_subscribe {pattern:?}"), bus.queue_subscribe(pattern, "g").await.map(drop));
    }
    // The same bus still works.
    let subject = unique("valid");
    let mut sub = subscribe(&bus, &format!("{subject}.*.>")).await;
    settle().await;
    publish(&bus, &format!("{subject}.a.b"), "ok").await;
    assert_eq!(next(&mut sub, "valid").await.payload, text("ok"));
}

/// Dropping a subscription unsubscribes it; publishing and other subscribers carry on.
pub async fn dropped_subscription_stops_receiving(bus: Arc<dyn Bus>) {
    let subject = unique("dropped");
    let gone = subscribe(&bus, &subject).await;
    let mut kept = subscribe(&bus, &subject).await;
    let gone_member = bus.queue_subscribe(&subject, "g").await.unwrap();
    let mut kept_member = bus.queue_subscribe(&subject, "g").await.unwrap();
    settle().await;
    drop(gone);
    drop(gone_member);
    settle().await;
    for i in 0..10 {
        publish(&bus, &subject, &i.to_string()).await;
    }
    for i in 0..10 {
        assert_eq!(next(&mut kept, "kept").await.payload, text(&i.to_string()));
        // The group's remaining member now gets every message.
        let got = next(&mut kept_member, "kept group member").await;
        assert_eq!(got.payload, text(&i.to_string()));
    }
}

/// One publisher's messages reach one subscriber in order, 10,000 of them.
pub async fn order_preserved_for_10k_messages(bus: Arc<dyn Bus>) {
    const TOTAL: u32 = 10_000;
    // Keep at most this many in flight so a bounded buffer never overflows.
    const WINDOW: u32 = 1_000;
    let subject = unique("order");
    let mut sub = subscribe(&bus, &subject).await;
    settle().await;
    let mut sent = 0;
    while sent < TOTAL {
        let end = (sent + WINDOW).min(TOTAL);
        for i in sent..end {
            if let Err(e) = bus.publish(&subject, Bytes::from(i.to_be_bytes().to_vec())).await {
                panic!("publish {i}: {e}");
            }
        }
        for i in sent..end {
            let message = next(&mut sub, &format!("message {i}")).await;
            let got = u32::from_be_bytes(message.payload[..].try_into().expect("4-byte payload"));
            assert_eq!(got, i, "out of order");
        }
        sent = end;
    }
    assert_eq!(sub.dropped(), 0);
}

// Checks of the networked backends (NATS, AMQP), which their own tests call with the bus each
// needs: the in-process bus answers these differently by design (it knows its subscribers, and
// its buffers fill synchronously).

/// A request nobody serves is `NoResponders` at once (the broker says so), never a timeout.
pub async fn no_responders_is_reported_at_once(bus: Arc<dyn Bus>) {
    let started = Instant::now();
    let result = bus.request(&unique("nobody"), Bytes::new(), Duration::from_secs(5)).await;
    assert!(matches!(result, Err(Error::NoResponders(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

/// A subscriber that never reads loses only its own messages, counted; others get all. `bus`
/// gives each subscription a buffer of `capacity` messages.
pub async fn full_subscriber_drops_only_its_own(bus: Arc<dyn Bus>, capacity: usize) {
    const TOTAL: usize = 1_000;
    let subject = unique("slow");
    let slow = subscribe(&bus, &subject).await;
    let mut fast = subscribe(&bus, &subject).await;
    settle().await;

    // In windows smaller than the buffer, so the reading subscriber never overflows.
    for window in (0..TOTAL).collect::<Vec<_>>().chunks(capacity / 2) {
        for i in window {
            publish(&bus, &subject, &i.to_string()).await;
        }
        for i in window {
            assert_eq!(next(&mut fast, &format!("message {i}")).await.payload, text(&i.to_string()));
        }
    }
    assert_eq!(fast.dropped(), 0);
    // The slow one's forwarder may still be catching up with what the broker sent.
    let deadline = Instant::now() + ARRIVAL;
    while slow.dropped() < (TOTAL - capacity) as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(slow.dropped(), (TOTAL - capacity) as u64);
}

/// Dropping the last handle of the bus ends its subscriptions instead of leaving them hanging.
pub async fn subscription_ends_when_the_bus_is_dropped(bus: Arc<dyn Bus>) {
    let subject = unique("bus-dropped");
    let mut sub = subscribe(&bus, &subject).await;
    settle().await;
    publish(&bus, &subject, "ping").await;
    assert_eq!(next(&mut sub, "the round trip").await.payload, text("ping"));
    drop(bus);
    let end = tokio::time::timeout(ARRIVAL, sub.recv()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");
}

// Helpers for the backends' own tests.

/// The bus at the URL in the environment variable `var`, with `option` (`key=value`, or
/// empty) added to the URL's query; panics naming the URL when it cannot be opened.
pub async fn open_env(var: &str, option: &str) -> Arc<dyn Bus> {
    let Ok(mut url) = std::env::var(var) else { panic!("{var} is not set") };
    if !option.is_empty() {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(option);
    }
    match crate::open(&url).await {
        Ok(bus) => bus,
        Err(e) => panic!("cannot open {url}: {e}"),
    }
}

/// Checks the message of `url`'s error: it holds every one of `words` and never the password
/// `s3cret` the tests put in URLs.
pub fn assert_error_says(url: &str, err: &Error, words: &[impl AsRef<str>]) {
    let text = err.to_string();
    for word in words {
        let word = word.as_ref();
        assert!(text.contains(word), "{url}: {text:?} lacks {word:?}");
    }
    assert!(!text.contains("s3cret"), "{url}: {text:?} leaks the password");
}

/// `result`, of parsing or opening `url`, must be a configuration error that says `words`
/// (see [`assert_error_says`]).
pub fn assert_config_error<T>(url: &str, result: Result<T, Error>, words: &[impl AsRef<str>]) {
    let err = match result {
        Ok(_) => panic!("{url} should be rejected"),
        Err(err) => err,
    };
    assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
    assert_error_says(url, &err, words);
}

/// Opening `url` fails within 6 s: with a configuration error (`config`), or else as
/// unavailable (a broker that is not there or does not answer); either way saying `words`.
pub async fn open_fails_fast_and_clearly(url: &str, config: bool, words: &[impl AsRef<str>]) {
    let started = Instant::now();
    let err = match crate::open(url).await {
        Ok(_) => panic!("{url} should fail"),
        Err(err) => err,
    };
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(6), "{url}: took {elapsed:?}");
    if config {
        assert!(matches!(err, Error::Config(_)), "{url}: {err:?}");
    } else {
        assert!(matches!(err, Error::Backend(_)), "{url}: {err:?}");
        assert_eq!(err.code(), smith_core::Code::Unavailable);
    }
    assert_error_says(url, &err, words);
    println!("{url}: {err} ({elapsed:?})");
}

/// Publishes `hello` on `subject` and expects `sub` (subscribed to it) to get it.
pub async fn round_trip(bus: &dyn Bus, subject: &str, sub: &mut Subscription) {
    settle().await;
    if let Err(e) = bus.publish(subject, Bytes::from_static(b"hello")).await {
        panic!("publish to {subject}: {e}");
    }
    assert_eq!(next(sub, subject).await.payload, "hello");
}

/// With the broker gone, once the bus has noticed, publishing fails at once (never blocks)
/// and requests fail too, both as `Backend` errors.
pub async fn fails_fast_while_down(bus: &dyn Bus, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let started = Instant::now();
        let result = bus.publish(subject, Bytes::from_static(b"lost")).await;
        assert!(started.elapsed() < Duration::from_millis(500), "publish blocked {:?}", started.elapsed());
        if let Err(err) = result {
            assert!(matches!(err, Error::Backend(_)), "{err:?}");
            break;
        }
        assert!(Instant::now() < deadline, "publish kept succeeding with the broker gone");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = bus.request(subject, Bytes::new(), Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, Error::Backend(_)), "{err:?}");
}

/// Publishes `again N` on `subject` until `sub` hears one, which must be within 10 s of
/// `since` (the broker came back); returns what it heard and after how many publishes.
pub async fn publish_until_heard(
    bus: &dyn Bus,
    subject: &str,
    sub: &mut Subscription,
    since: Instant,
) -> (Message, u32) {
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(since.elapsed() < Duration::from_secs(10), "{subject}: no delivery 10 s after the broker came back");
        // Failures are expected until the bus has reconnected.
        let _ = bus.publish(subject, Bytes::from(format!("again {attempts}"))).await;
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            assert!(message.payload.starts_with(b"again"), "{message:?}");
            return (message, attempts);
        }
    }
}

/// Makes a private CA and a certificate it signs for `localhost` in `dir` with `openssl` (the
/// binary at that path): `ca.pem`, and `leaf.pem` with its key `leaf.key`. `newkey` is the key
/// `openssl req -newkey` makes (`rsa:2048`, `ec -pkeyopt ec_paramgen_curve:P-256`);
/// `extensions` are the leaf's (`subjectAltName=…`, one a line). `dir` holds no spaces.
pub async fn make_certificates(openssl: &str, dir: &std::path::Path, newkey: &str, extensions: &str) {
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    std::fs::write(file("leaf.ext"), extensions).unwrap();
    let new = format!("-newkey {newkey} -nodes");
    let steps = [
        format!("req -x509 {new} -days 1 -subj /CN=smith-test-CA -keyout {} -out {}", file("ca.key"), file("ca.pem")),
        format!("req {new} -subj /CN=localhost -keyout {} -out {}", file("leaf.key"), file("leaf.csr")),
        format!(
            "x509 -req -days 1 -CAcreateserial -in {} -CA {} -CAkey {} -extfile {} -out {}",
            file("leaf.csr"),
            file("ca.pem"),
            file("ca.key"),
            file("leaf.ext"),
            file("leaf.pem")
        ),
    ];
    for step in steps {
        let out = tokio::process::Command::new(openssl).args(step.split(' ')).output().await.unwrap();
        assert!(out.status.success(), "openssl {step}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
