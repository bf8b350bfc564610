//! A quick throughput and latency check of any bus URL: a burst of small messages to one
//! subscriber, then a paced stream with end-to-end latency percentiles.
//!
//! ```text
//! cargo run --release -p smith-bus --example throughput -- amqp://guest:guest@127.0.0.1:5672/%2f
//! cargo run --release -p smith-bus --example throughput -- nats://127.0.0.1:4222 100000 3375 5
//! ```
//!
//! Arguments: URL (default `memory://`), burst size (100,000), paced rate in messages per
//! second (3,375), paced duration in seconds (5). Payloads are 16 bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smith_bus::{Bus, Subscription};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args.first().cloned().unwrap_or_else(|| "memory://".into());
    let number = |i: usize, default: u64| args.get(i).map_or(default, |a| a.parse().expect("a number"));
    let burst = number(1, 100_000);
    let rate = number(2, 3_375);
    let seconds = number(3, 5);

    let bus = smith_bus::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
    println!("bus: {}", url.split('@').next_back().unwrap_or(&url));

    let subject = format!("bench.{:08x}.burst", fastrand::u32(..));
    let sub = bus.subscribe(&subject).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let receiver = tokio::spawn(receive(sub, burst, started));
    for i in 0..burst {
        bus.publish(&subject, payload(i, started)).await.unwrap();
    }
    let published = started.elapsed();
    let (received, dropped, latencies, done) = receiver.await.unwrap();
    println!(
        "burst: {burst} published in {published:.2?} ({:.0} msg/s), {received} received in {done:.2?} ({:.0} msg/s), {dropped} dropped",
        burst as f64 / published.as_secs_f64(),
        received as f64 / done.as_secs_f64(),
    );
    report("burst latency", latencies);

    let subject = format!("bench.{:08x}.paced", fastrand::u32(..));
    let sub = bus.subscribe(&subject).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let total = rate * seconds;
    let started = Instant::now();
    let receiver = tokio::spawn(receive(sub, total, started));
    paced(&bus, &subject, total, rate, started).await;
    let (received, dropped, latencies, _) = receiver.await.unwrap();
    println!("paced: {total} at {rate} msg/s over {seconds} s: {received} received, {dropped} dropped");
    report("paced latency", latencies);
}

/// Publishes `total` messages at `rate` per second, in ticks of 1 ms.
async fn paced(bus: &Arc<dyn Bus>, subject: &str, total: u64, rate: u64, started: Instant) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0;
    while sent < total {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(total) {
            bus.publish(subject, payload(sent, started)).await.unwrap();
            sent += 1;
        }
    }
}

/// Sequence number and send time (nanoseconds since `started`).
fn payload(i: u64, started: Instant) -> Bytes {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&i.to_be_bytes());
    bytes.extend_from_slice(&(started.elapsed().as_nanos() as u64).to_be_bytes());
    Bytes::from(bytes)
}

/// Receives until message `expected - 1` or 2 s of silence; returns (received, dropped,
/// latencies, time of the last arrival since `started`).
async fn receive(mut sub: Subscription, expected: u64, started: Instant) -> (u64, u64, Vec<Duration>, Duration) {
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut last = Duration::ZERO;
    while let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(2), sub.recv()).await {
        let i = u64::from_be_bytes(message.payload[..8].try_into().unwrap());
        let sent = u64::from_be_bytes(message.payload[8..16].try_into().unwrap());
        last = started.elapsed();
        latencies.push(last.saturating_sub(Duration::from_nanos(sent)));
        if i + 1 == expected {
            break;
        }
    }
    (latencies.len() as u64, sub.dropped(), latencies, last)
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    if latencies.is_empty() {
        println!("{what}: nothing received");
        return;
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!("{what}: p50 {:.2?}, p99 {:.2?}, max {:.2?}", at(0.5), at(0.99), at(1.0));
}
