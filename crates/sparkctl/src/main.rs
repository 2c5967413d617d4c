//! `sparkctl`: talk to a running sparkd.
//!
//! Exit status: 0 success; 1 the daemon answered with an error (or sent something unintelligible); 2 the
//! daemon is not reachable; 3 a cache miss (get, exists); 4 a local error (a file, stdin or stdout could not
//! be read or written); 5 a compile error (or a compile that could not run); 64 bad usage.

/// `println!` for a command-line tool: when stdout is closed early (`sparkctl stats | head`), stop quietly with
/// status 0 instead of panicking, as other Unix tools do.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            $crate::output_failed(e);
        }
    }};
}

/// `print!`, likewise.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            $crate::output_failed(e);
        }
    }};
}

mod args;
mod cache;
mod collab;
mod compile;
mod control;
mod operator;
mod output;
mod top;
mod watch;

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use spark_client::{Client, ClientOptions, Error};

use args::{Cli, Cmd};

/// How a command ended, mapped to the exit status.
pub enum Failure {
    Daemon(String),
    Unreachable(String),
    Miss,
    Local(String),
    /// Diagnostics were printed already.
    CompileFailed,
    /// A bad argument found after parsing (a size that does not parse): exit 64.
    Usage(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::NotRunning { .. } | Error::Transport(_) => Failure::Unreachable(e.to_string()),
            Error::Daemon(_) | Error::Protocol(_) => Failure::Daemon(e.to_string()),
            Error::Local(_) => Failure::Local(e.to_string()),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let (code, msg) = match run(&cli) {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Miss) => {
            if cli.json {
                outln!("{}", json!({"found": false}));
                return ExitCode::from(3);
            }
            (3, "not in the cache".to_string())
        }
        Err(Failure::Daemon(m)) => (1, m),
        Err(Failure::Unreachable(m)) => (2, m),
        Err(Failure::Local(m)) => (4, m),
        Err(Failure::CompileFailed) => return ExitCode::from(5),
        Err(Failure::Usage(m)) => (64, m),
    };
    eprintln!("sparkctl: {msg}");
    ExitCode::from(code)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let socket = cli
        .socket
        .clone()
        .unwrap_or_else(spark_client::default_socket_path);
    let opts = ClientOptions {
        client_name: "sparkctl".into(),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&socket, &opts)?;
    match &cli.cmd {
        Cmd::Ping { count } => control::ping(&client, cli.json, (*count).max(1)),
        Cmd::Version => control::version(&client, cli.json),
        Cmd::Stats => control::stats(&client, cli.json),
        Cmd::Shutdown => control::shutdown(&client, cli.json),
        Cmd::Shader(c) => cache::shader(&client, c, cli.json),
        Cmd::Asset(c) => cache::asset(&client, c, cli.json),
        Cmd::Watch(w) => watch::run(&client, w, cli.json),
        Cmd::Compile(a) => compile::run(&client, a, cli.json),
        Cmd::CompileStats => compile::stats(&client, cli.json),
        Cmd::Collab(c) => collab::run(&client, c, cli.json),
        Cmd::Verify { namespace } => operator::verify(&client, namespace.as_deref(), cli.json),
        Cmd::Trim { namespace, to } => operator::trim(&client, namespace, to, cli.json),
        Cmd::Top {
            interval_ms,
            iterations,
        } => top::run(
            &client,
            std::time::Duration::from_millis((*interval_ms).max(50)),
            *iterations,
        ),
    }
}

/// Standard output failed: a closed pipe ends the program quietly; anything else is a local error (exit 4).
fn output_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("sparkctl: cannot write to standard output: {e}");
    std::process::exit(4);
}
