//! Leaks: 10,000 connect/request/disconnect cycles leave the daemon's open fds, threads and RSS flat.

mod common;

use std::time::Duration;

use common::*;
use spark_reliability::content::make_blob;
use spark_testkit::{Daemon, eventually, fd_count, status_kib, thread_count};

const CYCLES: u64 = 10_000;

fn cycle(d: &Daemon, i: u64) {
    let c = d.client();
    // A fixed set of keys, so the cache itself does not grow.
    let k = i % 16;
    match i % 4 {
        0 => {
            c.ping().unwrap();
        }
        1 => {
            assert!(put(&c, k, &make_blob(k, i, 2048)).unwrap());
        }
        2 => {
            get(&c, k).unwrap();
        }
        _ => {
            // A miss on a key never put, and the stats.
            get(&c, 1000 + k).unwrap();
            c.stats().unwrap();
        }
    }
}

#[test]
fn ten_thousand_connections_leave_fds_threads_and_rss_flat() {
    let d = Daemon::start(&[]);
    let pid = d.pid();
    for i in 0..500 {
        cycle(&d, i);
    }
    // Blocking-pool threads linger 2 s after use; let them go before taking the baseline.
    std::thread::sleep(Duration::from_secs(3));
    let (fds0, threads0, rss0) = (fd_count(pid), thread_count(pid), status_kib(pid, "VmRSS"));
    let t = std::time::Instant::now();
    for i in 0..CYCLES {
        cycle(&d, i);
    }
    let took = t.elapsed();
    let settled = eventually(Duration::from_secs(15), || {
        fd_count(pid) <= fds0 && thread_count(pid) <= threads0 + 1
    });
    let (fds1, threads1, rss1) = (fd_count(pid), thread_count(pid), status_kib(pid, "VmRSS"));
    eprintln!(
        "leaks: {CYCLES} cycles in {took:?}; fds {fds0} -> {fds1}, threads {threads0} -> {threads1}, \
         RSS {rss0} -> {rss1} KiB"
    );
    assert!(
        settled,
        "fds {fds0} -> {fds1}, threads {threads0} -> {threads1}"
    );
    assert!(fds1 <= fds0, "no fd leaked");
    assert!(threads1 <= threads0 + 1, "no thread leaked");
    let allowed = (rss0 / 4).max(8 * 1024);
    assert!(
        rss1 <= rss0 + allowed,
        "RSS grew {rss0} -> {rss1} KiB (allowed +{allowed})"
    );
}
