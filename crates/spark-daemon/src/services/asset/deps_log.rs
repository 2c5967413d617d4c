//! The dependency log: declared dependencies survive a daemon restart.
//!
//! Without it a restarted daemon would still hold every variant but no longer know what each was built
//! from, so a source edited while the daemon was down (or after it came back) would leave a stale variant
//! in the cache under its `(path, platform)` key. With it, a restart re-watches every declared source and
//! drops each variant whose sources changed since they were declared: a source counts as unchanged when its
//! [`Fingerprint`] (size, mtime, ctime, inode) is identical, the same test git uses for its index. An
//! editor's safe-save (write a temp file, rename it over) changes the inode and the ctime, so it is caught
//! even when size and mtime happen to match.
//!
//! File `<asset cache dir>/deps.log` (docs/storage.md, "Dependency log"), all integers little-endian:
//!
//! ```text
//! file    = "SPKDEP01" | record*
//! record  = u32 N | body[N] | u64 XXH3-64(body)
//! body    = u8 kind (1 declare, 2 forget) | u8 platform | u16 P | path[P]
//!           | declare only: u16 S | source*S
//! source  = u16 L | file path[L] (UTF-8) | u8 present | u64 size | i64 mtime_ns | i64 ctime_ns | u64 inode
//! ```
//!
//! Records are appended (declare: replaces the variant's sources; forget: it has none). Replay keeps the
//! last record per variant and stops at the first record whose length or checksum does not verify: a torn
//! tail loses at most the declarations written last, whose variants are then dropped rather than trusted
//! (see [`Replayed::torn`]). After replay the log is rewritten with the live declarations only (temp file,
//! rename), which also keeps it from growing without bound.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use super::deps::Variant;

const MAGIC: &[u8; 8] = b"SPKDEP01";
const DECLARE: u8 = 1;
const FORGET: u8 = 2;
/// A record body larger than this is damage, not a declaration (a variant has at most a few thousand sources).
const MAX_BODY: u32 = 16 << 20;

/// What a source file looked like when its variant was declared. `present: false` = it did not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub present: bool,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
}

impl Fingerprint {
    /// Reads `path`'s fingerprint now (blocking: call off the runtime). A file that cannot be read is absent.
    pub fn of(path: &Path) -> Fingerprint {
        match fs::metadata(path) {
            Ok(m) => from_metadata(&m),
            Err(_) => Fingerprint::default(),
        }
    }
}

#[cfg(unix)]
fn from_metadata(m: &fs::Metadata) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    Fingerprint {
        present: true,
        size: m.size(),
        mtime_ns: m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
        ctime_ns: m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
        inode: m.ino(),
    }
}

#[cfg(not(unix))]
fn from_metadata(m: &fs::Metadata) -> Fingerprint {
    let ns = |t: io::Result<std::time::SystemTime>| {
        t.ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64)
    };
    Fingerprint {
        present: true,
        size: m.len(),
        mtime_ns: ns(m.modified()),
        ctime_ns: ns(m.created()),
        inode: 0,
    }
}

/// A variant's declared sources with their fingerprints.
pub type Sources = Vec<(PathBuf, Fingerprint)>;

/// The log's contents after replay.
#[derive(Debug, Default)]
pub struct Replayed {
    pub live: HashMap<Variant, Sources>,
    /// The log ended in a record that did not verify. Variants are only ever added to `live` from whole
    /// records, so nothing torn is trusted; the caller logs it.
    pub torn: bool,
}

/// The open log, appended to as variants are declared and forgotten.
pub struct DepsLog {
    path: PathBuf,
    file: File,
}

