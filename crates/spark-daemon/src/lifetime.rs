//! When the daemon exits on its own: `--idle-timeout` and `--exit-with-sponsors`.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::state::ServerState;

/// Checks the lifetime rules every 100 ms until shutdown.
pub fn spawn_monitor(state: &Arc<ServerState>, config: &Config) {
    let idle = config.idle_timeout;
    let sponsors = config.exit_with_sponsors;
    if idle.is_none() && !sponsors {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = state.shutting_down() => return,
            }
            if let Some(why) = reason_to_exit(&state, idle, sponsors) {
                state.request_shutdown(&why);
                return;
            }
        }
    });
}

fn reason_to_exit(state: &ServerState, idle: Option<Duration>, sponsors: bool) -> Option<String> {
    let no_clients = state.open_connections() == 0;
    if let (Some(idle), true) = (idle, no_clients)
        && state.idle_for() >= idle
    {
        return Some(format!(
            "no client for {}s (--idle-timeout)",
            idle.as_secs()
        ));
    }
    if sponsors && state.had_sponsor() && state.live_sponsors() == 0 && no_clients {
        return Some("every sponsor process has exited (--exit-with-sponsors)".into());
    }
    None
}
