//! GET/PUT workloads against sparkd (Shader cache, through `spark-client`) and Redis (GET/SET through the
//! `redis` crate), with the same keys, values, client counts and pipeline depths.
//!
//! At depth 1 each side uses its client's ordinary call (`shader().get/put`, `GET`/`SET` commands). At
//! depth > 1 both send prebuilt batches (`Client::pipeline` of ready frames, a ready `redis::Pipeline`), so
//! neither pays for building requests inside the timed loop.

use anyhow::{Result, bail};
use bytes::{BufMut, Bytes, BytesMut};
use spark_client::Client;
use spark_client::spark_proto::cache::{
    Get, GetResponse, GetStatus, Put, PutResponse, ShaderKey, WireKey,
};
use spark_client::spark_proto::{Frame, Message, service};

use crate::procs::{Redis, Sparkd};
use crate::stats::{Rep, run_clients};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Put => "PUT",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub op: Op,
    pub size: usize,
    pub clients: usize,
    pub depth: usize,
    /// Batches of `depth` requests each client sends.
    pub batches: usize,
}

/// The key namespace of a shape: GETs read a populated set, PUTs overwrite their own set.
fn namespace(op: Op, size: usize) -> u64 {
    let kind = match op {
        Op::Get => 1u64,
        Op::Put => 2,
    };
    (kind << 56) | ((size as u64) << 8)
}

/// How many distinct keys a shape cycles over: enough to not be one hot key, few enough that the values
/// stay within the daemon's memory budget (32 MiB values are never held in memory by design).
pub fn keyspace(op: Op, size: usize) -> usize {
    let base = match size {
        s if s <= 8 * 1024 => 4096,
        s if s <= 1 << 20 => 128,
        _ => 8,
    };
    match op {
        Op::Get => base / 2,
        Op::Put => base,
    }
}

pub fn key(ns: u64, i: usize) -> ShaderKey {
    ShaderKey {
        source_hash: ns + i as u64,
        target: 1,
        stage: 0,
    }
}

/// The same 10 bytes sparkd stores, used as the Redis key.
pub fn key_bytes(k: &ShaderKey) -> Vec<u8> {
    let mut b = BytesMut::new();
    k.encode_key(&mut b);
    b.to_vec()
}

/// A value whose bytes differ per key (nothing gets to deduplicate or compress).
pub fn value(size: usize, seed: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while b.len() + 8 <= size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.put_u64_le(x);
    }
    while b.len() < size {
        b.put_u8(x as u8);
    }
    b.freeze()
}

/// Window `b` of client `ci`: the first key index of a batch. Windows are aligned to `depth` so both
/// systems can prebuild one batch per window.
fn window(ks: usize, depth: usize, clients: usize, ci: usize, b: usize) -> usize {
    let windows = (ks / depth).max(1);
    ((ci * windows / clients + b) % windows) * depth
}

/// Puts every GET key of `size` into sparkd.
pub fn sparkd_populate(d: &Sparkd, size: usize) -> Result<()> {
    let ns = namespace(Op::Get, size);
    let c = d.client()?;
    for i in 0..keyspace(Op::Get, size) {
        if !c.shader().put(&key(ns, i), &value(size, ns + i as u64))? {
            bail!("sparkd did not keep a {size}-byte value");
        }
    }
    Ok(())
}

pub fn redis_populate(r: &Redis, size: usize) -> Result<()> {
    let ns = namespace(Op::Get, size);
    let mut c = r.connect()?;
    for i in 0..keyspace(Op::Get, size) {
        redis::cmd("SET")
            .arg(key_bytes(&key(ns, i)))
            .arg(&value(size, ns + i as u64)[..])
            .query::<()>(&mut c)?;
    }
    Ok(())
}

