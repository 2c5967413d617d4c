//! `sparkctl`: talk to a running sparkd.
//!
//! Exit status: 0 success; 1 the daemon answered with an error; 2 the daemon is not reachable; 3 a cache
//! miss (get, exists); 4 a local error (a file could not be read or written); 64 bad usage.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use spark_client::spark_proto::service;
use spark_client::{AssetKey, CacheStats, Client, ClientOptions, Error, ShaderKey};

#[derive(Parser)]
#[command(name = "sparkctl", version, about = "Talk to a running sparkd")]
struct Cli {
    /// Daemon socket [default: $XDG_RUNTIME_DIR/spark/sparkd.sock, else /tmp/spark-$UID/sparkd.sock]
    #[arg(long, global = true, value_name = "PATH", env = "SPARK_DAEMON_SOCKET")]
    socket: Option<PathBuf>,
    /// Print machine-readable JSON
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check the daemon answers; prints the round-trip time
    Ping {
        /// Number of pings (the median is reported)
        #[arg(short, long, default_value_t = 1)]
        count: u32,
    },
    /// Daemon and protocol version
    Version,
    /// Daemon and per-cache statistics
    Stats,
    /// Ask the daemon to finish in-flight requests and exit
    Shutdown,
    /// The compiled-shader cache
    #[command(subcommand)]
    Shader(ShaderCmd),
    /// The asset-variant cache
    #[command(subcommand)]
    Asset(AssetCmd),
}

#[derive(clap::Args, Clone)]
struct ShaderKeyArgs {
    /// Source hash, 64-bit hex (e.g. 0123456789abcdef)
    hash: String,
    /// Target byte (0-255)
    target: u8,
    /// Stage byte (0-255)
    stage: u8,
}

#[derive(Subcommand)]
enum ShaderCmd {
    /// Fetch a blob to stdout or a file (exit 3 on a miss)
    Get {
        #[command(flatten)]
        key: ShaderKeyArgs,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Store a blob from a file or stdin (`-` or nothing)
    Put {
        #[command(flatten)]
        key: ShaderKeyArgs,
        file: Option<PathBuf>,
    },
    /// Whether a blob is cached (exit 3 if not)
    Exists {
        #[command(flatten)]
        key: ShaderKeyArgs,
    },
    /// Cache statistics
    Stats,
    /// Remove every shader blob
    Clear,
}

#[derive(Subcommand)]
enum AssetCmd {
    /// Fetch a variant to stdout or a file (exit 3 on a miss)
    Get {
        path: String,
        platform: u8,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Store a variant from a file or stdin (`-` or nothing)
    Put {
        path: String,
        platform: u8,
        file: Option<PathBuf>,
    },
    /// Whether a variant is cached (exit 3 if not)
    Exists { path: String, platform: u8 },
    /// Drop every platform variant of a path
    Invalidate { path: String },
    /// Cache statistics
    Stats,
    /// Remove every asset variant
    Clear,
}

/// How a command ended, mapped to the exit status.
enum Failure {
    Daemon(String),
    Unreachable(String),
    Miss,
    Local(String),
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
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Miss) => {
            if cli.json {
                println!("{}", json!({"found": false}));
            } else {
                eprintln!("sparkctl: not in the cache");
            }
            ExitCode::from(3)
        }
        Err(Failure::Daemon(m)) => {
            eprintln!("sparkctl: {m}");
            ExitCode::from(1)
        }
        Err(Failure::Unreachable(m)) => {
            eprintln!("sparkctl: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Local(m)) => {
            eprintln!("sparkctl: {m}");
            ExitCode::from(4)
        }
    }
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
        Cmd::Ping { count } => ping(&client, cli.json, (*count).max(1)),
        Cmd::Version => {
            let v = client.version()?;
            if cli.json {
                println!(
                    "{}",
                    json!({"daemon_version": v.daemon_version, "protocol_version": v.protocol_version,
                        "daemon_pid": client.hello().daemon_pid})
                );
            } else {
                println!(
                    "sparkd {} (protocol {}, pid {})",
                    v.daemon_version,
                    v.protocol_version,
                    client.hello().daemon_pid
                );
            }
            Ok(())
        }
        Cmd::Stats => stats(&client, cli.json),
        Cmd::Shutdown => {
            client.shutdown()?;
            if cli.json {
                println!("{}", json!({"shutdown": true}));
            } else {
                println!("sparkd is shutting down");
            }
            Ok(())
        }
        Cmd::Shader(c) => shader(&client, c, cli.json),
        Cmd::Asset(c) => asset(&client, c, cli.json),
    }
}