impl DepsLog {
    /// Opens (or creates) the log in `dir`, replays it and rewrites it compacted. Blocking.
    pub fn open(dir: &Path) -> io::Result<(DepsLog, Replayed)> {
        let path = dir.join("deps.log");
        let replayed = match fs::read(&path) {
            Ok(bytes) => replay(&bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Replayed::default(),
            Err(e) => return Err(e),
        };
        let log = DepsLog::rewrite(&path, &replayed.live)?;
        Ok((log, replayed))
    }

    /// Writes `live` as a fresh log beside `path` and renames it over: a crash leaves the old or the new one.
    fn rewrite(path: &Path, live: &HashMap<Variant, Sources>) -> io::Result<DepsLog> {
        let tmp = path.with_extension("log.tmp");
        let mut out = Vec::from(&MAGIC[..]);
        for (v, sources) in live {
            out.extend_from_slice(&record(v, Some(sources)));
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_data()?;
        }
        fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok(DepsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Replaces the live declarations with `live` (after a restart dropped some).
    pub fn reset(&mut self, live: &HashMap<Variant, Sources>) -> io::Result<()> {
        *self = DepsLog::rewrite(&self.path, live)?;
        Ok(())
    }

    /// Appends a declaration. One `write` per record, so a crash tears at most this record.
    pub fn declare(&mut self, v: &Variant, sources: &Sources) -> io::Result<()> {
        self.file.write_all(&record(v, Some(sources)))
    }

    pub fn forget(&mut self, v: &Variant) -> io::Result<()> {
        self.file.write_all(&record(v, None))
    }
}

fn record(v: &Variant, sources: Option<&Sources>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    body.push(if sources.is_some() { DECLARE } else { FORGET });
    body.push(v.1);
    put_str(&mut body, v.0.as_bytes());
    if let Some(sources) = sources {
        body.extend_from_slice(&(sources.len() as u16).to_le_bytes());
        for (p, fp) in sources {
            put_str(&mut body, p.to_string_lossy().as_bytes());
            body.push(fp.present as u8);
            body.extend_from_slice(&fp.size.to_le_bytes());
            body.extend_from_slice(&fp.mtime_ns.to_le_bytes());
            body.extend_from_slice(&fp.ctime_ns.to_le_bytes());
            body.extend_from_slice(&fp.inode.to_le_bytes());
        }
    }
    let mut rec = Vec::with_capacity(body.len() + 12);
    rec.extend_from_slice(&(body.len() as u32).to_le_bytes());
    rec.extend_from_slice(&body);
    rec.extend_from_slice(&xxh3_64(&body).to_le_bytes());
    rec
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    // Asset paths are at most MAX_ASSET_PATH and file paths at most PATH_MAX, both under 64 KiB.
    let s = &s[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

/// Replays a log's bytes. A wrong magic reads as an empty, torn log: the variants are then dropped.
pub fn replay(bytes: &[u8]) -> Replayed {
    let mut out = Replayed::default();
    let Some(mut rest) = bytes.strip_prefix(&MAGIC[..]) else {
        out.torn = !bytes.is_empty();
        return out;
    };
    while !rest.is_empty() {
        let Some((body, after)) = next_record(rest) else {
            out.torn = true;
            break;
        };
        match parse_body(body) {
            Ok((v, Some(sources))) => {
                out.live.insert(v, sources);
            }
            Ok((v, None)) => {
                out.live.remove(&v);
            }
            Err(_) => {
                out.torn = true;
                break;
            }
        }
        rest = after;
    }
    out
}

/// The next record's verified body and what follows it, or `None` when it is torn or damaged.
fn next_record(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?);
    if n > MAX_BODY {
        return None;
    }
    let body = buf.get(4..4 + n as usize)?;
    let sum = u64::from_le_bytes(buf.get(4 + n as usize..12 + n as usize)?.try_into().ok()?);
    (xxh3_64(body) == sum).then(|| (body, &buf[12 + n as usize..]))
}

fn parse_body(mut body: &[u8]) -> io::Result<(Variant, Option<Sources>)> {
    let kind = read_u8(&mut body)?;
    let platform = read_u8(&mut body)?;
    let path = String::from_utf8(read_str(&mut body)?).map_err(invalid)?;
    let v = (path, platform);
    match kind {
        FORGET => Ok((v, None)),
        DECLARE => {
            let n = u16::from_le_bytes(read_n::<2>(&mut body)?);
            let mut sources = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let p = String::from_utf8(read_str(&mut body)?).map_err(invalid)?;
                let fp = Fingerprint {
                    present: read_u8(&mut body)? != 0,
                    size: u64::from_le_bytes(read_n(&mut body)?),
                    mtime_ns: i64::from_le_bytes(read_n(&mut body)?),
                    ctime_ns: i64::from_le_bytes(read_n(&mut body)?),
                    inode: u64::from_le_bytes(read_n(&mut body)?),
                };
                sources.push((PathBuf::from(p), fp));
            }
            Ok((v, Some(sources)))
        }
        k => Err(invalid(format!("unknown record kind {k}"))),
    }
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn read_n<const N: usize>(b: &mut &[u8]) -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    b.read_exact(&mut out)?;
    Ok(out)
}

fn read_u8(b: &mut &[u8]) -> io::Result<u8> {
    Ok(read_n::<1>(b)?[0])
}

fn read_str(b: &mut &[u8]) -> io::Result<Vec<u8>> {
    let n = u16::from_le_bytes(read_n::<2>(b)?) as usize;
    let s = b
        .get(..n)
        .ok_or_else(|| invalid("truncated string"))?
        .to_vec();
    *b = &b[n..];
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(size: u64) -> Fingerprint {
        Fingerprint {
            present: true,
            size,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: -5,
            inode: 42,
        }
    }

    #[test]
    fn the_last_record_per_variant_wins_and_a_forget_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let a: Variant = ("textures/rock".into(), 1);
        let b: Variant = ("textures/rock".into(), 2);
        {
            let (mut log, r) = DepsLog::open(dir.path()).unwrap();
            assert!(r.live.is_empty() && !r.torn);
            log.declare(&a, &vec![("/src/a.png".into(), fp(1))])
                .unwrap();
            log.declare(&b, &vec![("/src/b.png".into(), fp(2))])
                .unwrap();
            log.declare(&a, &vec![("/src/a2.png".into(), fp(3))])
                .unwrap();
            log.forget(&b).unwrap();
        }
        let (_, r) = DepsLog::open(dir.path()).unwrap();
        assert!(!r.torn);
        assert_eq!(r.live.len(), 1);
        assert_eq!(r.live[&a], vec![(PathBuf::from("/src/a2.png"), fp(3))]);
        // The reopen compacted it: one record left.
        let (_, again) = DepsLog::open(dir.path()).unwrap();
        assert_eq!(again.live, r.live);
    }

    #[test]
    fn a_torn_or_damaged_tail_keeps_only_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let a: Variant = ("a".into(), 0);
        let b: Variant = ("b".into(), 0);
        {
            let (mut log, _) = DepsLog::open(dir.path()).unwrap();
            log.declare(&a, &vec![("/s/a".into(), fp(1))]).unwrap();
            log.declare(&b, &vec![("/s/b".into(), fp(2))]).unwrap();
        }
        let path = dir.path().join("deps.log");
        let whole = fs::read(&path).unwrap();
        for cut in 1..30 {
            let r = replay(&whole[..whole.len() - cut]);
            assert!(r.torn, "cut {cut}");
            assert_eq!(r.live.keys().collect::<Vec<_>>(), vec![&a], "cut {cut}");
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 20;
        flipped[last] ^= 0x40;
        let r = replay(&flipped);
        assert!(r.torn);
        assert_eq!(r.live.len(), 1);
        let r = replay(b"NOTADEPS");
        assert!(r.torn && r.live.is_empty());
    }

    #[test]
    fn fingerprints_see_a_rename_over_with_the_same_size() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("rock.png");
        fs::write(&f, b"v1").unwrap();
        let before = Fingerprint::of(&f);
        assert!(before.present);
        let tmp = dir.path().join("rock.png.tmp");
        fs::write(&tmp, b"v2").unwrap();
        fs::rename(&tmp, &f).unwrap();
        assert_ne!(Fingerprint::of(&f), before);
        assert!(!Fingerprint::of(&dir.path().join("gone")).present);
    }
}