pub fn sparkd_run(d: &Sparkd, s: Shape) -> Result<Rep> {
    let ns = namespace(s.op, s.size);
    let ks = keyspace(s.op, s.size);
    let keys: Vec<ShaderKey> = (0..ks).map(|i| key(ns, i)).collect();
    let connect = |_| d.client();
    let size = s.size;
    if s.depth == 1 {
        return match s.op {
            Op::Get => run_clients(s.clients, s.batches, connect, |c: &mut Client, ci, b| {
                let k = &keys[window(ks, 1, s.clients, ci, b)];
                match c.shader().get(k)? {
                    Some(v) if v.len() == size => Ok((1, size as u64)),
                    other => bail!(
                        "sparkd GET: expected {size} bytes, got {:?}",
                        other.map(|v| v.len())
                    ),
                }
            }),
            Op::Put => {
                let vals: Vec<Bytes> = (0..ks).map(|i| value(size, ns + i as u64)).collect();
                run_clients(s.clients, s.batches, connect, |c: &mut Client, ci, b| {
                    let i = window(ks, 1, s.clients, ci, b);
                    if !c.shader().put(&keys[i], &vals[i])? {
                        bail!("sparkd did not keep a {size}-byte value");
                    }
                    Ok((1, size as u64))
                })
            }
        };
    }
    let frames: Vec<Frame> = match s.op {
        Op::Get => keys
            .iter()
            .map(|k| Get { key: *k }.to_frame(service::SHADER))
            .collect::<Result<_, _>>()?,
        Op::Put => keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Put {
                    key: *k,
                    data: value(size, ns + i as u64),
                }
                .to_frame(service::SHADER)
            })
            .collect::<Result<_, _>>()?,
    };
    let op = s.op;
    run_clients(s.clients, s.batches, connect, |c: &mut Client, ci, b| {
        let w = window(ks, s.depth, s.clients, ci, b);
        let replies = c.pipeline(&frames[w..w + s.depth])?;
        for r in replies {
            let f = r?;
            match op {
                Op::Get => match GetResponse::decode(&f.payload)?.status {
                    GetStatus::Inline(v) if v.len() == size => {}
                    other => bail!(
                        "sparkd pipelined GET: unexpected {:?}",
                        std::mem::discriminant(&other)
                    ),
                },
                Op::Put => {
                    if !PutResponse::decode(&f.payload)?.stored {
                        bail!("sparkd did not keep a {size}-byte value");
                    }
                }
            }
        }
        Ok((s.depth as u64, (s.depth * size) as u64))
    })
}

pub fn redis_run(r: &Redis, s: Shape) -> Result<Rep> {
    let ns = namespace(s.op, s.size);
    let ks = keyspace(s.op, s.size);
    let keys: Vec<Vec<u8>> = (0..ks).map(|i| key_bytes(&key(ns, i))).collect();
    let connect = |_| r.connect();
    let size = s.size;
    if s.depth == 1 {
        return match s.op {
            Op::Get => run_clients(
                s.clients,
                s.batches,
                connect,
                |c: &mut redis::Connection, ci, b| {
                    let k = &keys[window(ks, 1, s.clients, ci, b)];
                    let v: Option<Vec<u8>> = redis::cmd("GET").arg(&k[..]).query(c)?;
                    match v {
                        Some(v) if v.len() == size => Ok((1, size as u64)),
                        other => bail!(
                            "redis GET: expected {size} bytes, got {:?}",
                            other.map(|v| v.len())
                        ),
                    }
                },
            ),
            Op::Put => {
                let vals: Vec<Bytes> = (0..ks).map(|i| value(size, ns + i as u64)).collect();
                run_clients(
                    s.clients,
                    s.batches,
                    connect,
                    |c: &mut redis::Connection, ci, b| {
                        let i = window(ks, 1, s.clients, ci, b);
                        redis::cmd("SET")
                            .arg(&keys[i][..])
                            .arg(&vals[i][..])
                            .query::<()>(c)?;
                        Ok((1, size as u64))
                    },
                )
            }
        };
    }
    let windows = (ks / s.depth).max(1);
    let pipes: Vec<redis::Pipeline> = (0..windows)
        .map(|w| {
            let mut p = redis::pipe();
            for (i, k) in keys.iter().enumerate().skip(w * s.depth).take(s.depth) {
                match s.op {
                    Op::Get => p.cmd("GET").arg(&k[..]),
                    Op::Put => p
                        .cmd("SET")
                        .arg(&k[..])
                        .arg(&value(size, ns + i as u64)[..]),
                };
            }
            p
        })
        .collect();
    let op = s.op;
    run_clients(
        s.clients,
        s.batches,
        connect,
        |c: &mut redis::Connection, ci, b| {
            let w = window(ks, s.depth, s.clients, ci, b) / s.depth;
            match op {
                Op::Get => {
                    let vs: Vec<Option<Vec<u8>>> = pipes[w].query(c)?;
                    if vs.len() != s.depth
                        || vs.iter().any(|v| v.as_ref().map(Vec::len) != Some(size))
                    {
                        bail!("redis pipelined GET: wrong replies");
                    }
                }
                Op::Put => pipes[w].query::<()>(c)?,
            }
            Ok((s.depth as u64, (s.depth * size) as u64))
        },
    )
}

