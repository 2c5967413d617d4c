//! Cross-process single-flight imports: the key of an imported variant, and the claims that make one process
//! import while every other process asking for the same variant waits for its result.
//!
//! The key is content-addressed: BLAKE3 over the source file's content, the importer's id and version, the
//! platform and every dependency's path and content (never an mtime), so identical inputs share one variant and
//! a changed input can never find a stale one.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use spark_proto::ErrorCode;
use spark_proto::cache::ImportClaim;
use tokio::sync::Notify;

use super::deps::Variant;
use crate::registry::HandlerError;

/// Version of the key derivation: part of every key, bumped if the derivation changes.
const KEY_DOMAIN: &[u8] = b"spark-import-key-v1";

fn hash_file(path: &str) -> Result<blake3::Hash, HandlerError> {
    let mut f = std::fs::File::open(Path::new(path))
        .map_err(|e| HandlerError::reply(ErrorCode::Io, format!("cannot read {path}: {e}")))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| HandlerError::reply(ErrorCode::Io, format!("cannot read {path}: {e}")))?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

fn field(h: &mut blake3::Hasher, b: &[u8]) {
    h.update(&(b.len() as u64).to_le_bytes());
    h.update(b);
}

/// The asset path of an import's variant: `import/<64 hex of the BLAKE3 key>`. Reads every file: blocking.
pub fn variant_path(c: &ImportClaim) -> Result<String, HandlerError> {
    let mut h = blake3::Hasher::new();
    field(&mut h, KEY_DOMAIN);
    field(&mut h, c.importer_id.as_bytes());
    h.update(&c.importer_version.to_le_bytes());
    h.update(&[c.platform]);
    h.update(hash_file(&c.source)?.as_bytes());
    let mut deps: Vec<&String> = c.deps.iter().collect();
    deps.sort();
    deps.dedup();
    h.update(&(deps.len() as u64).to_le_bytes());
    for d in deps {
        // A dependency is identified by its path and its content: moving an include changes the result.
        field(&mut h, d.as_bytes());
        h.update(hash_file(d)?.as_bytes());
    }
    Ok(format!("import/{}", h.finalize().to_hex()))
}

struct Claim {
    conn: u64,
    /// The source and its dependencies, declared when the import is done.
    sources: Vec<String>,
    done: Arc<Notify>,
}

/// Who imports which variant right now.
#[derive(Default)]
pub struct Claims {
    claims: Mutex<HashMap<Variant, Claim>>,
}

/// What a claim attempt found.
pub enum Attempt {
    /// The caller owns the import.
    Owner,
    /// Another connection owns it: wait on this, then look again.
    Wait(Arc<Notify>),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Claims {
    pub fn try_claim(&self, v: &Variant, conn: u64, sources: Vec<String>) -> Attempt {
        let mut claims = lock(&self.claims);
        match claims.get(v) {
            None => {
                claims.insert(
                    v.clone(),
                    Claim {
                        conn,
                        sources,
                        done: Arc::new(Notify::new()),
                    },
                );
                Attempt::Owner
            }
            Some(c) if c.conn == conn => Attempt::Owner,
            Some(c) => Attempt::Wait(c.done.clone()),
        }
    }

    /// Whether `done` is still the live claim's (a waiter re-checks after arming its wait).
    pub fn still_claimed(&self, v: &Variant, done: &Arc<Notify>) -> bool {
        lock(&self.claims)
            .get(v)
            .is_some_and(|c| Arc::ptr_eq(&c.done, done))
    }

    /// Ends `conn`'s claim of `v`, waking its waiters; returns the claim's sources.
    pub fn release(&self, v: &Variant, conn: u64) -> Option<Vec<String>> {
        let mut claims = lock(&self.claims);
        if claims.get(v).is_none_or(|c| c.conn != conn) {
            return None;
        }
        let c = claims.remove(v)?;
        c.done.notify_waiters();
        Some(c.sources)
    }

    /// Ends every claim of a connection that went away: its waiters look again, and one of them imports.
    pub fn release_conn(&self, conn: u64) {
        lock(&self.claims).retain(|_, c| {
            if c.conn == conn {
                c.done.notify_waiters();
                false
            } else {
                true
            }
        });
    }
}
