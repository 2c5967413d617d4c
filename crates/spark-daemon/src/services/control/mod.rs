//! The Control service (`0x0001`), always registered: Hello, Ping, Version, Shutdown, Stats, sponsors and the
//! namespace listing.

mod operator;

use std::sync::Arc;

use spark_proto::control::*;
use spark_proto::{ErrorCode, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, service};

use crate::namespaces::Namespaces;
use crate::registry::{
    BoxFuture, HandlerError, HandlerResult, Reply, Request, Service, unknown_message,
};
use crate::state::ClientInfo;

/// The daemon's version string, reported by Version and Hello.
pub const DAEMON_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct ControlService {
    /// Every registered service id (Control's included), ascending.
    services: Vec<u16>,
    /// Every registered service's capabilities, Control's included, sorted.
    capabilities: Vec<String>,
    namespaces: Arc<Namespaces>,
}

impl ControlService {
    /// Control is registered last, from what the others registered.
    pub fn new(
        mut services: Vec<u16>,
        mut capabilities: Vec<String>,
        namespaces: Arc<Namespaces>,
    ) -> Self {
        services.push(service::CONTROL);
        services.sort_unstable();
        services.dedup();
        capabilities.extend(Self::CAPABILITIES.iter().map(|c| c.to_string()));
        capabilities.sort();
        capabilities.dedup();
        ControlService {
            services,
            capabilities,
            namespaces,
        }
    }

    const CAPABILITIES: &'static [&'static str] =
        &["events", "namespaces", "pipeline", "sponsor", "stream"];

    fn hello(&self, req: &Request) -> HandlerResult {
        let h: Hello = req.decode()?;
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&h.protocol_version) {
            return Err(HandlerError::reply(
                ErrorCode::UnsupportedVersion,
                format!(
                    "client '{}' speaks protocol version {}, this sparkd {} speaks {}..={}; \
                     upgrade whichever is older",
                    h.client_name,
                    h.protocol_version,
                    DAEMON_VERSION,
                    MIN_PROTOCOL_VERSION,
                    PROTOCOL_VERSION
                ),
            ));
        }
        tracing::debug!(client = %h.client_name, pid = h.pid, "hello");
        if h.flags & HELLO_FLAG_SPONSOR != 0 {
            check_pid(h.pid)?;
            req.ctx.state.add_sponsor(h.pid);
        }
        req.ctx.state.set_client(
            req.ctx.conn.id,
            ClientInfo {
                name: h.client_name,
                pid: h.pid,
            },
        );
        Ok(Reply::msg(HelloResponse {
            protocol_version: PROTOCOL_VERSION,
            daemon_version: DAEMON_VERSION.into(),
            daemon_pid: std::process::id(),
            services: self.services.clone(),
            capabilities: self.capabilities.clone(),
        }))
    }

    fn stats(&self, req: &Request) -> HandlerResult {
        let _: Stats = req.decode()?;
        let s = &req.ctx.state;
        Ok(Reply::msg(StatsResponse {
            uptime_secs: s.started.elapsed().as_secs(),
            protocol_version: PROTOCOL_VERSION,
            services: self.services.clone(),
            current_connections: s.open_connections(),
            total_connections: s
                .total_connections
                .load(std::sync::atomic::Ordering::Relaxed),
        }))
    }

    fn namespaces(&self, req: &Request) -> HandlerResult {
        let _: spark_proto::control::Namespaces = req.decode()?;
        let namespaces = self
            .namespaces
            .iter()
            .map(|ns| NamespaceStats {
                name: ns.name().to_string(),
                service: ns.service(),
                counters: ns
                    .counters()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            })
            .collect();
        Ok(Reply::msg(NamespacesResponse { namespaces }))
    }

    fn register_sponsor(&self, req: &Request) -> HandlerResult {
        let r: RegisterSponsor = req.decode()?;
        check_pid(r.pid)?;
        let sponsors = req.ctx.state.add_sponsor(r.pid);
        Ok(Reply::msg(RegisterSponsorAck { sponsors }))
    }
}

fn check_pid(pid: u32) -> Result<(), HandlerError> {
    if crate::platform::valid_pid(pid) {
        Ok(())
    } else {
        Err(HandlerError::reply(
            ErrorCode::Malformed,
            format!("sponsor pid {pid} is not a valid process id"),
        ))
    }
}

impl Service for ControlService {
    fn id(&self) -> u16 {
        service::CONTROL
    }

    fn capabilities(&self) -> &'static [&'static str] {
        Self::CAPABILITIES
    }

    /// Shutdown and sponsor registration change the daemon's state; Hello records the client.
    fn is_write(&self, frame: &spark_proto::Frame) -> bool {
        use spark_proto::operator::{TRIM, VERIFY};
        matches!(
            frame.msg_type,
            SHUTDOWN | REGISTER_SPONSOR | HELLO | VERIFY | TRIM
        )
    }

    fn handle(self: Arc<Self>, req: Request) -> BoxFuture<HandlerResult> {
        Box::pin(async move {
            match req.frame.msg_type {
                PING => {
                    let p: Ping = req.decode()?;
                    Ok(Reply::msg(Pong { data: p.data }))
                }
                VERSION => {
                    let _: Version = req.decode()?;
                    Ok(Reply::msg(VersionResponse {
                        protocol_version: PROTOCOL_VERSION,
                        daemon_version: DAEMON_VERSION.into(),
                    }))
                }
                SHUTDOWN => {
                    let _: Shutdown = req.decode()?;
                    // The ack is still written: the writer drains every reply owed before the connection closes.
                    req.ctx
                        .state
                        .request_shutdown("Shutdown requested by a client");
                    Ok(Reply::msg(ShutdownAck))
                }
                STATS => self.stats(&req),
                HELLO => self.hello(&req),
                REGISTER_SPONSOR => self.register_sponsor(&req),
                NAMESPACES => self.namespaces(&req),
                spark_proto::operator::VERIFY => operator::verify(&self.namespaces, &req).await,
                spark_proto::operator::TRIM => operator::trim(&self.namespaces, &req).await,
                _ => Err(unknown_message(&req.frame)),
            }
        })
    }
}
