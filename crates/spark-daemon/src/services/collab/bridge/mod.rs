//! The NATS bridge (`--collab-nats URL`): shared sessions across daemons (protocol.md §14.6).
//!
//! Presence, messages, member rosters and lock/state notifications travel as envelopes ([`wire`]) on one
//! subject per session. Locks and state live in JetStream KV buckets, so acquiring a lock is a
//! compare-and-set decided by NATS ([`ops`]). A lock's entry is rewritten by its owner's daemon every
//! third of the TTL; the lock bucket's `max_age` is the TTL, so the locks of a daemon that died vanish one TTL
//! after its last refresh.
//!
//! Nothing here is on a local request's path unless the request is about a shared session's locks or state,
//! and those fail at once (not after a timeout) while the link is down. Everything else is handed to the
//! sender task with `try_send`: a full queue or a dead link drops the envelope and counts an error.

pub mod ops;
pub mod wire;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use spark_proto::collab::{BRIDGE_DEGRADED, BRIDGE_UP};
use tokio::sync::mpsc;

use super::hub::Hub;
use wire::{Body, Envelope};

/// How the bridge reaches NATS.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `nats://[user:password@ | token@]host:port`, comma-separated for several servers.
    pub url: String,
    /// A NATS `.creds` file (JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// How long a lock outlives the last refresh of its daemon.
    pub lock_ttl: Duration,
}

/// Envelopes queued for NATS at most; more are dropped (and counted) rather than wait.
const OUT_QUEUE: usize = 8192;
/// Longest a shared-session request waits for NATS while the link is up.
pub const OP_TIMEOUT: Duration = Duration::from_secs(3);

pub enum Outgoing {
    Publish(Envelope),
    /// Delete a lock entry a leaving member held (only if still at `revision`), then announce `lock`.
    Release {
        session: String,
        resource: String,
        revision: u64,
        lock: spark_proto::collab::LockInfo,
    },
}

/// The link once buckets are ready.
#[derive(Clone)]
pub struct Link {
    pub client: async_nats::Client,
    pub locks: kv::Store,
    pub state: kv::Store,
}

pub struct Bridge {
    pub config: BridgeConfig,
    state: AtomicU8,
    pub reconnects: AtomicU64,
    pub errors: AtomicU64,
    out: mpsc::Sender<Outgoing>,
    out_rx: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    link: Mutex<Option<Link>>,
}

fn backoff(attempt: usize) -> Duration {
    Duration::from_millis((100u64 << attempt.min(6)).min(5_000))
}

impl Bridge {
    pub fn new(config: BridgeConfig) -> Bridge {
        let (out, rx) = mpsc::channel(OUT_QUEUE);
        Bridge {
            config,
            state: AtomicU8::new(BRIDGE_DEGRADED),
            reconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            out,
            out_rx: Mutex::new(Some(rx)),
            link: Mutex::new(None),
        }
    }

    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    /// The link when NATS is up; `None` while degraded (callers fail fast).
    pub fn link(&self) -> Option<Link> {
        if self.state() != BRIDGE_UP {
            return None;
        }
        super::lock(&self.link).clone()
    }

    pub fn period(&self) -> Duration {
        (self.config.lock_ttl / 3).max(Duration::from_millis(200))
    }

    /// Queues an item for NATS without waiting; dropped (and counted) when degraded or the queue is full.
    pub fn send(&self, item: Outgoing) {
        if self.out.try_send(item).is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn forward(&self, origin: u32, session: &str, body: Body) {
        self.send(Outgoing::Publish(Envelope {
            origin,
            session: session.to_string(),
            body,
        }));
    }

    /// Starts the bridge's tasks on the current runtime (once).
    pub fn start(self: &Arc<Self>, hub: Arc<Hub>) {
        let Some(rx) = super::lock(&self.out_rx).take() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move { me.run(hub, rx).await });
    }

    fn set_state(&self, hub: &Hub, state: u8, detail: &str) {
        if self.state.swap(state, Ordering::Relaxed) != state {
            if state == BRIDGE_DEGRADED {
                tracing::warn!("collab: NATS link down ({detail}); shared sessions are degraded");
            } else {
                tracing::info!("collab: NATS link up ({})", self.config.url);
            }
            hub.bridge_state(state, detail);
        }
    }