fn ping(client: &Client, json_out: bool, count: u32) -> Result<(), Failure> {
    let mut times = Vec::with_capacity(count as usize);
    for _ in 0..count {
        times.push(client.ping()?);
    }
    times.sort();
    let median = times[times.len() / 2];
    let us = median.as_secs_f64() * 1e6;
    if json_out {
        println!(
            "{}",
            json!({"rtt_us": us, "count": count, "daemon_pid": client.hello().daemon_pid})
        );
    } else if count == 1 {
        println!(
            "pong from sparkd {} (pid {}) in {us:.0} µs",
            client.hello().daemon_version,
            client.hello().daemon_pid
        );
    } else {
        println!(
            "{count} pings to sparkd (pid {}): median {us:.0} µs",
            client.hello().daemon_pid
        );
    }
    Ok(())
}

fn cache_json(s: &CacheStats) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in CacheStats::FIELDS.iter().zip(s.values()) {
        m.insert((*k).to_string(), json!(v));
    }
    Value::Object(m)
}

fn print_cache_table(name: &str, s: &CacheStats) {
    let mb = human_bytes;
    let budget = |b: u64| {
        if b == 0 {
            "unbounded".to_string()
        } else {
            mb(b)
        }
    };
    let lookups = s.hits + s.misses;
    let rate = if lookups > 0 {
        format!(" ({:.1}% hit rate)", 100.0 * s.hits as f64 / lookups as f64)
    } else {
        String::new()
    };
    println!("{name} cache");
    println!(
        "  entries          {} ({} in memory)",
        s.entries, s.entries_in_memory
    );
    println!("  hits / misses    {} / {}{rate}", s.hits, s.misses);
    println!("  puts             {}", s.puts);
    println!(
        "  memory           {} of {}",
        mb(s.bytes_in_memory),
        budget(s.memory_budget)
    );
    println!(
        "  disk             {} of {}",
        mb(s.bytes_on_disk),
        budget(s.disk_budget)
    );
    println!("  evictions        {}", s.evictions);
    println!("  corrupt dropped  {}", s.corrupt_dropped);
}

fn stats(client: &Client, json_out: bool) -> Result<(), Failure> {
    let d = client.stats()?;
    let shader = d
        .services
        .contains(&service::SHADER)
        .then(|| client.shader().stats())
        .transpose()?;
    let asset = d
        .services
        .contains(&service::ASSET)
        .then(|| client.asset().stats())
        .transpose()?;
    if json_out {
        let mut v = json!({
            "daemon": {"uptime_secs": d.uptime_secs, "protocol_version": d.protocol_version,
                "services": d.services, "current_connections": d.current_connections,
                "total_connections": d.total_connections, "daemon_version": client.hello().daemon_version,
                "pid": client.hello().daemon_pid}
        });
        if let Some(s) = &shader {
            v["shader"] = cache_json(s);
        }
        if let Some(s) = &asset {
            v["asset"] = cache_json(s);
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let names: Vec<String> = d
        .services
        .iter()
        .map(|s| format!("{} (0x{s:04x})", service::name(*s)))
        .collect();
    println!(
        "sparkd {} (pid {}, protocol {})",
        client.hello().daemon_version,
        client.hello().daemon_pid,
        d.protocol_version
    );
    println!("  uptime           {}", human_duration(d.uptime_secs));
    println!(
        "  connections      {} open, {} since start",
        d.current_connections, d.total_connections
    );
    println!("  services         {}", names.join(", "));
    if let Some(s) = &shader {
        print_cache_table("shader", s);
    }
    if let Some(s) = &asset {
        print_cache_table("asset", s);
    }
    Ok(())
}

/// Bytes in the largest unit that keeps a whole number in front: 512 B, 4.0 KiB, 1.5 GiB.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn shader_key(k: &ShaderKeyArgs) -> Result<ShaderKey, Failure> {
    let hex = k.hash.trim_start_matches("0x");
    let source_hash = u64::from_str_radix(hex, 16).map_err(|_| {
        Failure::Local(format!(
            "'{}' is not a 64-bit hex hash (up to 16 hex digits)",
            k.hash
        ))
    })?;
    Ok(ShaderKey {
        source_hash,
        target: k.target,
        stage: k.stage,
    })
}

/// Writes a fetched blob to FILE (through a temp file, so a failed fetch leaves nothing) or stdout.
fn fetch(
    output: &Option<PathBuf>,
    json_out: bool,
    get: impl FnOnce(&mut dyn Write) -> Result<Option<u64>, Error>,
) -> Result<(), Failure> {
    match output {
        Some(path) => {
            let tmp = path.with_extension("sparkctl-partial");
            let mut f = std::fs::File::create(&tmp)
                .map_err(|e| Failure::Local(format!("cannot create {}: {e}", tmp.display())))?;
            let r = get(&mut f);
            match r {
                Ok(Some(n)) => {
                    drop(f);
                    std::fs::rename(&tmp, path).map_err(|e| {
                        Failure::Local(format!("cannot write {}: {e}", path.display()))
                    })?;
                    if json_out {
                        println!("{}", json!({"found": true, "bytes": n, "output": path}));
                    } else {
                        eprintln!("wrote {n} bytes to {}", path.display());
                    }
                    Ok(())
                }
                Ok(None) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(Failure::Miss)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e.into())
                }
            }
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            match get(&mut lock)? {
                Some(_) => lock
                    .flush()
                    .map_err(|e| Failure::Local(format!("cannot write to stdout: {e}"))),
                None => Err(Failure::Miss),
            }
        }
    }
}

