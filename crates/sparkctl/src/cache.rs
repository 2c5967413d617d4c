//! The shader and asset cache commands, and moving blobs between files and the daemon.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde_json::json;
use spark_client::spark_proto::service;
use spark_client::{AssetKey, CacheStats, Client, Error, ShaderKey};

use crate::Failure;
use crate::args::{AssetCmd, ShaderCmd, ShaderKeyArgs};
use crate::output::{counters_json, namespace_from_cache, namespace_table};

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
                        outln!("{}", json!({"found": true, "bytes": n, "output": path}));
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
        outln!("{}", json!({"stored": stored, "bytes": len}));
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
                outln!("{}", json!({"found": true, "bytes": n}));
            } else {
                outln!("cached ({n} bytes)");
            }
            Ok(())
        }
        None => Err(Failure::Miss),
    }
}

fn report_cache_stats(name: &str, service: u16, s: &CacheStats, json_out: bool) {
    if json_out {
        let v = counters_json(&namespace_from_cache(name, service, s).counters);
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        out!(
            "{}",
            namespace_table(&namespace_from_cache(name, service, s))
        );
    }
}

fn report_cleared(json_out: bool, n: u64) {
    if json_out {
        outln!("{}", json!({"removed": n}));
    } else {
        outln!("removed {n} entries");
    }
}

pub fn shader(client: &Client, c: &ShaderCmd, json_out: bool) -> Result<(), Failure> {
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
            report_cache_stats("shader", service::SHADER, &cache.stats()?, json_out);
            Ok(())
        }
        ShaderCmd::Clear => {
            report_cleared(json_out, cache.clear()?);
            Ok(())
        }
    }
}

pub fn asset(client: &Client, c: &AssetCmd, json_out: bool) -> Result<(), Failure> {
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
                outln!("{}", json!({"dropped": n}));
            } else {
                outln!("dropped {n} variant(s) of {path}");
            }
            Ok(())
        }
        AssetCmd::Stats => {
            report_cache_stats("asset", service::ASSET, &cache.stats()?, json_out);
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