/// GET of `size`-byte values through [`spark_client::CacheClient::get_into`], each client reusing one
/// buffer: what a consumer streaming large blobs into a staging buffer does, and the like-for-like
/// comparison with the floor (whose reader also reuses its buffer).
pub fn sparkd_get_into(d: &Sparkd, size: usize, clients: usize, batches: usize) -> Result<Rep> {
    let ns = namespace(Op::Get, size);
    let ks = keyspace(Op::Get, size);
    let keys: Vec<ShaderKey> = (0..ks).map(|i| key(ns, i)).collect();
    run_clients(
        clients,
        batches,
        |_| Ok((d.client()?, Vec::new())),
        |(c, buf): &mut (Client, Vec<u8>), ci, b| {
            let k = &keys[window(ks, 1, clients, ci, b)];
            match c.shader().get_into(k, buf)? {
                Some(n) if n == size => Ok((1, size as u64)),
                other => bail!("sparkd GET into a buffer: expected {size} bytes, got {other:?}"),
            }
        },
    )
}

/// Fills the memory tier of both caches (Shader and Asset) past their budgets with `size`-byte blobs:
/// `per_cache` puts each, pipelined `depth` deep from two clients per cache. Returns the puts made.
pub fn sparkd_fill(d: &Sparkd, size: usize, per_cache: usize, depth: usize) -> Result<u64> {
    use spark_client::AssetKey;
    const NS: u64 = 4 << 56;
    let frame = |cache: usize, i: usize| -> Result<Frame> {
        let data = value(size, NS + (cache * per_cache + i) as u64);
        Ok(if cache == 0 {
            Put {
                key: key(NS, i),
                data,
            }
            .to_frame(service::SHADER)?
        } else {
            Put {
                key: AssetKey {
                    path: format!("fill/{i}"),
                    platform: 1,
                },
                data,
            }
            .to_frame(service::ASSET)?
        })
    };
    std::thread::scope(|s| -> Result<u64> {
        let hs: Vec<_> = (0..4usize)
            .map(|w| {
                s.spawn(move || -> Result<u64> {
                    let (cache, half) = (w / 2, w % 2);
                    let c = d.client()?;
                    let mut i = half * depth;
                    let mut n = 0u64;
                    while i < per_cache {
                        let frames = (i..(i + depth).min(per_cache))
                            .map(|j| frame(cache, j))
                            .collect::<Result<Vec<_>>>()?;
                        for r in c.pipeline(&frames)? {
                            if !PutResponse::decode(&r?.payload)?.stored {
                                bail!("sparkd did not keep a {size}-byte value");
                            }
                            n += 1;
                        }
                        i += 2 * depth;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut total = 0;
        for h in hs {
            total += h
                .join()
                .map_err(|_| anyhow::anyhow!("fill client panicked"))??;
        }
        Ok(total)
    })
}
