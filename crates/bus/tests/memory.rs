//! Runs the bus conformance suite against the in-process backend (bare, and instrumented over
//! a namespace), plus its own checks.

use std::time::Duration;

use bytes::Bytes;
use smith_bus::memory::MemoryBus;
use smith_bus::{subjects, Bus};

mod conformance {
    smith_bus::bus_conformance!(async { smith_bus::open("memory://").await.unwrap() });
}

/// The same contract through the metrics wrapper, over a namespace.
mod instrumented {
    smith_bus::bus_conformance!(async {
        smith_bus::instrument(smith_bus::open("memory://?namespace=t").await.unwrap())
    });
}

/// A full subscriber loses only its own messages, counts them, and slows nobody down.
#[tokio::test]
async fn full_subscriber_drops_only_its_own() {
    let bus = MemoryBus::with_capacity(16);
    let slow = bus.subscribe(subjects::ALL_EVENTS).await.unwrap();
    let mut fast = bus.subscribe(subjects::ALL_EVENTS).await.unwrap();
    let subject = subjects::task_events("coder", "0190a0b1-0000-7000-8000-000000000000");

    let consumer = tokio::spawn(async move {
        let mut got = 0u32;
        while got < 1_000 {
            let message = fast.recv().await.unwrap();
            assert_eq!(message.payload, Bytes::from(got.to_be_bytes().to_vec()));
            got += 1;
        }
        fast
    });
    for i in 0u32..1_000 {
        bus.publish(&subject, Bytes::from(i.to_be_bytes().to_vec())).await.unwrap();
        // Let the fast consumer keep up; the slow one never reads.
        if i % 8 == 7 {
            tokio::task::yield_now().await;
        }
    }
    let fast =
        tokio::time::timeout(Duration::from_secs(2), consumer).await.expect("fast subscriber fell behind").unwrap();
    assert_eq!(fast.dropped(), 0);
    assert_eq!(slow.dropped(), 1_000 - 16);
}

#[tokio::test]
async fn system_subjects_route() {
    let bus = MemoryBus::new();
    let mut wakes = bus.subscribe(subjects::ALL_WAKES).await.unwrap();
    let mut cancels = bus.subscribe(subjects::CANCEL).await.unwrap();
    bus.publish(&subjects::wake("coder"), Bytes::new()).await.unwrap();
    bus.publish(subjects::CANCEL, Bytes::from_static(b"task-1")).await.unwrap();
    bus.publish(subjects::SYSTEM, Bytes::new()).await.unwrap();
    assert_eq!(wakes.try_recv().unwrap().subject, "smith.wake.coder");
    assert_eq!(cancels.try_recv().unwrap().payload, "task-1");
    assert!(wakes.try_recv().is_none());
    assert!(cancels.try_recv().is_none());
}
