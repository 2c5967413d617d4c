//! `sparkctl collab`: the daemon's collaboration sessions, their members and locks, publishing, live
//! subscription, the activity feed, and force-unlock.

use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};
use spark_client::spark_proto::collab::{
    BRIDGE_DEGRADED, BRIDGE_UP, LockInfo, MemberInfo, activity_name,
};
use spark_client::{Client, CollabClient, CollabEvent};

use crate::Failure;

#[derive(Subcommand)]
pub enum CollabCmd {
    /// Every session: members, locks, messages, bridge state
    Sessions,
    /// The members of a session (client, user, host, pid, presence)
    Members { session: String },
    /// The locks of a session, with their owners
    Locks {
        session: String,
        /// Only resources starting with this
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Publish a message on a topic
    Publish {
        session: String,
        topic: String,
        message: String,
        /// Also keep it in the session's activity feed
        #[arg(long)]
        persistent: bool,
    },
    /// Print messages on topics matching PATTERN (a topic, or a prefix ending in `*`) as they arrive
    Subscribe {
        session: String,
        pattern: String,
        /// Stop after this many messages (0: run until interrupted)
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Release locks held by someone else (the owner is told the reason)
    Unlock {
        session: String,
        #[arg(required = true)]
        resources: Vec<String>,
        /// Required: sparkctl holds no locks of its own, so unlocking always takes someone else's
        #[arg(long)]
        force: bool,
        /// Told to the previous owner
        #[arg(long, default_value = "force-unlocked with sparkctl")]
        reason: String,
    },
    /// The session's activity feed (joins, leaves, locks, persistent messages)
    Activity { session: String },
    /// The Collab service's counters
    Stats,
}

fn bridge_name(b: u8) -> &'static str {
    match b {
        BRIDGE_UP => "nats",
        BRIDGE_DEGRADED => "degraded",
        _ => "local",
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn member_json(m: &MemberInfo) -> Value {
    json!({"member": format!("{:x}", m.member), "client": m.client, "user": m.user, "pid": m.pid,
        "host": m.host, "presence": text(&m.presence)})
}

fn lock_json(l: &LockInfo) -> Value {
    json!({"resource": l.resource, "owner": format!("{:x}", l.owner), "who": l.who, "host": l.host,
        "note": l.note, "since_ms": l.since_ms})
}

pub fn run(client: &Client, cmd: &CollabCmd, json_out: bool) -> Result<(), Failure> {
    let c = client.collab();
    match cmd {
        CollabCmd::Sessions => sessions(&c, json_out)?,
        CollabCmd::Members { session } => members(&c, session, json_out)?,
        CollabCmd::Locks { session, prefix } => locks(&c, session, prefix, json_out)?,
        CollabCmd::Publish {
            session,
            topic,
            message,
            persistent,
        } => {
            let p = c.publish(session, topic, message.as_bytes(), *persistent)?;
            if json_out {
                outln!("{}", json!({"seq": p.seq, "queued": p.queued}));
            } else {
                outln!("published #{} to {} local subscriber(s)", p.seq, p.queued);
            }
        }
        CollabCmd::Subscribe {
            session,
            pattern,
            count,
        } => subscribe(client, session, pattern, *count, json_out)?,
        CollabCmd::Unlock {
            session,
            resources,
            force,
            reason,
        } => unlock(&c, session, resources, *force, reason, json_out)?,
        CollabCmd::Activity { session } => activity(&c, session, json_out)?,
        CollabCmd::Stats => stats(&c, json_out)?,
    }
    Ok(())
}

fn subscribe(
    client: &Client,
    session: &str,
    pattern: &str,
    count: u64,
    json_out: bool,
) -> Result<(), Failure> {
    let sub = client.collab().subscribe(session, pattern, 0)?;
    eprintln!("subscribed to {pattern:?} in session {session:?}");
    let mut n = 0;
    while count == 0 || n < count {
        let Some(ev) = client.collab().next_event(Duration::from_secs(3600))? else {
            continue;
        };
        match ev {
            CollabEvent::Message(m) if m.subscription == sub => {
                n += 1;
                if json_out {
                    outln!(
                        "{}",
                        json!({"seq": m.seq, "topic": m.topic, "publisher": format!("{:x}", m.publisher),
                            "message": text(&m.payload)})
                    );
                } else {
                    outln!("{} {}", m.topic, text(&m.payload));
                }
            }
            CollabEvent::Lagged(l) if l.subscription == sub => {
                if json_out {
                    outln!("{}", json!({"lagged": l.dropped}));
                } else {
                    outln!("lagged: {} messages dropped", l.dropped);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn sessions(c: &CollabClient<'_>, json_out: bool) -> Result<(), Failure> {
    let v = c.sessions()?;
    if json_out {
        let v: Vec<_> = v
            .iter()
            .map(|s| {
                json!({"name": s.name, "shared": s.shared, "bridge": bridge_name(s.bridge),
                "members": s.members, "locks": s.locks, "messages": s.messages})
            })
            .collect();
        outln!("{}", Value::Array(v));
        return Ok(());
    }
    outln!(
        "{:<24} {:>7} {:>6} {:>9}  bridge",
        "session",
        "members",
        "locks",
        "messages"
    );
    for s in v {
        let b = if s.shared { bridge_name(s.bridge) } else { "-" };
        outln!(
            "{:<24} {:>7} {:>6} {:>9}  {b}",
            s.name,
            s.members,
            s.locks,
            s.messages
        );
    }
    Ok(())
}

fn members(c: &CollabClient<'_>, session: &str, json_out: bool) -> Result<(), Failure> {
    let v = c.members(session)?;
    if json_out {
        outln!("{}", Value::Array(v.iter().map(member_json).collect()));
        return Ok(());
    }
    for m in v {
        outln!(
            "{:016x}  {}  presence: {}",
            m.member,
            m.who(),
            text(&m.presence)
        );
    }
    Ok(())
}

fn locks(c: &CollabClient<'_>, session: &str, prefix: &str, json_out: bool) -> Result<(), Failure> {
    let v = c.locks(session, prefix)?;
    if json_out {
        outln!("{}", Value::Array(v.iter().map(lock_json).collect()));
        return Ok(());
    }
    for l in v {
        let note = if l.note.is_empty() {
            String::new()
        } else {
            format!("  ({})", l.note)
        };
        outln!("{}  locked by {} on {}{note}", l.resource, l.who, l.host);
    }
    Ok(())
}

fn unlock(
    c: &CollabClient<'_>,
    session: &str,
    resources: &[String],
    force: bool,
    reason: &str,
    json_out: bool,
) -> Result<(), Failure> {
    if !force {
        return Err(Failure::Local(
            "sparkctl holds no locks: pass --force to release someone else's (they are told the reason)"
                .into(),
        ));
    }
    let r: Vec<&str> = resources.iter().map(String::as_str).collect();
    let n = c.force_unlock(session, &r, reason)?;
    if json_out {
        outln!("{}", json!({"released": n}));
    } else {
        outln!("released {n} lock(s)");
    }
    Ok(())
}

fn activity(c: &CollabClient<'_>, session: &str, json_out: bool) -> Result<(), Failure> {
    let a = c.activity(session, 0, 0)?;
    for e in a.entries {
        if json_out {
            outln!(
                "{}",
                json!({"seq": e.seq, "time_ms": e.time_ms, "kind": activity_name(e.kind),
                    "who": e.who, "subject": e.subject, "data": text(&e.data)})
            );
        } else {
            outln!(
                "#{} {} {} {} {}",
                e.seq,
                activity_name(e.kind),
                e.who,
                e.subject,
                text(&e.data)
            );
        }
    }
    Ok(())
}

fn stats(c: &CollabClient<'_>, json_out: bool) -> Result<(), Failure> {
    let s = c.stats()?;
    let v = json!({"sessions": s.sessions, "members": s.members, "subscriptions": s.subscriptions,
        "published": s.published, "delivered": s.delivered, "dropped": s.dropped, "locks": s.locks,
        "bridge": bridge_name(s.bridge as u8), "bridge_reconnects": s.bridge_reconnects,
        "bridge_errors": s.bridge_errors});
    if json_out {
        outln!("{v}");
    } else {
        for (k, x) in v.as_object().expect("object") {
            outln!("{k:<18} {x}");
        }
    }
    Ok(())
}
