//! The Windows transport: a named pipe (`\\.\pipe\spark-<SID>-sparkd` by default) that only this user may
//! open, owned through a `LockFileEx` lock, with several instances always waiting so that bursts of connects
//! find one, and a peer check that compares the client process's user SID with the daemon's.
//!
//! All Win32 calls (security descriptor, SIDs, locks) are in `spark_platform::windows`; this file has no
//! `unsafe`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use spark_platform::windows as win;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{Accepted, Listener};
use crate::registry::Peer;

/// Instances waiting for a client at any moment. Each connect takes one and its task creates the next, so
/// a burst of this many connects never sees `ERROR_PIPE_BUSY`; clients retry on it anyway.
const PENDING_INSTANCES: usize = 8;

/// The pipe path, the daemon user's SID and the lock that makes this daemon the pipe's only owner.
pub struct PipeOwnership {
    pub path: PathBuf,
    sid: String,
    _lock: File,
}

/// Why this daemon cannot own the pipe.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(
        "another sparkd already serves {path} (lock {lock} is held); not starting a second one"
    )]
    AlreadyRunning { path: PathBuf, lock: PathBuf },
    #[error(
        "pipe {0} already exists and belongs to another process (FILE_FLAG_FIRST_PIPE_INSTANCE refused); \
         another sparkd is running, or something is squatting the name: stop it or pass --socket"
    )]
    Squatted(PathBuf),
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

/// Takes `<LOCALAPPDATA>\Spark\run\<pipe>.lock`. The lock, not the pipe, decides which of two starting
/// daemons wins, exactly as on Unix; the pipe's first-instance flag then guards against a non-sparkd
/// process holding the name.
pub fn take_socket(path: &Path, _is_default: bool) -> Result<PipeOwnership, OwnershipError> {
    if !spark_platform::is_pipe_path(path) {
        return Err(anyhow::anyhow!(
            "on Windows --socket takes a named pipe path such as \\\\.\\pipe\\NAME, not {}",
            path.display()
        )
        .into());
    }
    let sid = win::current_user_sid().context("cannot read this process's user SID")?;
    let lad = spark_platform::local_app_data()
        .context("LOCALAPPDATA is not set; it holds the daemon's lock file")?;
    let lock_path = spark_platform::pipe_side_file(&lad, path, ".lock");
    if let Some(dir) = lock_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open lock file {}", lock_path.display()))?;
    match win::try_lock_exclusive(&lock) {
        Ok(true) => {}
        Ok(false) => {
            return Err(OwnershipError::AlreadyRunning {
                path: path.to_owned(),
                lock: lock_path,
            });
        }
        Err(e) => return Err(anyhow::anyhow!("cannot lock {}: {e}", lock_path.display()).into()),
    }
    Ok(PipeOwnership {
        path: path.to_owned(),
        sid,
        _lock: lock,
    })
}

/// A named pipe this daemon owns: tasks keeping instances pending, and the channel they hand connected
/// instances through.
pub struct PipeTransport {
    ownership: PipeOwnership,
    connected: mpsc::Receiver<io::Result<NamedPipeServer>>,
    waiters: Vec<JoinHandle<()>>,
}

impl PipeTransport {
    /// Creates the first instance with `FILE_FLAG_FIRST_PIPE_INSTANCE` (fails if any process already has
    /// the name) and the owner-only descriptor, then starts the waiters. Must run inside the runtime.
    pub fn bind(ownership: PipeOwnership) -> Result<PipeTransport, OwnershipError> {
        let first = create(&ownership, true).map_err(|e| {
            if e.kind() == io::ErrorKind::PermissionDenied {
                OwnershipError::Squatted(ownership.path.clone())
            } else {
                anyhow::Error::new(e)
                    .context(format!("cannot create pipe {}", ownership.path.display()))
                    .into()
            }
        })?;
        let (tx, connected) = mpsc::channel(PENDING_INSTANCES);
        let mut waiters = Vec::with_capacity(PENDING_INSTANCES);
        let mut first = Some(first);
        for _ in 0..PENDING_INSTANCES {
            let path = ownership.path.clone();
            let sid = ownership.sid.clone();
            let tx = tx.clone();
            let initial = first.take();
            waiters.push(tokio::spawn(keep_pending(path, sid, initial, tx)));
        }
        info!(pipe = %ownership.path.display(), sid = %ownership.sid, "named pipe ready");
        Ok(PipeTransport {
            ownership,
            connected,
            waiters,
        })
    }
}

