//! The Control service (`0x0001`), always registered: Hello, Ping, Version, Shutdown, Stats, sponsors.

use spark_proto::control::*;
use spark_proto::{ErrorCode, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, service};

use crate::registry::{BoxFuture, HandlerError, Request, Service, unknown_message};

/// The daemon's version string, reported by Version and Hello.
pub const DAEMON_VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct ControlService;

fn check_pid(pid: u32) -> Result<(), HandlerError> {
    if crate::server::valid_pid(pid) {
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
        &["pipeline", "sponsor", "stream"]
    }

    fn handle<'a>(&'a self, mut req: Request<'a>) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            match req.frame.msg_type {
                PING => {
                    let p: Ping = req.decode()?;
                    req.reply(&Pong { data: p.data }).await
                }
                VERSION => {
                    let _: Version = req.decode()?;
                    let v = VersionResponse {
                        protocol_version: PROTOCOL_VERSION,
                        daemon_version: DAEMON_VERSION.into(),
                    };
                    req.reply(&v).await
                }
                SHUTDOWN => {
                    let _: Shutdown = req.decode()?;
                    req.reply(&ShutdownAck).await?;
                    req.conn.flush().await?;
                    req.state.request_shutdown("Shutdown requested by a client");
                    Ok(())
                }
                STATS => {
                    let _: Stats = req.decode()?;
                    let s = &req.state;
                    let r = StatsResponse {
                        uptime_secs: s.started.elapsed().as_secs(),
                        protocol_version: PROTOCOL_VERSION,
                        services: s.registry.ids(),
                        current_connections: s
                            .current_connections
                            .load(std::sync::atomic::Ordering::SeqCst),
                        total_connections: s
                            .total_connections
                            .load(std::sync::atomic::Ordering::Relaxed),
                    };
                    req.reply(&r).await
                }
                HELLO => {
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
                        req.state.add_sponsor(h.pid);
                    }
                    let r = HelloResponse {
                        protocol_version: PROTOCOL_VERSION,
                        daemon_version: DAEMON_VERSION.into(),
                        daemon_pid: std::process::id(),
                        services: req.state.registry.ids(),
                        capabilities: req.state.registry.capabilities(),
                    };
                    req.reply(&r).await
                }
                REGISTER_SPONSOR => {
                    let r: RegisterSponsor = req.decode()?;
                    check_pid(r.pid)?;
                    let sponsors = req.state.add_sponsor(r.pid);
                    req.reply(&RegisterSponsorAck { sponsors }).await
                }
                _ => Err(unknown_message(&req.frame)),
            }
        })
    }
}
