//! The Watch service (`0x0007`) from the client side: subscribe to a root, take its events, query changes
//! since a clock, list the daemon's watches.

use std::path::Path;
use std::time::Duration;

use spark_proto::service;
use spark_proto::watch::{
    Changes, Ended, List, ListResponse, Query, QueryResponse, Rescan, RootInfo, Subscribe,
    SubscribeResponse, Unsubscribe, UnsubscribeResponse,
};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::event::Event;

/// A clock: `(instance, seq)`. See `spark_proto::watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Clock {
    pub instance: u64,
    pub seq: u64,
}

impl std::fmt::Display for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&spark_proto::watch::format_clock(self.instance, self.seq))
    }
}

impl std::str::FromStr for Clock {
    type Err = Error;
    fn from_str(s: &str) -> Result<Clock> {
        spark_proto::watch::parse_clock(s)
            .map(|(instance, seq)| Clock { instance, seq })
            .ok_or_else(|| {
                Error::Local(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("not a clock: {s:?} (expected c:<hex>:<seq>)"),
                ))
            })
    }
}

/// What to watch: a root, globs, whether ignore files apply, and optionally a clock to resume from.
#[derive(Debug, Clone, Default)]
pub struct WatchSpec {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Do not honour `.gitignore`, `.ignore` and the global excludes file.
    pub no_ignore_files: bool,
    pub since: Option<Clock>,
}

impl WatchSpec {
    fn flags(&self) -> u8 {
        if self.no_ignore_files {
            spark_proto::watch::FLAG_NO_IGNORE_FILES
        } else {
            0
        }
    }
}

/// A Watch service event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Changes(Changes),
    Rescan(Rescan),
    Ended(Ended),
}

impl WatchEvent {
    /// Decodes a server event when it is a Watch event; `Ok(None)` for other services' events.
    pub fn from_event(e: &Event) -> Result<Option<WatchEvent>> {
        if let Some(c) = e.decode::<Changes>(service::WATCH)? {
            return Ok(Some(WatchEvent::Changes(c)));
        }
        if let Some(r) = e.decode::<Rescan>(service::WATCH)? {
            return Ok(Some(WatchEvent::Rescan(r)));
        }
        Ok(e.decode::<Ended>(service::WATCH)?.map(WatchEvent::Ended))
    }

    pub fn subscription(&self) -> u32 {
        match self {
            WatchEvent::Changes(c) => c.subscription,
            WatchEvent::Rescan(r) => r.subscription,
            WatchEvent::Ended(e) => e.subscription,
        }
    }
}

/// The Watch service on one client.
pub struct WatchClient<'a> {
    client: &'a Client,
}

fn root_str(root: &Path) -> Result<String> {
    root.to_str().map(str::to_string).ok_or_else(|| {
        Error::Local(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("root {} is not UTF-8", root.display()),
        ))
    })
}

impl Client {
    /// The Watch service.
    pub fn watch(&self) -> WatchClient<'_> {
        WatchClient { client: self }
    }
}

impl WatchClient<'_> {
    /// Subscribes to `root` (absolute); events follow on this connection.
    pub fn subscribe(&self, root: &Path, spec: &WatchSpec) -> Result<SubscribeResponse> {
        let since = spec.since.unwrap_or(Clock {
            instance: 0,
            seq: 0,
        });
        self.client.call(
            service::WATCH,
            &Subscribe {
                root: root_str(root)?,
                flags: spec.flags(),
                include: spec.include.clone(),
                exclude: spec.exclude.clone(),
                since_instance: since.instance,
                since_seq: since.seq,
            },
        )
    }

    pub fn unsubscribe(&self, subscription: u32) -> Result<bool> {
        let r: UnsubscribeResponse = self
            .client
            .call(service::WATCH, &Unsubscribe { subscription })?;
        Ok(r.existed)
    }

    /// Files under `root` matching the spec's globs changed since `spec.since` (none: `fresh_instance`).
    pub fn query(&self, root: &Path, spec: &WatchSpec) -> Result<QueryResponse> {
        let since = spec.since.unwrap_or(Clock {
            instance: 0,
            seq: 0,
        });
        self.client.call(
            service::WATCH,
            &Query {
                root: root_str(root)?,
                flags: spec.flags(),
                include: spec.include.clone(),
                exclude: spec.exclude.clone(),
                since_instance: since.instance,
                since_seq: since.seq,
            },
        )
    }

    /// Every watched root with its subscribers and watch counts.
    pub fn list(&self) -> Result<Vec<RootInfo>> {
        let r: ListResponse = self.client.call(service::WATCH, &List)?;
        Ok(r.roots)
    }

    /// The next Watch event, waiting up to `wait`; other services' events are skipped.
    pub fn next_event(&self, wait: Duration) -> Result<Option<WatchEvent>> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Some(e) = self.client.next_event(left)? else {
                return Ok(None);
            };
            if let Some(w) = WatchEvent::from_event(&e)? {
                return Ok(Some(w));
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }
}
