//! The Collab service (`0x0005`): sessions, presence, pub/sub with bounded per-subscriber queues, versioned
//! session state with compare-and-set and prefix watches, advisory locks, and an activity feed
//! (protocol.md §14).
//!
//! Layout: [`session`] (one session's data and rules), [`hub`] (the session table and every operation, with
//! the events they send), [`queue`] (a subscription's bounded queue and its pump), [`bridge`] and [`remote`]
//! (the NATS bridge for shared sessions), and this file (messages, limits, connection lifetimes). A member's connection ending is a leave: its locks are released and the
//! other members are told ([`Service::on_disconnect`]).

pub mod bridge;
pub mod hub;
pub mod queue;
pub mod remote;
pub mod session;

use std::sync::Arc;

use spark_proto::collab::{
    ACK, ACTIVITY, Ack, Activity, ActivityResponse, JOIN, JOIN_EXISTING, JOIN_SHARED, Join, Joined,
    KV_CAS, KV_DELETE, KV_GET, KV_PUT, KV_WATCH, KvGet, KvPut, KvValue, KvWatch, KvWritten, LEAVE,
    LEFT_DISCONNECT, LEFT_LEAVE, LOCK, LOCKS, Leave, Lock, LockResponse, Locks, LocksResponse,
    MEMBERS, Members, MembersResponse, PUBLISH, Publish, Published, SESSIONS, SET_PRESENCE, STATS,
    SUBSCRIBE, SessionsResponse, SetPresence, Subscribe, Subscribed, UNLOCK, UNSUBSCRIBE, Unlock,
    Unsubscribe,
};
use spark_proto::{ErrorCode, Frame, service};

use crate::registry::{
    BoxFuture, HandlerError, HandlerResult, Reply, Request, Service, unknown_message,
};
use hub::{Hub, JoinSpec};
use queue::Filter;

/// Longest session name, topic, key or resource name, in bytes.
pub const MAX_NAME: usize = 1024;
/// Largest published payload, key value or presence blob.
pub const MAX_VALUE: usize = 1 << 20;
/// Most resources in one Lock or Unlock.
pub const MAX_RESOURCES: usize = 4096;

/// `sparkd` flags of the Collab service (flattened into [`crate::config::Args`]).
#[derive(Debug, Clone, clap::Args)]
pub struct CollabArgs {
    /// Collab: messages a subscription may have queued before it lags (drops, then one Lagged event)
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub collab_queue: usize,

    /// Collab: activity-feed entries kept per session
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub collab_activity: usize,

    /// Collab: bridge shared sessions through this NATS server (with JetStream), e.g. nats://host:4222;
    /// credentials may be in the URL (nats://user:password@host, nats://token@host)
    #[arg(long, value_name = "URL")]
    pub collab_nats: Option<String>,

    /// Collab: a NATS .creds file (JWT and nkey seed) for the bridge
    #[arg(long, value_name = "FILE")]
    pub collab_nats_creds: Option<std::path::PathBuf>,

    /// Collab: seconds a bridged lock outlives its daemon (refreshed every third of it while the daemon runs)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub collab_lock_ttl_secs: u64,

    /// Collab: this machine's name in member and lock records [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub collab_host: Option<String>,
}

/// The Collab service's settings.
#[derive(Debug, Clone)]
pub struct CollabConfig {
    /// Default subscription queue (messages).
    pub queue: usize,
    /// Largest queue a subscriber may ask for.
    pub max_queue: usize,
    /// Activity entries kept per session.
    pub activity: usize,
    pub max_sessions: usize,
    pub max_keys: usize,
    /// This machine's name in member and lock records (default: the host name).
    pub host: Option<String>,
    /// The NATS bridge, when configured.
    pub nats: Option<bridge::BridgeConfig>,
}

impl Default for CollabConfig {
    fn default() -> Self {
        CollabConfig {
            queue: 1024,
            max_queue: 1 << 16,
            activity: 1000,
            max_sessions: 4096,
            max_keys: 100_000,
            host: None,
            nats: None,
        }
    }
}

impl CollabConfig {
    pub fn from_args(a: &CollabArgs) -> CollabConfig {
        CollabConfig {
            queue: a.collab_queue.clamp(1, 1 << 16),
            activity: a.collab_activity.max(1),
            host: a.collab_host.clone(),
            nats: a.collab_nats.as_ref().map(|url| bridge::BridgeConfig {
                url: url.clone(),
                creds: a.collab_nats_creds.clone(),
                lock_ttl: std::time::Duration::from_secs(a.collab_lock_ttl_secs.max(1)),
            }),
            ..CollabConfig::default()
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_name(what: &str, s: &str) -> Result<(), HandlerError> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(HandlerError::reply(
            ErrorCode::InvalidKey,
            format!("{what} must be 1 to {MAX_NAME} bytes, got {}", s.len()),
        ));
    }
    Ok(())
}

fn check_value(what: &str, n: usize) -> Result<(), HandlerError> {
    if n > MAX_VALUE {
        return Err(HandlerError::reply(
            ErrorCode::TooLarge,
            format!("{what} is {n} bytes; the limit is {MAX_VALUE}"),
        ));
    }
    Ok(())
}

fn check_resources(r: &[String]) -> Result<(), HandlerError> {
    if r.is_empty() || r.len() > MAX_RESOURCES {
        return Err(HandlerError::reply(
            ErrorCode::Malformed,
            format!(
                "lock 1 to {MAX_RESOURCES} resources at once, got {}",
                r.len()
            ),
        ));
    }
    r.iter().try_for_each(|x| check_name("resource name", x))
}

pub struct CollabService {
    hub: Arc<Hub>,
    /// The bridge's tasks start with the first request: the service is built before the runtime.
    started: std::sync::Once,
}

impl CollabService {
    pub fn new(config: CollabConfig) -> Self {
        CollabService {
            hub: Arc::new(Hub::new(config)),
            started: std::sync::Once::new(),
        }
    }

