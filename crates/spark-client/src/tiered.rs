//! The engine's tiered shader cache (the original's `ShaderDiskCache` with its optional daemon): a local
//! directory of compiled shaders, with the daemon in front of it when one is attached and reachable.
//!
//! - lookup: the daemon first; a miss, an undecodable blob or a transport error falls through to the
//!   local disk. A local hit is pushed to the daemon so other engine instances find it there.
//! - store: local disk first (its error is the caller's), then the daemon, best-effort.
//!
//! With no daemon attached (or none reachable) it is exactly the plain [`LocalShaderCache`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::error::Error;
use crate::lifecycle::DaemonConnection;
use spark_proto::cache::ShaderKey;

/// The first bytes of every encoded [`CompiledShader`].
pub const SHADER_CODEC_MAGIC: [u8; 4] = *b"SPSH";
/// The codec version this build writes and the only one it reads.
pub const SHADER_CODEC_VERSION: u16 = 1;

/// Counts from shader reflection, kept so a cache hit needs no re-reflection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShaderReflection {
    pub uniform_count: u32,
    pub texture_count: u32,
    pub sampler_count: u32,
    pub storage_buffer_count: u32,
}

/// A compiler's whole result for one shader, as the engine needs it back on a hit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledShader {
    pub bytecode: Vec<u8>,
    pub entry_point: String,
    /// Compiler errors; empty when it compiled.
    pub errors: String,
    pub warnings: String,
    pub reflection: ShaderReflection,
}

/// Why bytes are not a [`CompiledShader`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("not an encoded shader (bad magic)")]
    BadMagic,
    #[error(
        "shader codec version {0} is not supported (this build reads version {SHADER_CODEC_VERSION})"
    )]
    UnsupportedVersion(u16),
    #[error("encoded shader is truncated")]
    Truncated,
    #[error("encoded shader has trailing bytes")]
    TrailingBytes,
    #[error("encoded shader has a string that is not UTF-8")]
    InvalidUtf8,
    #[error("shader field of {0} bytes is too large for the codec")]
    TooLarge(usize),
}

impl CompiledShader {
    /// The versioned codec (version 1; layout in docs/engine.md): magic `SPSH`, `u16` version, four `u32`
    /// counters, then entry point, errors, warnings and bytecode, each a `u32` length and its bytes. All
    /// integers little-endian.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let fields: [&[u8]; 4] = [
            self.entry_point.as_bytes(),
            self.errors.as_bytes(),
            self.warnings.as_bytes(),
            &self.bytecode,
        ];
        let mut out = Vec::with_capacity(22 + fields.iter().map(|f| 4 + f.len()).sum::<usize>());
        out.extend_from_slice(&SHADER_CODEC_MAGIC);
        out.extend_from_slice(&SHADER_CODEC_VERSION.to_le_bytes());
        let r = &self.reflection;
        for n in [
            r.uniform_count,
            r.texture_count,
            r.sampler_count,
            r.storage_buffer_count,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        for f in fields {
            let n = u32::try_from(f.len()).map_err(|_| CodecError::TooLarge(f.len()))?;
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(f);
        }
        Ok(out)
    }

    /// Parses [`Self::encode`]'s output. The version is checked before anything else is read, so a blob
    /// from a newer engine is rejected rather than misread.
    pub fn decode(b: &[u8]) -> Result<Self, CodecError> {
        let mut r = Cursor(b);
        if r.take(4).map_err(|_| CodecError::BadMagic)? != SHADER_CODEC_MAGIC {
            return Err(CodecError::BadMagic);
        }
        let version = u16::from_le_bytes(r.array()?);
        if version != SHADER_CODEC_VERSION {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let reflection = ShaderReflection {
            uniform_count: r.u32()?,
            texture_count: r.u32()?,
            sampler_count: r.u32()?,
            storage_buffer_count: r.u32()?,
        };
        let entry_point = r.string()?;
        let errors = r.string()?;
        let warnings = r.string()?;
        let bytecode = r.bytes()?.to_vec();
        if !r.0.is_empty() {
            return Err(CodecError::TrailingBytes);
        }
        Ok(CompiledShader {
            bytecode,
            entry_point,
            errors,
            warnings,
            reflection,
        })
    }
}

struct Cursor<'a>(&'a [u8]);
impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated);
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, CodecError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| CodecError::InvalidUtf8)
    }
}

/// A plain on-disk shader cache: one file per key, written atomically (temporary file, then rename), in
/// the [`CompiledShader`] codec.
#[derive(Debug, Clone)]
pub struct LocalShaderCache {
    dir: PathBuf,
}

impl LocalShaderCache {
    /// Uses `dir`, creating it if missing.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(LocalShaderCache { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/<16 hex source hash>_<3 digit target>_<3 digit stage>.spsh`.
    pub fn path_for(&self, key: &ShaderKey) -> PathBuf {
        self.dir.join(format!(
            "{:016x}_{:03}_{:03}.spsh",
            key.source_hash, key.target, key.stage
        ))
    }

    /// The shader under `key`; `None` when absent, unreadable or undecodable (a later store replaces it).
    pub fn load(&self, key: &ShaderKey) -> Option<CompiledShader> {
        let path = self.path_for(key);
        let bytes = std::fs::read(&path).ok()?;
        match CompiledShader::decode(&bytes) {
            Ok(s) => Some(s),
            Err(e) => {
                debug!("ignoring {}: {e}", path.display());
                None
            }
        }
    }

