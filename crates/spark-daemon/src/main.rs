use std::process::ExitCode;

use spark_daemon::config::layers::{self, ResolveError};
use spark_daemon::{Config, RunError};

fn main() -> ExitCode {
    let resolved = match layers::resolve(std::env::args_os().collect()) {
        Ok(r) => r,
        Err(ResolveError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("sparkd: {e}");
            return ExitCode::from(2);
        }
    };
    let args = &resolved.args;
    init_logging(args.log_level.as_deref());
    let config = match Config::from_args(args).and_then(|c| c.with_file(resolved.file.as_ref())) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::from(1);
        }
    };
    if args.print_config {
        print!("{}", resolved.report(&config));
        return ExitCode::SUCCESS;
    }
    match spark_daemon::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ RunError::AlreadyRunning(_)) => {
            eprintln!("sparkd: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            tracing::error!("sparkd stopped: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--log-level`, else `RUST_LOG`, else `info`; to stderr.
fn init_logging(flag: Option<&str>) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let spec = flag
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let filter: Targets = spec.parse().unwrap_or_else(|e| {
        eprintln!("sparkd: ignoring log level '{spec}' ({e}); using info");
        Targets::new().with_default(tracing::Level::INFO)
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .with(filter)
        .init();
}
