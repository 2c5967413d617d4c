//! Helpers shared by the daemon-level reliability tests. Each test binary uses a different subset.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use spark_client::spark_proto::{Frame, FrameHeader, HEADER_LEN};
use spark_client::{AssetKey, Client, ShaderKey};

/// A small deterministic PRNG (xorshift64*), so failures reproduce from the printed seed.
#[derive(Clone)]
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A seed from the environment (`SPARK_TEST_SEED`) or the clock, printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("SPARK_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {s} (replay with SPARK_TEST_SEED={s})");
    s
}

/// Raises this process's soft fd limit to its hard limit (children inherit it), and returns the new limit.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        l.current = l.maximum;
        let _ = setrlimit(Resource::Nofile, l);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

pub fn raw_connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Reads one frame; `Ok(None)` on a clean EOF before any byte of it.
pub fn read_frame(s: &mut UnixStream) -> std::io::Result<Option<Frame>> {
    let mut h = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = s.read(&mut h[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got += n;
    }
    let h = FrameHeader::decode(&h)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut p = vec![0u8; h.len as usize];
    s.read_exact(&mut p)?;
    Ok(Some(Frame {
        service: h.service,
        msg_type: h.msg_type,
        payload: Bytes::from(p),
    }))
}

pub fn write_frame(s: &mut UnixStream, f: &Frame) -> std::io::Result<()> {
    s.write_all(&f.to_bytes())
}

/// Test keys: even ids live in the Shader cache, odd ones in the Asset cache.
pub fn is_asset(k: u64) -> bool {
    k % 2 == 1
}

pub fn shader_key(k: u64) -> ShaderKey {
    ShaderKey {
        source_hash: k,
        target: 7,
        stage: 1,
    }
}

pub fn asset_path(k: u64) -> String {
    format!("reliability/{k}/variant.bin")
}

pub fn asset_key(k: u64) -> AssetKey {
    AssetKey {
        path: asset_path(k),
        platform: (k % 5) as u8,
    }
}

pub fn put(c: &Client, k: u64, data: &[u8]) -> spark_client::Result<bool> {
    if is_asset(k) {
        c.asset().put(&asset_key(k), data)
    } else {
        c.shader().put(&shader_key(k), data)
    }
}

pub fn get(c: &Client, k: u64) -> spark_client::Result<Option<Bytes>> {
    if is_asset(k) {
        c.asset().get(&asset_key(k))
    } else {
        c.shader().get(&shader_key(k))
    }
}

/// Shader and asset `corrupt_dropped`, summed.
pub fn corrupt_dropped(c: &Client) -> u64 {
    c.shader().stats().unwrap().corrupt_dropped + c.asset().stats().unwrap().corrupt_dropped
}

/// Every file below `dir`, recursively (symlinks listed, not followed).
pub fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_below(&p)),
            _ => out.push(p),
        }
    }
    out.sort();
    out
}

/// The p-th percentile (0..=100) of durations, in microseconds.
pub fn percentile_us(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[i].as_secs_f64() * 1e6
}

/// Whether `p` lies in a cache's `tmp/` directory below `root` (the test's own temp dir may be under /tmp).
pub fn in_tmp_dir(p: &Path, root: &Path) -> bool {
    p.strip_prefix(root)
        .is_ok_and(|rel| rel.components().any(|c| c.as_os_str() == "tmp"))
}
