//! The floor: what a bare AF_UNIX socket does on this machine, with servers that do nothing but echo or
//! send a ready buffer. No framing, no parsing, no allocation per message.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use crate::stats::{Rep, run_clients};

/// A server thread on a temporary socket that accepts exactly `clients` connections and serves each on
/// its own thread until the client hangs up.
struct Server {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(clients: usize, serve: impl Fn(UnixStream) + Send + Sync + 'static) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("spark-bench-floor")
            .tempdir()?;
        let path = dir.path().join("floor.sock");
        let listener = UnixListener::bind(&path).context("bind the floor socket")?;
        let serve = Arc::new(serve);
        let acceptor = std::thread::spawn(move || {
            for _ in 0..clients {
                let Ok((s, _)) = listener.accept() else {
                    return;
                };
                let serve = serve.clone();
                std::thread::spawn(move || serve(s));
            }
        });
        Ok(Server {
            path,
            _dir: dir,
            acceptor: Some(acceptor),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

/// Round trip of `msg_len` bytes through an echo server, one client, `batches` times.
pub fn echo_rtt(msg_len: usize, batches: usize) -> Result<Rep> {
    let server = Server::start(1, |mut s| {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })?;
    let msg = vec![7u8; msg_len];
    run_clients(
        1,
        batches,
        |_| {
            let s = UnixStream::connect(&server.path)?;
            Ok((s, vec![0u8; msg_len]))
        },
        |(s, back), _, _| {
            s.write_all(&msg)?;
            s.read_exact(back)?;
            Ok((1, 0))
        },
    )
}

/// Bandwidth of a `size`-byte message sent by a server from a ready buffer on a one-byte request, read by
/// the client into a ready buffer: two kernel copies and nothing else.
pub fn bulk(size: usize, clients: usize, batches: usize) -> Result<Rep> {
    let blob = Arc::new(vec![0x5au8; size]);
    let server = Server::start(clients, move |mut s| {
        let mut req = [0u8; 1];
        while s.read_exact(&mut req).is_ok() {
            if s.write_all(&blob).is_err() {
                return;
            }
        }
    })?;
    run_clients(
        clients,
        batches,
        |_| {
            let s = UnixStream::connect(&server.path)?;
            Ok((s, vec![0u8; size]))
        },
        |(s, buf), _, _| {
            s.write_all(&[1])?;
            s.read_exact(buf)?;
            if buf[size - 1] != 0x5a {
                bail!("floor server sent wrong bytes");
            }
            Ok((1, size as u64))
        },
    )
}