fn create(o: &PipeOwnership, first: bool) -> io::Result<NamedPipeServer> {
    create_instance(&o.path, &o.sid, first)
}

fn create_instance(path: &Path, sid: &str, first: bool) -> io::Result<NamedPipeServer> {
    let sd = win::OwnerOnly::new(sid)?;
    let mut opts = ServerOptions::new();
    opts.first_pipe_instance(first).reject_remote_clients(true);
    win::create_pipe(&opts, path, &sd)
}

/// One pending instance at a time, forever: wait for a client, hand the connected instance over, create
/// the next. A failed create is reported (the accept loop logs it and backs off) and retried after a pause.
async fn keep_pending(
    path: PathBuf,
    sid: String,
    mut next: Option<NamedPipeServer>,
    tx: mpsc::Sender<io::Result<NamedPipeServer>>,
) {
    loop {
        let server = match next.take() {
            Some(s) => s,
            None => match create_instance(&path, &sid, false) {
                Ok(s) => s,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match server.connect().await {
            Ok(()) => {
                if tx.send(Ok(server)).await.is_err() {
                    return;
                }
            }
            // A client that went away between its open and our connect: nothing to serve, and no reason
            // to make the accept loop back off. The instance is dropped and a new one created.
            Err(e) => debug!("a pipe client left before it was accepted: {e}"),
        }
    }
}

impl Listener for PipeTransport {
    type Read = ReadHalf<NamedPipeServer>;
    type Write = WriteHalf<NamedPipeServer>;

    async fn accept(&mut self) -> io::Result<Accepted<Self::Read, Self::Write>> {
        let server = match self.connected.recv().await {
            Some(r) => r?,
            None => return Err(io::ErrorKind::NotConnected.into()),
        };
        let (peer, refused) = check_peer(&server, &self.ownership.sid);
        let (read, write) = tokio::io::split(server);
        Ok(Accepted {
            read,
            write,
            peer,
            refused,
        })
    }

    /// Every error here comes from creating one instance (out of handles or memory): the other instances
    /// keep serving, so none is fatal.
    fn is_transient(&self, _e: &io::Error) -> bool {
        true
    }

    fn describe(&self) -> String {
        self.ownership.path.display().to_string()
    }

    /// Drops every pending instance: once the connected ones close, the name is gone and clients get
    /// "not found" (daemon not running) at once.
    fn close(&mut self) {
        for w in self.waiters.drain(..) {
            w.abort();
        }
        self.connected.close();
    }
}

/// Only the daemon's own user may talk to it, whatever the pipe's descriptor says: the client process's
/// token SID must equal ours. A client whose identity cannot be read is refused.
fn check_peer(server: &NamedPipeServer, sid: &str) -> (Peer, Option<String>) {
    let pid = match win::pipe_client_pid(server) {
        Ok(p) => p,
        Err(e) => {
            return (
                Peer::default(),
                Some(format!("cannot read the pipe client's process id: {e}")),
            );
        }
    };
    let peer = Peer {
        pid: Some(pid),
        uid: None,
    };
    match win::process_user_sid(pid) {
        Ok(s) if s == sid => (peer, None),
        Ok(s) => (
            peer,
            Some(format!(
                "peer process {pid} runs as {s}, not as this daemon's user {sid}; each user runs their own sparkd"
            )),
        ),
        Err(e) => {
            warn!("cannot read the user of pipe client {pid}: {e}");
            (
                peer,
                Some(format!("cannot read the user of client process {pid}: {e}")),
            )
        }
    }
}
