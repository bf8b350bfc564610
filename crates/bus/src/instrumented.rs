//! A [`Bus`] that counts the messages and bytes of another, times its publishes and counts
//! their failures, labelled by the subject's [`kind`](crate::subjects::kind).
//!
//! Wrap the outermost bus (`instrument(open(url)?)`): subjects are then the caller's own. Inside
//! a [`Namespaced`](crate::namespace::Namespaced) bus the kinds come out the same, since
//! [`subjects::kind`] looks past a namespace token, but messages a namespace drops for a slow
//! subscriber would count as delivered.

use crate::metrics::{BYTES, ERRORS, MESSAGES, PUBLISH_DURATION};
use crate::{subjects, Bus, Error, Message, Result, Subscription};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Instrumented(Arc<dyn Bus>);

/// Wraps `bus` so its traffic is measured.
pub fn instrument(bus: Arc<dyn Bus>) -> Arc<dyn Bus> {
    Arc::new(Instrumented(bus))
}

fn count(kind: &'static str, direction: &'static str, bytes: usize) {
    metrics::counter!(MESSAGES, "kind" => kind, "direction" => direction).increment(1);
    metrics::counter!(BYTES, "kind" => kind, "direction" => direction).increment(bytes as u64);
}

/// Counts each message the subscription hands to its reader, by its own subject's kind.
fn count_in(sub: Subscription) -> Subscription {
    sub.tapped(Box::new(|m: &Message| count(subjects::kind(&m.subject), "in", m.payload.len())))
}

/// Times a publish of `bytes` bytes and counts it, or its failure.
async fn publish(kind: &'static str, bytes: usize, sent: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let start = Instant::now();
    let out = sent.await;
    metrics::histogram!(PUBLISH_DURATION, "kind" => kind).record(start.elapsed().as_secs_f64());
    match &out {
        Ok(()) => count(kind, "out", bytes),
        Err(_) => metrics::counter!(ERRORS, "kind" => kind).increment(1),
    }
    out
}

#[async_trait]
impl Bus for Instrumented {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<()> {
        let bytes = payload.len();
        publish(subjects::kind(subject), bytes, self.0.publish(subject, payload)).await
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription> {
        Ok(count_in(self.0.subscribe(pattern).await?))
    }

    async fn queue_subscribe(&self, pattern: &str, group: &str) -> Result<Subscription> {
        Ok(count_in(self.0.queue_subscribe(pattern, group).await?))
    }

    /// The request counts out and its reply in, both by the request subject's kind (the
    /// reply's own subject is an inbox).
    async fn request(&self, subject: &str, payload: Bytes, timeout: Duration) -> Result<Message> {
        let kind = subjects::kind(subject);
        let bytes = payload.len();
        let out = self.0.request(subject, payload, timeout).await;
        match &out {
            Ok(reply) => {
                count(kind, "out", bytes);
                count(kind, "in", reply.payload.len());
            }
            // the request went out; the other side did not answer
            Err(Error::Timeout | Error::NoResponders(_)) => count(kind, "out", bytes),
            Err(_) => metrics::counter!(ERRORS, "kind" => kind).increment(1),
        }
        out
    }

    /// Counted by the kind of the request it answers.
    async fn respond(&self, msg: &Message, payload: Bytes) -> Result<()> {
        let bytes = payload.len();
        publish(subjects::kind(&msg.subject), bytes, self.0.respond(msg, payload)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBus;
    use futures_util::StreamExt;
    use metrics::{Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString};
    use std::sync::Mutex;

    /// A recorder that keeps counter increments and histogram records, as `name{label=value,…}`.
    #[derive(Default, Clone)]
    struct Seen(Arc<Mutex<Vec<(String, f64)>>>);

    struct Handle(String, Seen);

    impl CounterFn for Handle {
        fn increment(&self, v: u64) {
            self.1 .0.lock().unwrap().push((self.0.clone(), v as f64));
        }
        fn absolute(&self, _: u64) {}
    }
    impl HistogramFn for Handle {
        fn record(&self, v: f64) {
            self.1 .0.lock().unwrap().push((self.0.clone(), v));
        }
    }

    impl Seen {
        fn handle(&self, key: &Key) -> Arc<Handle> {
            let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
            Arc::new(Handle(format!("{}{{{}}}", key.name(), labels.join(",")), self.clone()))
        }
        /// The sum of what was recorded under `key`, and how many times.
        fn total(&self, key: &str) -> (f64, usize) {
            let seen = self.0.lock().unwrap();
            let values: Vec<f64> = seen.iter().filter(|(k, _)| k == key).map(|(_, v)| *v).collect();
            (values.iter().sum(), values.len())
        }
    }

    impl metrics::Recorder for Seen {
        fn describe_counter(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<metrics::Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.handle(key))
        }
    }

    #[test]
    fn traffic_is_counted_by_kind_and_direction() {
        let seen = Seen::default();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        metrics::with_local_recorder(&seen, || {
            rt.block_on(async {
                let bus = instrument(Arc::new(MemoryBus::new()));
                let mut wakes = bus.subscribe(subjects::ALL_WAKES).await.unwrap();
                let mut events = bus.subscribe(subjects::ALL_EVENTS).await.unwrap();
                bus.publish(&subjects::wake("coder"), Bytes::from_static(b"abc")).await.unwrap();
                bus.publish(&subjects::wake("coder"), Bytes::from_static(b"de")).await.unwrap();
                bus.publish(&subjects::task_events("coder", "t1"), Bytes::from_static(b"{}")).await.unwrap();
                assert!(bus.publish("bad subject", Bytes::new()).await.is_err());
                // every way of reading counts
                wakes.recv().await.unwrap();
                wakes.try_recv().unwrap();
                events.next().await.unwrap();

                let mut answers = bus.subscribe("svc.echo").await.unwrap();
                let responder = bus.clone();
                let server = tokio::spawn(async move {
                    let m = answers.recv().await.unwrap();
                    responder.respond(&m, Bytes::from_static(b"pong!")).await.unwrap();
                });
                let reply = bus.request("svc.echo", Bytes::from_static(b"ping"), Duration::from_secs(2)).await.unwrap();
                assert_eq!(reply.payload, "pong!");
                server.await.unwrap();
            })
        });
        let total = |k: &str| seen.total(k);
        assert_eq!(total("smith_bus_messages_total{kind=wake,direction=out}"), (2.0, 2));
        assert_eq!(total("smith_bus_bytes_total{kind=wake,direction=out}").0, 5.0);
        assert_eq!(total("smith_bus_messages_total{kind=wake,direction=in}").0, 2.0);
        assert_eq!(total("smith_bus_bytes_total{kind=wake,direction=in}").0, 5.0);
        assert_eq!(total("smith_bus_messages_total{kind=events,direction=out}").0, 1.0);
        assert_eq!(total("smith_bus_messages_total{kind=events,direction=in}").0, 1.0);
        assert_eq!(total("smith_bus_publish_duration_seconds{kind=wake}").1, 2);
        assert_eq!(total("smith_bus_errors_total{kind=other}").0, 1.0);
        // request out + reply in; the request delivered in + response out
        assert_eq!(total("smith_bus_messages_total{kind=other,direction=out}").0, 2.0);
        assert_eq!(total("smith_bus_bytes_total{kind=other,direction=out}").0, 9.0);
        assert_eq!(total("smith_bus_messages_total{kind=other,direction=in}").0, 2.0);
        assert_eq!(total("smith_bus_bytes_total{kind=other,direction=in}").0, 9.0);
    }
}