    fn join(&self, req: &Request) -> HandlerResult {
        let m: Join = req.decode()?;
        check_name("session name", &m.session)?;
        check_value("presence", m.presence.len())?;
        let out = self.hub.join(
            req.ctx.conn.id,
            &req.ctx.conn.events,
            JoinSpec {
                session: m.session,
                shared: m.flags & JOIN_SHARED != 0,
                must_exist: m.flags & JOIN_EXISTING != 0,
                client: m.client,
                user: m.user,
                // The transport's view of the peer wins over what the client says.
                pid: req.ctx.conn.peer.pid.unwrap_or(m.pid),
                presence: m.presence,
            },
        )?;
        Ok(Reply::msg(Joined {
            member: out.member,
            created: out.created,
            shared: out.shared,
            bridge: out.bridge,
        }))
    }

    fn subscribe(&self, req: &Request, session: &str, filter: Filter, queue: u32) -> HandlerResult {
        check_name("session name", session)?;
        let subscription = self.hub.subscribe(
            req.ctx.conn.id,
            &req.ctx.conn.events,
            session,
            filter,
            queue,
        )?;
        Ok(Reply::msg(Subscribed { subscription }))
    }

    async fn kv_put(&self, req: &Request) -> HandlerResult {
        let m: KvPut = req.decode()?;
        check_name("key", &m.key)?;
        check_value("value", m.value.len())?;
        let cas = (m.flags & KV_CAS != 0).then_some(m.expect_version);
        let delete = m.flags & KV_DELETE != 0;
        let (ok, version) = match self.hub.bridge_of(&m.session) {
            Some(b) => {
                bridge::ops::kv_put(&b, &self.hub, &m.session, &m.key, cas, delete, m.value).await?
            }
            None => self.hub.kv_put(&m.session, &m.key, cas, delete, m.value)?,
        };
        Ok(Reply::msg(KvWritten { ok, version }))
    }

    async fn kv_get(&self, req: &Request) -> HandlerResult {
        let m: KvGet = req.decode()?;
        let e = match self.hub.bridge_of(&m.session) {
            Some(b) => bridge::ops::kv_get(&b, &m.session, &m.key).await?,
            None => self.hub.with_session(&m.session, |s| {
                s.kv.get(&m.key).map(|e| (e.version, e.value.clone()))
            })?,
        };
        Ok(Reply::msg(match e {
            Some((version, value)) => KvValue {
                found: true,
                version,
                value,
            },
            None => KvValue {
                found: false,
                version: 0,
                value: Default::default(),
            },
        }))
    }

    async fn lock(&self, req: &Request) -> HandlerResult {
        let m: Lock = req.decode()?;
        check_resources(&m.resources)?;
        let contested = match self.hub.bridge_of(&m.session) {
            Some(b) => {
                let me = self
                    .hub
                    .member_info(req.ctx.conn.id, &m.session)
                    .ok_or_else(|| hub::not_member(&m.session))?;
                bridge::ops::lock(&b, &self.hub, &m.session, &me, &m.resources, &m.note).await?
            }
            None => self
                .hub
                .lock(req.ctx.conn.id, &m.session, &m.resources, &m.note)?,
        };
        Ok(Reply::msg(LockResponse {
            acquired: contested.is_empty(),
            contested,
        }))
    }

    async fn unlock(&self, req: &Request) -> HandlerResult {
        let m: Unlock = req.decode()?;
        check_resources(&m.resources)?;
        let count = match self.hub.bridge_of(&m.session) {
            Some(b) => {
                let me = self
                    .hub
                    .member_info(req.ctx.conn.id, &m.session)
                    .map(|m| m.member);
                if me.is_none() && !m.force {
                    return Err(hub::not_member(&m.session));
                }
                let (r, f, why) = (&m.resources, m.force, &m.reason);
                bridge::ops::unlock(&b, &self.hub, &m.session, me.unwrap_or(0), r, f, why).await?
            }
            None => self.hub.unlock(
                req.ctx.conn.id,
                &m.session,
                &m.resources,
                m.force,
                &m.reason,
            )?,
        };
        Ok(Reply::msg(Ack { count }))
    }