    async fn connect(
        self: &Arc<Self>,
        events: mpsc::UnboundedSender<async_nats::Event>,
    ) -> anyhow::Result<async_nats::Client> {
        let mut o = async_nats::ConnectOptions::new()
            .name("sparkd-collab")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(OP_TIMEOUT))
            .reconnect_delay_callback(backoff)
            .event_callback(move |e| {
                let events = events.clone();
                async move {
                    let _ = events.send(e);
                }
            });
        if let Some(c) = &self.config.creds {
            o = o.credentials_file(c).await?;
        }
        Ok(o.connect(self.config.url.as_str()).await?)
    }

    async fn buckets(&self, client: &async_nats::Client) -> anyhow::Result<Link> {
        let js = async_nats::jetstream::new(client.clone());
        let desc = "SparkDaemon collab locks (entry age = time since the owner's last refresh)";
        let locks = bucket(&js, wire::LOCK_BUCKET, desc, self.config.lock_ttl).await?;
        let state = bucket(
            &js,
            wire::STATE_BUCKET,
            "SparkDaemon collab session state",
            Duration::ZERO,
        )
        .await?;
        Ok(Link {
            client: client.clone(),
            locks,
            state,
        })
    }

    async fn run(self: Arc<Self>, hub: Arc<Hub>, rx: mpsc::Receiver<Outgoing>) {
        let (etx, mut erx) = mpsc::unbounded_channel();
        let client = loop {
            match self.connect(etx.clone()).await {
                Ok(c) => break c,
                Err(e) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "collab: cannot set up NATS client for {}: {e}",
                        self.config.url
                    );
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        tokio::spawn(sender(self.clone(), hub.clone(), rx));
        // Buckets need a live server: retry with back-off until it answers.
        let mut attempt = 0;
        let link = loop {
            match self.buckets(&client).await {
                Ok(l) => break l,
                Err(e) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!("collab: NATS buckets not ready: {e}");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        };
        *super::lock(&self.link) = Some(link);
        match client.subscribe(wire::SUBJECTS).await {
            Ok(sub) => {
                tokio::spawn(receiver(self.clone(), hub.clone(), sub));
            }
            Err(e) => tracing::error!("collab: cannot subscribe to {}: {e}", wire::SUBJECTS),
        }
        if client.connection_state() == async_nats::connection::State::Connected {
            self.set_state(&hub, BRIDGE_UP, "connected");
            hub.announce_all();
        }
        tokio::spawn(ticker(self.clone(), hub.clone()));
        while let Some(e) = erx.recv().await {
            match e {
                async_nats::Event::Connected => {
                    if self.state() != BRIDGE_UP {
                        self.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    self.set_state(&hub, BRIDGE_UP, "connected");
                    hub.announce_all();
                }
                async_nats::Event::Disconnected => {
                    self.set_state(&hub, BRIDGE_DEGRADED, "NATS unreachable: reconnecting")
                }
                other => tracing::debug!("collab: NATS event: {other}"),
            }
        }
    }
}

/// Opens (creating if needed) a KV bucket. The stream is made by hand with the layout `create_key_value` uses,
/// because that call first reads the account info, whose shape NATS servers before 2.10 (Debian's 2.9) do
/// not match.
async fn bucket(
    js: &async_nats::jetstream::Context,
    name: &str,
    desc: &str,
    max_age: Duration,
) -> anyhow::Result<kv::Store> {
    use async_nats::jetstream::stream;
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{name}"),
        description: Some(desc.to_string()),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_age,
        max_bytes: -1,
        max_message_size: -1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    })
    .await?;
    Ok(js.get_key_value(name).await?)
}

/// Publishes queued envelopes and releases; drops them while degraded (stale presence is worse than none).
async fn sender(b: Arc<Bridge>, hub: Arc<Hub>, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(item) = rx.recv().await {
        let Some(link) = b.link() else {
            b.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match item {
            Outgoing::Publish(env) => {
                if link
                    .client
                    .publish(wire::subject(&env.session), env.encode())
                    .await
                    .is_err()
                {
                    b.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Outgoing::Release {
                session,
                resource,
                revision,
                lock,
            } => {
                ops::release_entry(&b, &hub, &link, &session, &resource, revision, lock).await;
            }
        }
    }
}

async fn receiver(b: Arc<Bridge>, hub: Arc<Hub>, mut sub: async_nats::Subscriber) {
    while let Some(m) = sub.next().await {
        match Envelope::decode(&m.payload) {
            Ok(env) if env.origin == hub.daemon_id => {}
            Ok(env) => hub.apply_remote(&b, env),
            Err(e) => {
                b.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("collab: bad envelope on {}: {e}", m.subject);
            }
        }
    }
}

/// Every third of the TTL: rosters out, own locks refreshed, silent daemons' members dropped, the lock
/// mirror reconciled with the bucket (expired locks announced).
async fn ticker(b: Arc<Bridge>, hub: Arc<Hub>) {
    let mut t = tokio::time::interval(b.period());
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        t.tick().await;
        hub.expire_remote(b.period() * 3);
        let Some(link) = b.link() else { continue };
        for (session, roster) in hub.rosters() {
            b.forward(hub.daemon_id, &session, Body::Roster(roster));
        }
        ops::refresh_own(&b, &hub, &link).await;
        ops::reconcile(&b, &hub, &link).await;
    }
}

/// A value for the stats message.
pub fn stats_of(b: Option<&Bridge>) -> (u64, u64, u64) {
    b.map_or((0, 0, 0), |b| {
        (
            u64::from(b.state()),
            b.reconnects.load(Ordering::Relaxed),
            b.errors.load(Ordering::Relaxed),
        )
    })
}
