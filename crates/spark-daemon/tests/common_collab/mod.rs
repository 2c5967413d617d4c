//! Helpers the Collab tests share (local, fan-out and bridged).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use spark_client::{Client, CollabEvent};

/// The next Collab event on `c` matching `f`, skipping others; panics after `wait` (a bound, not a
/// measurement), naming `what` it waited for.
pub fn wait_for_event(
    c: &Client,
    what: &str,
    wait: Duration,
    mut f: impl FnMut(&CollabEvent) -> bool,
) -> CollabEvent {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(e) = c.collab().next_event(Duration::from_millis(200)).unwrap()
            && f(&e)
        {
            return e;
        }
    }
    panic!("no {what} within {wait:?}");
}