/// Reads the blob to store: streams a file, or reads stdin whole.
fn store(
    file: &Option<PathBuf>,
    put_stream: impl FnOnce(&mut dyn Read, u64) -> Result<bool, Error>,
) -> Result<(bool, u64), Failure> {
    match file.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            let mut f = std::fs::File::open(p)
                .map_err(|e| Failure::Local(format!("cannot open {}: {e}", p.display())))?;
            let len = f
                .metadata()
                .map_err(|e| Failure::Local(format!("cannot stat {}: {e}", p.display())))?
                .len();
            Ok((put_stream(&mut f, len)?, len))
        }
        _ => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Local(format!("cannot read stdin: {e}")))?;
            let len = buf.len() as u64;
            Ok((put_stream(&mut &buf[..], len)?, len))
        }
    }
}

fn report_put(json_out: bool, stored: bool, len: u64) {
    if json_out {
        println!("{}", json!({"stored": stored, "bytes": len}));
    } else if stored {
        eprintln!("stored {len} bytes");
    } else {
        eprintln!("not stored: {len} bytes is more than the cache's budget allows");
    }
}

fn report_exists(json_out: bool, size: Option<u64>) -> Result<(), Failure> {
    match size {
        Some(n) => {
            if json_out {
                println!("{}", json!({"found": true, "bytes": n}));
            } else {
                println!("cached ({n} bytes)");
            }
            Ok(())
        }
        None => Err(Failure::Miss),
    }
}

fn report_cache_stats(name: &str, s: &CacheStats, json_out: bool) {
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&cache_json(s)).unwrap_or_default()
        );
    } else {
        print_cache_table(name, s);
    }
}

fn report_cleared(json_out: bool, n: u64) {
    if json_out {
        println!("{}", json!({"removed": n}));
    } else {
        println!("removed {n} entries");
    }
}

fn shader(client: &Client, c: &ShaderCmd, json_out: bool) -> Result<(), Failure> {
    let cache = client.shader();
    match c {
        ShaderCmd::Get { key, output } => {
            let k = shader_key(key)?;
            fetch(output, json_out, |w| {
                cache.get_to_writer(&k, &mut WriteRef(w))
            })
        }
        ShaderCmd::Put { key, file } => {
            let k = shader_key(key)?;
            let (stored, len) = store(file, |r, len| {
                cache.put_from_reader(&k, &mut ReadRef(r), len)
            })?;
            report_put(json_out, stored, len);
            Ok(())
        }
        ShaderCmd::Exists { key } => report_exists(json_out, cache.exists(&shader_key(key)?)?),
        ShaderCmd::Stats => {
            report_cache_stats("shader", &cache.stats()?, json_out);
            Ok(())
        }
        ShaderCmd::Clear => {
            report_cleared(json_out, cache.clear()?);
            Ok(())
        }
    }
}

fn asset(client: &Client, c: &AssetCmd, json_out: bool) -> Result<(), Failure> {
    let cache = client.asset();
    let key = |path: &str, platform: u8| AssetKey {
        path: path.to_string(),
        platform,
    };
    match c {
        AssetCmd::Get {
            path,
            platform,
            output,
        } => {
            let k = key(path, *platform);
            fetch(output, json_out, |w| {
                cache.get_to_writer(&k, &mut WriteRef(w))
            })
        }
        AssetCmd::Put {
            path,
            platform,
            file,
        } => {
            let k = key(path, *platform);
            let (stored, len) = store(file, |r, len| {
                cache.put_from_reader(&k, &mut ReadRef(r), len)
            })?;
            report_put(json_out, stored, len);
            Ok(())
        }
        AssetCmd::Exists { path, platform } => {
            report_exists(json_out, cache.exists(&key(path, *platform))?)
        }
        AssetCmd::Invalidate { path } => {
            let n = cache.invalidate(path)?;
            if json_out {
                println!("{}", json!({"dropped": n}));
            } else {
                println!("dropped {n} variant(s) of {path}");
            }
            Ok(())
        }
        AssetCmd::Stats => {
            report_cache_stats("asset", &cache.stats()?, json_out);
            Ok(())
        }
        AssetCmd::Clear => {
            report_cleared(json_out, cache.clear()?);
            Ok(())
        }
    }
}

/// Adapters from trait objects to the generic reader/writer parameters of the client.
struct WriteRef<'a>(&'a mut dyn Write);
impl Write for WriteRef<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
struct ReadRef<'a>(&'a mut dyn Read);
impl Read for ReadRef<'_> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}
