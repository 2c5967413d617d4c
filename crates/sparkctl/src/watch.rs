//! `sparkctl watch`: live changes under a root, changes since a clock, and the daemon's watches.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use spark_client::spark_proto::watch::{Change, ChangeKind, RootInfo, format_clock};
use spark_client::{Client, Clock, WatchEvent, WatchSpec};

use crate::Failure;
use crate::args::WatchArgs;

pub fn run(client: &Client, a: &WatchArgs, json_out: bool) -> Result<(), Failure> {
    if a.root == "list" {
        return list(client, json_out);
    }
    let root = absolute(Path::new(&a.root))?;
    let since = match &a.since {
        Some(s) => Some(
            s.parse::<Clock>()
                .map_err(|e| Failure::Local(e.to_string()))?,
        ),
        None => None,
    };
    let spec = WatchSpec {
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        no_ignore_files: a.no_ignore,
        since,
    };
    if since.is_some() {
        return query(client, &root, &spec, json_out);
    }
    live(client, &root, &spec, a.count, json_out)
}

fn absolute(p: &Path) -> Result<PathBuf, Failure> {
    std::path::absolute(p).map_err(|e| Failure::Local(format!("{}: {e}", p.display())))
}

fn change_json(c: &Change) -> serde_json::Value {
    if c.kind == ChangeKind::Renamed {
        json!({"kind": c.kind.name(), "path": c.path, "to": c.to})
    } else {
        json!({"kind": c.kind.name(), "path": c.path})
    }
}

fn change_line(c: &Change) -> String {
    if c.kind == ChangeKind::Renamed {
        format!("{:<9} {} -> {}", c.kind.name(), c.path, c.to)
    } else {
        format!("{:<9} {}", c.kind.name(), c.path)
    }
}

fn query(client: &Client, root: &Path, spec: &WatchSpec, json_out: bool) -> Result<(), Failure> {
    let q = client.watch().query(root, spec)?;
    let clock = format_clock(q.instance, q.seq);
    if json_out {
        let changes: Vec<_> = q.changes.iter().map(change_json).collect();
        outln!(
            "{}",
            json!({"clock": clock, "fresh_instance": q.fresh_instance, "changes": changes})
        );
        return Ok(());
    }
    if q.fresh_instance {
        outln!(
            "fresh instance: no history back to that clock (the daemon restarted or lost it); rescan"
        );
    }
    for c in &q.changes {
        outln!("{}", change_line(c));
    }
    outln!("clock {clock}");
    Ok(())
}

fn live(
    client: &Client,
    root: &Path,
    spec: &WatchSpec,
    count: u64,
    json_out: bool,
) -> Result<(), Failure> {
    let r = client.watch().subscribe(root, spec)?;
    let clock = format_clock(r.instance, r.seq);
    if json_out {
        outln!(
            "{}",
            json!({"subscribed": r.subscription, "clock": clock, "watched_dirs": r.watched_dirs,
                "watched_files": r.watched_files})
        );
    } else {
        eprintln!(
            "watching {} ({} directories, {} paths) from clock {clock}",
            root.display(),
            r.watched_dirs,
            r.watched_files
        );
    }
    let mut batches = 0;
    while count == 0 || batches < count {
        let Some(ev) = client.watch().next_event(Duration::from_secs(3600))? else {
            continue;
        };
        batches += 1;
        if !print_event(&ev, json_out) {
            return Err(Failure::Daemon("the watch ended".into()));
        }
    }
    Ok(())
}

/// Prints one event; false when the subscription ended.
fn print_event(ev: &WatchEvent, json_out: bool) -> bool {
    match ev {
        WatchEvent::Changes(c) => {
            let clock = format_clock(c.instance, c.seq);
            if json_out {
                let changes: Vec<_> = c.changes.iter().map(change_json).collect();
                outln!(
                    "{}",
                    json!({"clock": clock, "fresh_instance": c.fresh_instance(), "more": c.more(),
                        "changes": changes})
                );
            } else {
                if c.fresh_instance() {
                    outln!("{clock} fresh instance: rescan");
                }
                for ch in &c.changes {
                    outln!("{clock} {}", change_line(ch));
                }
            }
            true
        }
        WatchEvent::Rescan(r) => {
            let clock = format_clock(r.instance, r.seq);
            if json_out {
                outln!(
                    "{}",
                    json!({"clock": clock, "rescan": r.root, "reason": r.reason})
                );
            } else {
                outln!("{clock} rescan {} ({})", r.root, r.reason);
            }
            true
        }
        WatchEvent::Ended(e) => {
            if json_out {
                outln!(
                    "{}",
                    json!({"ended": e.root, "reason": e.reason, "message": e.message})
                );
            } else {
                outln!("ended: {}", e.message);
            }
            false
        }
    }
}

fn list(client: &Client, json_out: bool) -> Result<(), Failure> {
    let roots: Vec<RootInfo> = client.watch().list()?;
    if json_out {
        let v: Vec<_> = roots
            .iter()
            .map(|r| {
                json!({"root": r.root, "ignore_files": r.flags & 1 == 0, "subscribers": r.subscribers,
                    "watches": r.watches, "files": r.files, "seq": r.seq, "rescans": r.rescans})
            })
            .collect();
        outln!("{}", json!({"roots": v}));
        return Ok(());
    }
    if roots.is_empty() {
        outln!("no watched roots");
        return Ok(());
    }
    outln!(
        "{:<48} {:>11} {:>8} {:>10} {:>8}",
        "root",
        "subscribers",
        "watches",
        "paths",
        "rescans"
    );
    for r in &roots {
        let name = if r.flags & 1 != 0 {
            format!("{} (no ignore files)", r.root)
        } else {
            r.root.clone()
        };
        outln!(
            "{name:<48} {:>11} {:>8} {:>10} {:>8}",
            r.subscribers,
            r.watches,
            r.files,
            r.rescans
        );
    }
    Ok(())
}
