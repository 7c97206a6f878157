//! Edits are picked up while other processes keep every core busy. Its own
//! test binary: cargo runs test binaries one at a time, so the busy threads
//! here slow no other test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;

/// Threads that spin on every core until dropped, at normal priority: a
/// backup or a build on the box sinkd runs on.
struct BusyCores {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl BusyCores {
    fn start() -> BusyCores {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2 * cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        BusyCores { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_and_a_hosts_edit_are_picked_up_while_every_core_is_busy() {
    let upstream = Upstream::start(|req| {
        let owner = req.queries[0].name().to_string();
        Reply::Answer(answer(req, vec![a(&owner, 300, "192.0.2.1")]))
    })
    .await;
    let sinkd = Sinkd::start_with_files(
        &config_for(
            &[upstream.addr],
            "[blocking]\nlists = [\"lists/mine.txt\"]\n[local]\nhosts = [\"hosts\"]\n",
        ),
        &[
            ("lists/mine.txt", "ads.example.test\n"),
            ("hosts", "192.168.1.30 tv\n"),
        ],
    );
    let blocked = |r: &hickory_proto::op::Message| rdatas(r) == ["0.0.0.0"];
    assert!(blocked(
        &ask(sinkd.addr, "ads.example.test.", RecordType::A).await
    ));
    assert!(!blocked(
        &ask(sinkd.addr, "tracker.example.test.", RecordType::A).await
    ));

    let busy = BusyCores::start();
    std::fs::write(
        sinkd.path("lists/mine.txt"),
        "ads.example.test\ntracker.example.test\n",
    )
    .unwrap();
    std::fs::write(sinkd.path("hosts"), "192.168.1.31 tv\n").unwrap();
    // The README promises well under a second; 2 s leaves room for a slow box.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let list = ask(sinkd.addr, "tracker.example.test.", RecordType::A).await;
        let hosts = ask(sinkd.addr, "tv.", RecordType::A).await;
        if blocked(&list) && rdatas(&hosts) == ["192.168.1.31"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "edits picked up on a busy machine: {}",
            sinkd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(busy);
}