    fn read(&self, req: &Request) -> HandlerResult {
        match req.frame.msg_type {
            SESSIONS => Ok(Reply::msg(SessionsResponse {
                sessions: self.hub.sessions(),
            })),
            MEMBERS => {
                let m: Members = req.decode()?;
                let members = self.hub.with_session(&m.session, |s| {
                    let mut v: Vec<_> = s.members.values().collect();
                    v.sort_by_key(|m| (m.conn.is_none(), m.info.member));
                    v.into_iter().map(|m| m.info.clone()).collect()
                })?;
                Ok(Reply::msg(MembersResponse { members }))
            }
            LOCKS => {
                let m: Locks = req.decode()?;
                let locks = self.hub.with_session(&m.session, |s| {
                    s.locks
                        .range(m.prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(&m.prefix))
                        .map(|(_, l)| l.clone())
                        .collect()
                })?;
                Ok(Reply::msg(LocksResponse { locks }))
            }
            ACTIVITY => {
                let m: Activity = req.decode()?;
                let (oldest, entries) = self
                    .hub
                    .with_session(&m.session, |s| s.activity_after(m.after, m.max))?;
                Ok(Reply::msg(ActivityResponse { oldest, entries }))
            }
            STATS => {
                let (state, reconnects, errors) = bridge::stats_of(self.hub.bridge.as_deref());
                Ok(Reply::msg(self.hub.stats(state, reconnects, errors)))
            }
            _ => Err(unknown_message(&req.frame)),
        }
    }

    fn handle_sync(&self, req: &Request) -> HandlerResult {
        let conn = req.ctx.conn.id;
        match req.frame.msg_type {
            JOIN => self.join(req),
            LEAVE => {
                let m: Leave = req.decode()?;
                let left = self.hub.leave(conn, &m.session, LEFT_LEAVE);
                Ok(Reply::msg(Ack {
                    count: u32::from(left),
                }))
            }
            SET_PRESENCE => {
                let m: SetPresence = req.decode()?;
                check_value("presence", m.presence.len())?;
                self.hub.set_presence(conn, &m.session, m.presence)?;
                Ok(Reply::msg(Ack { count: 1 }))
            }
            PUBLISH => {
                let m: Publish = req.decode()?;
                check_name("topic", &m.topic)?;
                check_value("payload", m.payload.len())?;
                let (seq, queued) = self
                    .hub
                    .publish(conn, &m.session, &m.topic, m.flags, m.payload)?;
                Ok(Reply::msg(Published { seq, queued }))
            }
            SUBSCRIBE => {
                let m: Subscribe = req.decode()?;
                check_name("topic pattern", &m.pattern)?;
                self.subscribe(req, &m.session, Filter::Topic(m.pattern), m.queue)
            }
            KV_WATCH => {
                let m: KvWatch = req.decode()?;
                self.subscribe(req, &m.session, Filter::Kv(m.prefix), m.queue)
            }
            UNSUBSCRIBE => {
                let m: Unsubscribe = req.decode()?;
                let existed = self.hub.unsubscribe(conn, m.subscription);
                Ok(Reply::msg(Ack {
                    count: u32::from(existed),
                }))
            }
            _ => self.read(req),
        }
    }
}

impl Service for CollabService {
    fn id(&self) -> u16 {
        service::COLLAB
    }

    fn capabilities(&self) -> &'static [&'static str] {
        &["collab"]
    }

    fn is_write(&self, frame: &Frame) -> bool {
        // Publish order per connection is delivery order, and a subscription or lock is in place before the
        // connection's next request runs.
        !matches!(
            frame.msg_type,
            SESSIONS | MEMBERS | LOCKS | ACTIVITY | STATS | ACK
        )
    }

    fn handle(self: Arc<Self>, req: Request) -> BoxFuture<HandlerResult> {
        if let Some(b) = &self.hub.bridge {
            self.started.call_once(|| b.start(self.hub.clone()));
        }
        Box::pin(async move {
            match req.frame.msg_type {
                KV_PUT => self.kv_put(&req).await,
                KV_GET => self.kv_get(&req).await,
                LOCK => self.lock(&req).await,
                UNLOCK => self.unlock(&req).await,
                _ => self.handle_sync(&req),
            }
        })
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let (state, reconnects, errors) = bridge::stats_of(self.hub.bridge.as_deref());
        let st = self.hub.stats(state, reconnects, errors);
        vec![
            ("sessions", st.sessions),
            ("members", st.members),
            ("subscriptions", st.subscriptions),
            ("published", st.published),
            ("delivered", st.delivered),
            ("dropped", st.dropped),
            ("locks", st.locks),
            ("bridge_state", st.bridge),
            ("bridge_reconnects", st.bridge_reconnects),
            ("bridge_errors", st.bridge_errors),
        ]
    }

    fn on_disconnect(&self, conn_id: u64) {
        self.hub.disconnect(conn_id, LEFT_DISCONNECT);
    }
}