    /// Writes the shader under `key`. Readers see the old file or the new one, never a torn one.
    pub fn store(&self, key: &ShaderKey, shader: &CompiledShader) -> std::io::Result<()> {
        let bytes = shader.encode().map_err(std::io::Error::other)?;
        self.store_encoded(key, &bytes)
    }

    fn store_encoded(&self, key: &ShaderKey, bytes: &[u8]) -> std::io::Result<()> {
        write_atomically(&self.path_for(key), bytes)
    }
}

/// Writes `bytes` to `path` through a temporary file in its directory and a rename: readers see the old
/// file or the new one, never a torn one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(bytes)?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp.0);
    })
}

/// A uniquely named temporary file in `dir` (pid and a counter keep concurrent writers apart).
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    static N: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Counters of a [`TieredShaderCache`]. Every lookup ends as exactly one of `daemon_hits`, `local_hits`
/// or `misses`; `daemon_misses` and `daemon_errors` count the lookups the daemon was asked and could not
/// answer (a miss, or an undecodable reply or broken connection).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TieredStats {
    pub daemon_hits: u64,
    pub daemon_misses: u64,
    pub daemon_errors: u64,
    pub local_hits: u64,
    pub misses: u64,
}

#[derive(Debug, Default)]
struct Counters {
    daemon_hits: AtomicU64,
    daemon_misses: AtomicU64,
    daemon_errors: AtomicU64,
    local_hits: AtomicU64,
    misses: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The local disk cache with an optional daemon in front. `Send + Sync`.
#[derive(Debug)]
pub struct TieredShaderCache {
    local: LocalShaderCache,
    /// Read under the lock, used after releasing it: a daemon round trip never blocks another thread's
    /// local I/O or its own attach/detach.
    daemon: Mutex<Option<Arc<DaemonConnection>>>,
    counters: Counters,
}

impl TieredShaderCache {
    /// A cache over `local` with no daemon.
    pub fn new(local: LocalShaderCache) -> Self {
        TieredShaderCache {
            local,
            daemon: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    /// Opens `dir` as the local tier; no daemon yet.
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        Ok(Self::new(LocalShaderCache::open(dir)?))
    }

    /// Attaches `daemon` (often [`DaemonConnection::global`]).
    pub fn with_daemon(self, daemon: Arc<DaemonConnection>) -> Self {
        self.set_daemon(Some(daemon));
        self
    }

    /// Attaches or (with `None`) detaches the daemon. Engines detach before shutting the connection down.
    pub fn set_daemon(&self, daemon: Option<Arc<DaemonConnection>>) {
        *self.daemon.lock().unwrap_or_else(|e| e.into_inner()) = daemon;
    }

    pub(crate) fn daemon_connection(&self) -> Option<Arc<DaemonConnection>> {
        self.daemon()
    }

    fn daemon(&self) -> Option<Arc<DaemonConnection>> {
        self.daemon
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn local(&self) -> &LocalShaderCache {
        &self.local
    }

    /// The shader under `key` from the daemon, else the local disk; `None` on a miss in both.
    pub fn lookup(&self, key: &ShaderKey) -> Option<CompiledShader> {
        let daemon = self.daemon();
        if let Some(d) = &daemon {
            match d.call(|c| c.shader().get(key)) {
                Ok(Some(bytes)) => match CompiledShader::decode(&bytes) {
                    Ok(s) => {
                        bump(&self.counters.daemon_hits);
                        return Some(s);
                    }
                    Err(e) => {
                        debug!(
                            "daemon shader {key:?} is undecodable ({e}); trying the local cache"
                        );
                        bump(&self.counters.daemon_errors);
                    }
                },
                Ok(None) => bump(&self.counters.daemon_misses),
                // Not connected and not due for a retry: the daemon was not asked.
                Err(Error::NotRunning { .. }) => {}
                Err(e) => {
                    debug!("daemon lookup of {key:?} failed ({e}); trying the local cache");
                    bump(&self.counters.daemon_errors);
                }
            }
        }
        match self.local.load(key) {
            Some(s) => {
                bump(&self.counters.local_hits);
                if let Some(d) = &daemon
                    && let Ok(bytes) = s.encode()
                {
                    d.call_or_miss(|c| c.shader().put(key, &bytes));
                }
                Some(s)
            }
            None => {
                bump(&self.counters.misses);
                None
            }
        }
    }

    /// Stores `shader` on local disk, then in the daemon (best-effort). Only the local write's failure is
    /// reported.
    pub fn store(&self, key: &ShaderKey, shader: &CompiledShader) -> std::io::Result<()> {
        let bytes = shader.encode().map_err(std::io::Error::other)?;
        let local = self.local.store_encoded(key, &bytes);
        if let Some(d) = self.daemon() {
            d.call_or_miss(|c| c.shader().put(key, &bytes));
        }
        local
    }

    pub fn stats(&self) -> TieredStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TieredStats {
            daemon_hits: l(&c.daemon_hits),
            daemon_misses: l(&c.daemon_misses),
            daemon_errors: l(&c.daemon_errors),
            local_hits: l(&c.local_hits),
            misses: l(&c.misses),
        }
    }
}
