//! `sparkctl top`: a live view of the daemon, redrawn every interval: per namespace the hit rate, operations
//! per second, entries and bytes; the daemon's clients and uptime. Rates are the difference between two
//! polls of the ordinary Stats and Namespaces requests, so any daemon that answers them can be watched.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use spark_client::{Client, NamespaceStats};

use crate::Failure;
use crate::output::{human_bytes, human_duration};

/// One namespace's counters at one poll.
#[derive(Clone, Copy, Default)]
struct Sample {
    hits: u64,
    misses: u64,
    puts: u64,
    entries: u64,
    memory: u64,
    disk: u64,
}

impl Sample {
    fn of(ns: &NamespaceStats) -> Sample {
        let get = |k: &str| {
            ns.counters
                .iter()
                .find(|(n, _)| n == k)
                .map_or(0, |(_, v)| *v)
        };
        Sample {
            hits: get("hits"),
            misses: get("misses"),
            puts: get("puts"),
            entries: get("entries"),
            memory: get("bytes_in_memory"),
            disk: get("bytes_on_disk"),
        }
    }

    fn ops(&self) -> u64 {
        self.hits + self.misses + self.puts
    }
}

/// Runs until interrupted, or for `iterations` redraws when that is not 0.
pub fn run(client: &Client, interval: Duration, iterations: u64) -> Result<(), Failure> {
    let tty = std::io::stdout().is_terminal();
    let mut prev: Vec<(String, Sample)> = Vec::new();
    let mut prev_at = Instant::now();
    let mut n = 0u64;
    loop {
        let stats = client.stats()?;
        let spaces = client.namespaces()?;
        let now = Instant::now();
        let dt = now.duration_since(prev_at).as_secs_f64().max(1e-3);
        let mut screen = String::new();
        if tty {
            // Home and clear: redraw in place.
            screen.push_str("\x1b[H\x1b[2J");
        }
        let hello = client.hello();
        screen.push_str(&format!(
            "sparkd {} pid {}  up {}  clients {} (total {})\n\n",
            hello.daemon_version,
            hello.daemon_pid,
            human_duration(stats.uptime_secs),
            stats.current_connections,
            stats.total_connections
        ));
        screen.push_str(&format!(
            "{:<10} {:>7} {:>9} {:>10} {:>10} {:>9} {:>10} {:>10}\n",
            "NAMESPACE", "HIT%", "OPS/S", "GETS", "PUTS", "ENTRIES", "MEMORY", "DISK"
        ));
        let mut next = Vec::with_capacity(spaces.len());
        for ns in &spaces {
            let s = Sample::of(ns);
            let p = prev
                .iter()
                .find(|(name, _)| *name == ns.name)
                .map(|(_, p)| *p);
            // The first frame has no earlier poll: rates start at 0.
            let rate = p.map_or(0.0, |p| s.ops().saturating_sub(p.ops()) as f64 / dt);
            let gets = s.hits + s.misses;
            let hit = if gets == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", 100.0 * s.hits as f64 / gets as f64)
            };
            screen.push_str(&format!(
                "{:<10} {:>7} {:>9.0} {:>10} {:>10} {:>9} {:>10} {:>10}\n",
                ns.name,
                hit,
                rate,
                gets,
                s.puts,
                s.entries,
                human_bytes(s.memory),
                human_bytes(s.disk)
            ));
            next.push((ns.name.clone(), s));
        }
        if tty {
            screen.push_str("\n(q: Ctrl-C)\n");
        } else {
            screen.push('\n');
        }
        out!("{screen}");
        use std::io::Write as _;
        if let Err(e) = std::io::stdout().flush() {
            crate::output_failed(e);
        }
        prev = next;
        prev_at = now;
        n += 1;
        if iterations != 0 && n >= iterations {
            return Ok(());
        }
        std::thread::sleep(interval);
    }
}
